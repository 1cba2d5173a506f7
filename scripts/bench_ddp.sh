#!/usr/bin/env bash
# Benchmark: data parallelism on CPU, side by side in one run. The same global batch trained by
#   1 process × 1 thread (accumulation 2), 1 process × 2 threads (accumulation 2), and
#   2 processes × 1 thread each (accumulation 1, Gloo over 127.0.0.1, launched as torchrun does),
# for LoRA r 16 on the Qwen3-0.6B shape and for full fine-tuning (of fewer layers: 28 would need
# about 10 GB per process for weights, gradients and AdamW). Prints tokens/s, the share of step
# time spent in the gradient all-reduce, bytes all-reduced per step, the final losses (equal
# across configurations: the same global batch), and the ratios. steptune only; no Python stack.
#   scripts/bench_ddp.sh
# Environment:
#   BENCH_STEPS (4)          optimizer steps; the first is not timed
#   BENCH_BATCH (2)          per_device_train_batch_size
#   BENCH_FULL_LAYERS (4)    decoder layers of the full fine-tuning model
#   BENCH_METHODS            "lora full" (default) or one of them
#   BENCH_BIN                the steptune binary (default target/release/steptune, built first)
#   BENCH_KEEP=1 keeps the temp folder; BENCH_NO_BUILD=1 skips `cargo build --release`.
# The model: scripts/bench_qlora.yaml's Qwen3-0.6B shape (random weights made once by
# steptune), the real Qwen3 tokenizer from ../shared/models/qwen3-8b, data/procedures.jsonl
# prepared as the quickstart does (chat template, labels on the answer), fp32 (bf16 matmuls are
# emulated, and very slow, on CPUs without AVX512-BF16).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${BENCH_STEPS:-4}
batch=${BENCH_BATCH:-2}
full_layers=${BENCH_FULL_LAYERS:-4}
methods=${BENCH_METHODS:-"lora full"}
die() { echo "bench_ddp: $*" >&2; exit 1; }
tok=../shared/models/qwen3-8b
[[ -f $tok/tokenizer.json ]] || die "$tok/tokenizer.json is missing (../shared beside the checkout)"
bin=${BENCH_BIN:-$PWD/target/release/steptune}
[[ -n "${BENCH_BIN:-}" || "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q || die "cargo build failed"
[[ -x $bin ]] || die "$bin is missing (cargo build --release)"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench_ddp.XXXXXX")
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "bench_ddp: keeping $out" >&2; else trap 'rm -rf "$out"' EXIT; fi

# recipe DIR METHOD LAYERS SOURCE ACCUM: the benchmark recipe as a file in DIR.
recipe() {
  local dir=$1 method=$2 layers=$3 source=$4 accum=$5
  mkdir -p "$dir"
  local lora=""
  [[ $method == lora ]] && lora="  lora_r: 16
  lora_alpha: 32
  lora_dropout: 0.05
  lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
  cat >"$dir/r.yaml" <<EOF
name: bench-ddp
seed: 0
output_dir: $dir/run
model:
  source: $source
  architecture: qwen3
  tokenizer: $PWD/$tok
  config: {model_type: qwen3, hidden_size: 1024, intermediate_size: 3072, num_hidden_layers: $layers, num_attention_heads: 16, num_key_value_heads: 8, head_dim: 128, rms_norm_eps: 1.0e-6, rope_theta: 1000000.0, max_position_embeddings: 40960, tie_word_embeddings: true, initializer_range: 0.02}
finetune:
  method: $method
$lora
training:
  learning_rate: 2.0e-4
  max_steps: $steps
  per_device_train_batch_size: $batch
  gradient_accumulation_steps: $accum
  precision: fp32
  logging_steps: 1
  eval_strategy: 'no'
  save_strategy: 'no'
  device: cpu
  ddp_timeout: 600
data:
  files: [$PWD/data/procedures.jsonl]
  columns: {group: intent}
  limit: 40                 # the step-0 eval loss runs on ~10 held-out rows, not ~85
  max_length: 512
EOF
  echo "$dir/r.yaml"
}

# figures RUN: tokens/s, all-reduce share, bytes per step and final loss from metrics.jsonl
# (steps after the first).
figures() {
  python3 - "$1/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
timed = rows[1:] or rows
secs = sum(r["step_seconds"] for r in timed)
toks = sum(r["step_tokens"] for r in timed)
red = sum(r.get("allreduce_seconds", 0.0) for r in timed)
bytes_ = max((r.get("allreduce_bytes", 0) for r in timed), default=0)
print(f"{toks / secs:.1f} {red / secs:.4f} {bytes_} {rows[-1]['loss']:.6f} {secs / len(timed):.2f}")
EOF
}

run_single() { # run_single THREADS RECIPE
  OMP_NUM_THREADS=$1 "$bin" train "$2" >"$(dirname "$2")/log" 2>&1 || { cat "$(dirname "$2")/log" >&2; die "training failed ($2)"; }
}

run_two() { # run_two RECIPE: two ranks of one thread, as torchrun --nproc-per-node=2 starts them
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
      "$bin" train "$1" >"$(dirname "$1")/log$r" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$(dirname "$1")"/log* >&2; die "a rank failed ($1)"; }; done
}

printf '%-6s %-22s %10s %14s %16s %12s %8s\n' method config tokens/s allreduce-share bytes/step final-loss s/step
for method in $methods; do
  layers=28
  [[ $method == full ]] && layers=$full_layers
  # The first configuration draws the random base weights (outside its timed steps) and writes
  # them into its run folder; the others read that folder.
  base=$out/$method-1x1/run/base_model
  declare -A result=()
  for config in 1x1 1x2 2x1; do
    accum=2; [[ $config == 2x1 ]] && accum=1
    source=$base; [[ $config == 1x1 ]] && source=random
    r=$(recipe "$out/$method-$config" "$method" "$layers" "$source" "$accum")
    "$bin" prepare "$r" >/dev/null 2>&1 || die "prepare failed"
    case $config in
      1x1) run_single 1 "$r" ;;
      1x2) run_single 2 "$r" ;;
      2x1) run_two "$r" ;;
    esac
    result[$config]=$(figures "$out/$method-$config/run")
    read -r tps share bytes loss sps <<<"${result[$config]}"
    label=$([[ $config == 2x1 ]] && echo "2 processes x 1 thread" || echo "1 process x ${config#1x} thread(s)")
    printf '%-6s %-22s %10s %14s %16s %12s %8s\n' "$method" "$label" "$tps" "$share" "$bytes" "$loss" "$sps"
  done
  read -r t11 _ <<<"${result[1x1]}"
  read -r t12 _ <<<"${result[1x2]}"
  read -r t21 _ _ _ <<<"${result[2x1]}"
  python3 -c "import sys; m=sys.argv[1]; a,b,c=map(float,sys.argv[2:]); print(f'{m}: 2 processes x 1 thread vs 1 x 1: {c/a:.2f}x tokens/s; vs 1 x 2 threads: {c/b:.2f}x')" \
    "$method" "$t11" "$t12" "$t21"
  unset result
done
