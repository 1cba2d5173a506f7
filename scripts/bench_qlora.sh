#!/usr/bin/env bash
# Benchmark: QLoRA memory and step time on CPU, steptune vs transformers + peft + bitsandbytes,
# with and without gradient checkpointing, each configuration in its own process.
#   scripts/bench_qlora.sh
# Needs the reference venv (scripts/ref-env.sh). Environment:
#   BENCH_THREADS (2)   intra-op threads of every side
#   BENCH_STEPS (2)     timed optimizer steps, after BENCH_WARMUP (1) untimed ones
#   BENCH_LAYERS (28)   decoder layers (28 is Qwen3-0.6B; fewer when a step is too slow)
#   BENCH_SEQ (512)     tokens per row (batch 1)
#   BENCH_CONFIGS       which configurations, space-separated (default: all eight):
#                       steptune-qlora hf-qlora steptune-lora hf-lora, each also with +ckpt
#   BENCH_MAX_LOAD (2.5) wait (up to BENCH_LOAD_WAIT=600 s) before each run while the 1-minute
#                       load average is above this (a shared machine); 0 disables the wait
#   BENCH_KEEP=1 keeps the temp folder; BENCH_NO_BUILD=1 skips `cargo build`.
#
# The model: scripts/bench_qlora.yaml (the Qwen3-0.6B shape, random weights, LoRA r 16 alpha 32 on
# all seven projections, bf16 weights, NF4 with double quant and bf16 compute for QLoRA, AdamW
# 2e-4). transformers initialises it once (seed 0) and saves it in bf16 into a temp folder; every
# configuration loads that folder (QLoRA quantizes it as it loads), and trains on the same
# synthetic prepared file (random ids, every label set), in file order, batch 1.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${BENCH_THREADS:-2}
steps=${BENCH_STEPS:-2}
warmup=${BENCH_WARMUP:-1}
layers=${BENCH_LAYERS:-28}
seq=${BENCH_SEQ:-512}
configs=${BENCH_CONFIGS:-"steptune-qlora hf-qlora steptune-lora hf-lora steptune-qlora+ckpt hf-qlora+ckpt steptune-lora+ckpt hf-lora+ckpt"}
max_load=${BENCH_MAX_LOAD:-2.5}
load_wait=${BENCH_LOAD_WAIT:-600}
recipe=scripts/bench_qlora.yaml
die() { echo "bench_qlora: $*" >&2; exit 1; }
PY=$(scripts/ref-env.sh | tail -n1) || die "no reference venv (scripts/ref-env.sh failed)"
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q || die "cargo build failed"
[[ -x target/release/steptune ]] || die "target/release/steptune is missing (cargo build --release)"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench_qlora.XXXXXX")
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "bench_qlora: keeping $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

# The recipe both steptune configurations read: model.source -> the generated folder.
"$PY" - "$recipe" "$out/recipe.yaml" "$out/model" "$layers" <<'EOF' || die "cannot write the recipe"
import sys, yaml
src, dst, model, layers = sys.argv[1:]
r = yaml.safe_load(open(src))
r["model"]["config"]["num_hidden_layers"] = int(layers)
r["model"]["source"] = model
r["output_dir"] = model + "-run"
yaml.safe_dump(r, open(dst, "w"), sort_keys=False)
EOF
tok=../shared/models/qwen3-8b
[[ -f $tok/tokenizer.json ]] || tok=""
echo "bench_qlora: generating the random bf16 checkpoint ($layers layers) with transformers" >&2
"$PY" scripts/bench_hf.py make-qwen3 --recipe "$out/recipe.yaml" --out "$out/model" ${tok:+--tokenizer "$tok"} \
  || die "generating the checkpoint failed"
vocab=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$out/model/config.json")
"$PY" scripts/bench_hf.py make-data --out "$out/train.jsonl" --rows $((steps + warmup)) --length "$seq" --vocab "$vocab" \
  || die "writing the data failed"

wait_for_quiet() {
  [[ "$max_load" == 0 ]] && return 0
  local waited=0
  while awk -v m="$max_load" '{exit !($1 > m)}' /proc/loadavg; do
    if (( waited >= load_wait )); then
      echo "bench_qlora: WARNING: load average still $(cut -d' ' -f1 /proc/loadavg) after ${load_wait}s; timing anyway" >&2
      return 0
    fi
    (( waited == 0 )) && echo "bench_qlora: load average $(cut -d' ' -f1 /proc/loadavg) > $max_load; waiting" >&2
    sleep 10; waited=$((waited + 10))
  done
}

for c in $configs; do
  impl=${c%%-*}; rest=${c#*-}; method=${rest%+ckpt}
  ckpt=false; [[ $c == *+ckpt ]] && ckpt=true
  wait_for_quiet
  echo "bench_qlora: $c (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  case $impl in
    steptune)
      cmd=(target/release/steptune bench-train "$out/recipe.yaml" --prepared "$out/train.jsonl" --mode ordered
           --method "$method" --gradient-checkpointing "$ckpt" --steps "$steps" --warmup-steps "$warmup" --json) ;;
    hf)
      cmd=("$PY" scripts/bench_hf.py train --model-dir "$out/model" --prepared "$out/train.jsonl" --method "$method"
           --dtype bf16 --compute-dtype bf16 --lora-r 16 --lora-alpha 32 --lora-dropout 0.0 --batch-size 1
           --steps "$steps" --warmup-steps "$warmup" --threads "$threads" --lr 2e-4 --mode ordered)
      [[ $ckpt == true ]] && cmd+=(--gradient-checkpointing) ;;
    *) die "unknown configuration $c (steptune-... or hf-...)" ;;
  esac
  if "${cmd[@]}" >"$out/$c.out" 2>"$out/$c.err" \
      && tail -n1 "$out/$c.out" | "$PY" -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
    tail -n1 "$out/$c.out" >"$out/$c.json"
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("bench_qlora:   %.2f s/step, peak RSS %.0f MiB, loss %.4f" % (r["seconds_per_step"], r["peak_rss_mib"], r["final_loss"]))' "$out/$c.json" >&2
  else
    echo "bench_qlora: WARNING: $c failed or printed no JSON line; its stderr tail:" >&2
    { sed '/^[[:space:]]*$/d' "$out/$c.err" | tail -n8; tail -n3 "$out/$c.out"; } | sed 's/^/    /' >&2
  fi
done

shape="Qwen3-0.6B shape (hidden 1024, $layers of 28 layers, 16/8 heads, head_dim 128, intermediate 3072, vocab 151,936, tied)"
[[ $layers == 28 ]] || shape="$shape -- REDUCED to $layers layers"
files=(); for c in $configs; do files+=("$out/$c.json"); done
"$PY" scripts/bench_hf.py table --kind qlora --title "train, LoRA r 16 alpha 32 on 7 projections, $shape, random weights;
seq $seq, batch 1, bf16 weights, QLoRA NF4 + double quant with bf16 compute; $steps timed steps after $warmup warmup;
$threads threads, $(nproc) cores; each configuration in its own process" "${files[@]}"
cat <<'EOF'
s/step and tokens/s: timed steps only (forward + backward + AdamW step). peak RSS: the process's VmHWM
at the end (the Python rows include importing torch + transformers + peft (+ bitsandbytes); see
'RSS before load'). RSS loaded: VmRSS right after loading; load peak: VmHWM right after loading,
i.e. the peak while reading (and, for QLoRA, quantizing) the checkpoint. weight B/p: bytes per
parameter of the seven projections as stored (4-bit: packed codes + 8-bit absmax + nested fp32
absmax, as Nf4Tensor::storage_bytes counts). LoRA adapters: steptune bf16 (fp32 AdamW master),
peft fp32 (its default autocast_adapter_dtype). +ckpt: gradient checkpointing per decoder layer
(HF: gradient_checkpointing_enable(use_reentrant=False)).
EOF
