#!/usr/bin/env bash
# Benchmark: T5 full fine-tuning throughput and peak memory on CPU, steptune vs transformers,
# side by side on the same prepared file, each in its own process.
#   scripts/bench_t5.sh [runs]      (default 1; best of `runs` per side)
# Needs ../shared/models/flan-t5-small (config + tokenizer) and the reference venv
# (scripts/ref-env.sh). Environment: BENCH_THREADS (2), BENCH_STEPS (20) timed steps after
# BENCH_WARMUP (3) untimed ones, BENCH_MAX_LOAD (2.5; wait up to BENCH_LOAD_WAIT=600 s before each
# run while the load average is above it; 0 disables), BENCH_KEEP=1 keeps the temp folder,
# BENCH_NO_BUILD=1 skips `cargo build`.
#
# The model: the flan-t5-small shape with random weights (transformers' init, seed 0) saved in
# fp32 with the real tokenizer into a temp folder (scripts/bench_t5.yaml). `steptune prepare`
# makes seq2seq examples of data/procedures.jsonl (input_ids = prompt + eos, labels = steps +
# eos); both sides train on that prepared/train.jsonl in file order, batch 4, every batch padded
# to its own longest source and target (transformers' dynamic padding), full fine-tuning, fp32,
# AdamW 5e-5, dropout 0.1 as in the config. Only the training steps are timed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
threads=${BENCH_THREADS:-2}
steps=${BENCH_STEPS:-20}
warmup=${BENCH_WARMUP:-3}
max_load=${BENCH_MAX_LOAD:-2.5}
load_wait=${BENCH_LOAD_WAIT:-600}
shape=../shared/models/flan-t5-small
recipe=scripts/bench_t5.yaml
die() { echo "bench_t5: $*" >&2; exit 1; }
[[ -f $shape/config.json ]] || die "$shape/config.json is missing (the flan-t5-small shape and tokenizer)"
PY=$(scripts/ref-env.sh | tail -n1) || die "no reference venv (scripts/ref-env.sh failed)"
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q || die "cargo build failed"
[[ -x target/release/steptune ]] || die "target/release/steptune is missing (cargo build --release)"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench_t5.XXXXXX")
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "bench_t5: keeping $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

echo "bench_t5: generating the random fp32 checkpoint with transformers" >&2
"$PY" scripts/bench_hf.py make-t5 --config "$shape/config.json" --tokenizer "$shape" --out "$out/model" \
  || die "generating the checkpoint failed"
"$PY" - "$recipe" "$out/recipe.yaml" "$out/model" "$out/run" "$PWD" <<'PYEOF' || die "cannot write the recipe"
import os, sys, yaml
src, dst, model, run, root = sys.argv[1:]
r = yaml.safe_load(open(src))
r["model"]["source"] = model
r["output_dir"] = run
r["data"]["files"] = [os.path.join(root, f) for f in r["data"]["files"]]
yaml.safe_dump(r, open(dst, "w"), sort_keys=False)
PYEOF
target/release/steptune prepare "$out/recipe.yaml" --output-dir "$out/run" >&2 || die "steptune prepare failed"
prepared=$out/run/prepared/train.jsonl
[[ -s $prepared ]] || die "$prepared is empty"

wait_for_quiet() {
  [[ "$max_load" == 0 ]] && return 0
  local waited=0
  while awk -v m="$max_load" '{exit !($1 > m)}' /proc/loadavg; do
    if (( waited >= load_wait )); then
      echo "bench_t5: WARNING: load average still $(cut -d' ' -f1 /proc/loadavg) after ${load_wait}s; timing anyway" >&2
      return 0
    fi
    (( waited == 0 )) && echo "bench_t5: load average $(cut -d' ' -f1 /proc/loadavg) > $max_load; waiting" >&2
    sleep 10; waited=$((waited + 10))
  done
}

run_side() {  # name, command...
  local name=$1; shift
  wait_for_quiet
  echo "bench_t5: $name (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  if "$@" >"$out/$name.out" 2>"$out/$name.err" \
      && tail -n1 "$out/$name.out" | "$PY" -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
    tail -n1 "$out/$name.out"
  else
    echo "bench_t5: WARNING: $name failed or printed no JSON line; its stderr tail:" >&2
    { sed '/^[[:space:]]*$/d' "$out/$name.err" | tail -n8; tail -n3 "$out/$name.out"; } | sed 's/^/    /' >&2
  fi
}

for i in $(seq "$runs"); do
  run_side steptune target/release/steptune bench-train "$out/recipe.yaml" --prepared "$prepared" --mode ordered \
    --steps "$steps" --warmup-steps "$warmup" --json >"$out/steptune_$i.json"
  run_side transformers "$PY" scripts/bench_hf.py train --model-dir "$out/model" --prepared "$prepared" --method full \
    --dtype fp32 --batch-size 4 --steps "$steps" --warmup-steps "$warmup" --threads "$threads" --lr 5e-5 \
    --mode ordered --targets q,k,v,o,wi_0,wi_1,wo >"$out/transformers_$i.json"
done
# Best of the runs per side (highest tokens/s; lowest peak RSS).
for side in steptune transformers; do
  "$PY" - "$out" "$side" <<'PYEOF'
import glob, json, sys
out, side = sys.argv[1:]
rs = []
for p in sorted(glob.glob(f"{out}/{side}_*.json")):
    try:
        rs.append(json.load(open(p)))
    except ValueError:
        pass
if rs:
    b = dict(max(rs, key=lambda r: r.get("tokens_per_second") or 0))
    b["peak_rss_mib"] = min(r["peak_rss_mib"] for r in rs)
    json.dump(b, open(f"{out}/{side}.json", "w"))
PYEOF
done
"$PY" scripts/bench_hf.py table --kind t5 --title "train, T5 full fine-tuning, flan-t5-small shape (d_model 512, 8+8 layers, vocab 32,128), random weights;
$(wc -l <"$prepared") prepared rows of data/procedures.jsonl in file order, batch 4, dynamic padding, fp32, AdamW 5e-5;
$steps timed steps after $warmup warmup; best of $runs; $threads threads, $(nproc) cores" "$out/steptune.json" "$out/transformers.json"
cat <<'PYEOF'
tokens/s counts real source + target tokens of the timed steps; peak RSS is the process's VmHWM
(the transformers side includes importing torch + transformers, ~700 MiB here; see the JSON's
rss_before_load_mib). Both sides pad each batch to its longest source and target and compute the
decoder's logits; steptune runs the LM head only on labelled positions, transformers on all.
PYEOF
