#!/usr/bin/env bash
# Benchmark: LoRA training throughput and peak memory on CPU, steptune vs transformers + peft,
# side by side, on the same prepared file.
#   scripts/bench_train.sh [runs]     (default 1; best of `runs` per side and mode)
# Needs ../shared/models/qwen3-8b (the real Qwen3 tokenizer) and the reference venv
# (scripts/ref-env.sh). Environment: BENCH_THREADS (default 2), BENCH_STEPS (20), BENCH_MODES
# ("padded realistic"),
# BENCH_WARMUP (3), BENCH_KEEP=1 keeps the temp folder, BENCH_NO_BUILD=1 skips `cargo build`.
#
# The model: scripts/bench_train.yaml (random-init Qwen3 shape, hidden 512, 8 layers, the real
# 151,936-token vocabulary, LoRA r 16 on all seven projections, batch 4, fp32, AdamW 1e-4).
# `steptune prepare` tokenises data/procedures.jsonl once; both sides then train on that
# prepared/train.jsonl: `warmup` untimed optimizer steps, then `steps` timed ones.
#   padded     both sides: batches in file order, every batch padded to the longest row of
#              the file, logits at every position (the fixed-length loop). The same work on
#              both sides; the check at the end warns if tokens or parameters differ.
#   realistic  each side's own path: transformers+peft Trainer-style (file order, every batch
#              padded to its own longest row, full logits); steptune length-grouped batches,
#              LM head only where a label exists. The rows differ by design: compare tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
threads=${BENCH_THREADS:-2}
steps=${BENCH_STEPS:-20}
warmup=${BENCH_WARMUP:-3}
recipe=scripts/bench_train.yaml
PY=$(scripts/ref-env.sh | tail -n1)
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q
out=$(mktemp -d)
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "bench_train: keeping $out" >&2; else trap 'rm -rf "$out"' EXIT; fi
# Both sides get the same intra-op thread count (libtorch reads OMP_NUM_THREADS at start;
# the Python side also calls torch.set_num_threads).
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

target/release/steptune prepare "$recipe" --output-dir "$out/run" >&2
prepared=$out/run/prepared/train.jsonl
# The Python side's config.json: the recipe's inline model.config, so the shape is defined once.
"$PY" - "$recipe" "$out/config.json" <<'EOF'
import json, sys, yaml
c = dict(yaml.safe_load(open(sys.argv[1]))["model"]["config"])
c.setdefault("architectures", ["Qwen3ForCausalLM"])
c["torch_dtype"] = "float32"
c["use_cache"] = False
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF

rs_ok=1
for mode in ${BENCH_MODES:-padded realistic}; do
  for i in $(seq "$runs"); do
    echo "bench_train: $mode run $i/$runs: steptune" >&2
    if [[ $rs_ok == 1 ]]; then
      if target/release/steptune bench-train "$recipe" --prepared "$prepared" --mode "$mode" \
          --steps "$steps" --warmup-steps "$warmup" --json >"$out/rs.out" 2>"$out/rs.err" \
          && tail -n1 "$out/rs.out" | "$PY" -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
        tail -n1 "$out/rs.out" >"$out/rs_${mode}_$i.json"
      else
        rs_ok=0
        echo "bench_train: WARNING: \`steptune bench-train ... --json\` failed or printed no JSON line;" >&2
        echo "bench_train:          showing the transformers+peft side only. Its stderr/stdout tail:" >&2
        { sed '/^[[:space:]]*$/d' "$out/rs.err" | tail -n8; tail -n3 "$out/rs.out"; } | sed 's/^/    /' >&2
      fi
    fi
    echo "bench_train: $mode run $i/$runs: transformers+peft" >&2
    "$PY" scripts/bench_train.py --prepared "$prepared" --config "$out/config.json" --method lora \
      --lora-r 16 --lora-alpha 32 --lora-dropout 0.0 \
      --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
      --batch-size 4 --steps "$steps" --warmup-steps "$warmup" --mode "$mode" \
      --threads "$threads" --seed 0 --lr 1e-4 2>"$out/py.err" | tail -n1 >"$out/py_${mode}_$i.json" \
      || { echo "bench_train: the Python side failed:" >&2; tail -n20 "$out/py.err" >&2; exit 1; }
  done
done

"$PY" - "$out" "$runs" "$threads" "$steps" "$warmup" "$(nproc)" <<'EOF'
import glob, json, sys
out, runs, threads, steps, warmup, cores = sys.argv[1:]

def best(side, mode):
    rs = [json.load(open(p)) for p in sorted(glob.glob(f"{out}/{side}_{mode}_*.json"))]
    if not rs:
        return None
    b = dict(max(rs, key=lambda r: r.get("tokens_per_second") or 0))
    if all("peak_rss_mib" in r for r in rs):
        b["peak_rss_mib"] = min(r["peak_rss_mib"] for r in rs)
    return b

print(f"train, LoRA r 16, Qwen3 shape (hidden 512, 8 layers, vocab 151,936), batch 4, fp32, CPU; "
      f"{steps} timed steps after {warmup} warmup; best of {runs}; "
      f"{threads} threads, {cores} cores")
fmt = "%-11s %-28s %14s %18s %9s"
print(fmt % ("mode", "", "steptune", "transformers+peft", "ratio"))
notes = []
for mode in [m for m in ("padded", "realistic") if best("rs", m) or best("py", m)]:
    rs, py = best("rs", mode), best("py", mode)
    def cell(r, k, f="%.1f"):
        return f % r[k] if r and isinstance(r.get(k), (int, float)) else "n/a"
    def ratio(a, b):
        return "%.2fx" % (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b else "n/a"
    print(fmt % (mode, "tokens/s (real tokens)", cell(rs, "tokens_per_second"), cell(py, "tokens_per_second"),
                 ratio(rs and rs.get("tokens_per_second"), py and py.get("tokens_per_second"))))
    for r in (rs, py):
        if r and "padded_tokens_per_second" not in r and r.get("padded_tokens") and r.get("seconds"):
            r["padded_tokens_per_second"] = r["padded_tokens"] / r["seconds"]
    print(fmt % ("", "padded tokens/s", cell(rs, "padded_tokens_per_second"), cell(py, "padded_tokens_per_second"), ""))
    print(fmt % ("", "seconds (timed steps)", cell(rs, "seconds", "%.2f"), cell(py, "seconds", "%.2f"),
                 ratio(py and py.get("seconds"), rs and rs.get("seconds"))))
    print(fmt % ("", "peak memory (MiB)", cell(rs, "peak_rss_mib", "%.0f"), cell(py, "peak_rss_mib", "%.0f"),
                 ratio(py and py.get("peak_rss_mib"), rs and rs.get("peak_rss_mib"))))
    print(fmt % ("", "final loss", cell(rs, "final_loss", "%.4f"), cell(py, "final_loss", "%.4f"), ""))
    if rs and py:
        keys = ("steps_timed", "params_trainable") + (("tokens", "padded_tokens") if mode == "padded" else ())
        for k in keys:
            if rs.get(k) != py.get(k):
                notes.append(f"WARNING {mode}: {k} differs: steptune {rs.get(k)} vs transformers+peft {py.get(k)} "
                             "(the two sides did not do the same work)")
print("ratio: steptune/hf for tokens/s; hf/steptune for seconds and memory (above 1: steptune better).")
print("tokens/s counts real (non-pad) tokens; peak memory is the whole process's max RSS (the Python")
print("side includes importing torch + transformers + peft). realistic: each side's own batching")
print("(steptune: length-grouped, loss head on labelled positions only; HF: file order, full logits),")
print("so the rows differ; tokens/s is the comparable figure.")
for n in notes:
    print(n)
EOF
