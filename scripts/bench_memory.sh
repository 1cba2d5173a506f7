#!/usr/bin/env bash
# `steptune estimate` against measurements: each configuration trains a few real steps in its own
# process (`steptune bench-train`, CPU) and its peak resident size during those steps (VmHWM,
# reset after loading) is put beside the plan's total, with the ratio measured / estimate.
#   scripts/bench_memory.sh                 # every configuration below
#   BENCH_CONFIGS="a-lora a-full" scripts/bench_memory.sh
#   BENCH_CONFIGS="c-lora+ckpt c-qlora+ckpt" scripts/bench_memory.sh   # Qwen3-0.6B, all 28 layers
# Environment: BENCH_BIN (target/release/steptune, else target/debug), BENCH_THREADS (2),
# BENCH_STEPS (2) timed steps after one warmup step.
#
# glibc's malloc raises its mmap threshold up to 32 MiB as large blocks are freed, and then keeps
# freed blocks below that in its heap: RSS then overstates live tensors by 10-20% (seen: 2416 vs
# 2107 MiB on a-lora). MALLOC_MMAP_THRESHOLD_=65536 fixes the threshold, so every tensor of 64 KiB
# or more is its own mapping and returns to the system when freed; the plan models live tensors.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BENCH_BIN:-}
[[ -n $bin ]] || for b in target/release/steptune target/debug/steptune; do [[ -x $b ]] && { bin=$b; break; }; done
[[ -x ${bin:-} ]] || { echo "bench_memory: build steptune first (cargo build --release)" >&2; exit 1; }
threads=${BENCH_THREADS:-2}; steps=${BENCH_STEPS:-2}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads MALLOC_MMAP_THRESHOLD_=65536
recipe=scripts/bench_memory.yaml
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_memory.XXXXXX"); trap 'rm -rf "$tmp"' EXIT

# Shape a: Qwen3-0.6B (hidden 1024, 16/8 heads, head_dim 128, intermediate 3072, vocab 151,936,
# tied), 4 of its 28 layers, sequence BENCH_SEQ_A (1024). Shape b: hidden 512, 8 layers, 8/4 heads, head_dim 64,
# intermediate 1536, vocab 32,000, untied, sequence 1024.
shape_a=(--set model.config.num_hidden_layers=4)
# Shape c: Qwen3-0.6B whole (28 layers), sequence 512; not in the default list (minutes a step).
shape_c=(--set model.config.num_hidden_layers=28)
shape_b=(--set model.config.hidden_size=512 --set model.config.intermediate_size=1536 --set model.config.num_hidden_layers=8
         --set model.config.num_attention_heads=8 --set model.config.num_key_value_heads=4 --set model.config.head_dim=64
         --set model.config.vocab_size=32000 --set model.config.tie_word_embeddings=false)
configs=${BENCH_CONFIGS:-"a-full a-full+ckpt a-lora a-lora+ckpt a-qlora a-qlora+ckpt b-lora b-qlora+ckpt b-full"}

data() { # rows of random ids, every label set
  python3 -c "
import json, random, sys
rng = random.Random(0)
for _ in range(int(sys.argv[2])):
    ids = [rng.randrange(10, 1000) for _ in range(int(sys.argv[1]))]
    print(json.dumps({'input_ids': ids, 'labels': ids}))" "$1" "$2"
}

printf '%-14s %-5s %5s %5s %12s %12s %8s %8s\n' config shape seq batch "estimate MiB" "measured MiB" ratio "s/step"
for c in $configs; do
  shape=${c%%-*}; rest=${c#*-}; method=${rest%+ckpt}
  ckpt=false; [[ $c == *+ckpt ]] && ckpt=true
  case $shape in
    a) args=("${shape_a[@]}"); seq=${BENCH_SEQ_A:-1024} ;;
    b) args=("${shape_b[@]}"); seq=1024 ;;
    c) args=("${shape_c[@]}"); seq=512 ;;
    *) echo "bench_memory: unknown shape in $c (a, b or c)" >&2; exit 1 ;;
  esac
  # bench-train runs no eval stage: plan its generation one prompt at a time, so the eval KV cache
  # (counted when it would exceed the training step) never stands in for the step's peak.
  args+=(--set finetune.method=$method --set training.gradient_checkpointing=$ckpt --set eval.batch_size=1)
  data "$seq" $((steps + 1)) >"$tmp/data.jsonl"
  est=$("$bin" estimate "$recipe" "${args[@]}" --seq "$seq" --batch 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_bytes"])')
  if "$bin" bench-train "$recipe" "${args[@]}" --prepared "$tmp/data.jsonl" --mode ordered --steps "$steps" --warmup-steps 1 >"$tmp/out" 2>"$tmp/err"; then
    python3 - "$c" "$shape" "$seq" "$est" "$tmp/out" <<'PY'
import json, sys
c, shape, seq, est, out = sys.argv[1:]
r = json.loads(open(out).read().strip().splitlines()[-1])
m = r["peak_rss_train_mib"]; e = int(est) / 2**20
print(f"{c:<14} {shape:<5} {seq:>5} {1:>5} {e:>12.1f} {m:>12.1f} {m / e:>8.3f} {r['seconds_per_step']:>8.1f}")
PY
  else
    echo "bench_memory: $c failed:" >&2; tail -n5 "$tmp/err" >&2
  fi
done
echo "estimate: steptune estimate total (runtime line included); measured: VmHWM of the training steps (after load);"
echo "fp32, batch 1, LoRA r 16 on all seven projections, loss_chunk_tokens 1024 (the default), $threads threads, MALLOC_MMAP_THRESHOLD_=65536"
