#!/usr/bin/env bash
# Benchmark: scoring 10,000 (prediction, reference) pairs with ROUGE-L/Lsum (stemmed), METEOR
# and BLEU (sentence BLEU per pair + corpus BLEU), `steptune score` vs the Python reference
# libraries (rouge-score, nltk, sacrebleu), one process each, side by side.
#   scripts/bench_score.sh [runs]     (default 3; best of `runs` per side)
# Needs the reference venv (scripts/ref-env.sh) and WordNet (scripts/wordnet-setup.sh).
# Environment: BENCH_PAIRS (default 10000), BENCH_KEEP=1 keeps the temp folder,
# BENCH_NO_BUILD=1 skips `cargo build`.
#
# The pairs: scripts/bench_score.py --write-only writes pred.jsonl / ref.jsonl ({"id", "text"}
# per line) from tests/fixtures/metric_corpus.json, cycled and lightly perturbed to 10,000.
# Both sides are timed as whole processes with /usr/bin/time (wall seconds, max RSS); the
# Python side's own per-library timings are shown below the table. steptune's JSON goes to a
# file (not /dev/null) so that its corpus figures can be checked against Python's afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
pairs=${BENCH_PAIRS:-10000}
PY=$(scripts/ref-env.sh | tail -n1)
export NLTK_DATA
NLTK_DATA=$(scripts/wordnet-setup.sh --nltk-data | tail -n1)
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q
out=$(mktemp -d)
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then echo "bench_score: keeping $out" >&2; else trap 'rm -rf "$out"' EXIT; fi

"$PY" scripts/bench_score.py --out "$out/pairs" --pairs "$pairs" --write-only

rs_ok=1
rs=(); py=()
for i in $(seq "$runs"); do
  echo "bench_score: run $i/$runs: steptune" >&2
  if [[ $rs_ok == 1 ]]; then
    if /usr/bin/time -f '%e %M' -o "$out/time" target/release/steptune score \
        --pred "$out/pairs/pred.jsonl" --ref "$out/pairs/ref.jsonl" --json >"$out/rs.json" 2>"$out/rs.err"; then
      read -r secs kib <"$out/time"
      rs+=("$secs $((kib / 1024))")
    else
      rs_ok=0
      echo "bench_score: WARNING: \`steptune score --pred P --ref R --json\` failed; showing the Python side only." >&2
      sed '/^[[:space:]]*$/d' "$out/rs.err" | tail -n8 | sed 's/^/    /' >&2
    fi
  fi
  echo "bench_score: run $i/$runs: python" >&2
  /usr/bin/time -f '%e %M' -o "$out/time" "$PY" scripts/bench_score.py --out "$out/pairs" --pairs "$pairs" \
    >"$out/py.out" 2>"$out/py.err" \
    || { echo "bench_score: the Python side failed:" >&2; tail -n20 "$out/py.err" >&2; exit 1; }
  read -r secs kib <"$out/time"
  tail -n1 "$out/py.out" >"$out/py_$i.json"
  py+=("$secs $((kib / 1024)) $out/py_$i.json")
done

best() { printf '%s\n' "$@" | sort -g | head -n1; }
read -r pw pm pj <<<"$(best "${py[@]}")"
if [[ ${#rs[@]} -gt 0 ]]; then read -r rw rm_ <<<"$(best "${rs[@]}")"; rj=$out/rs.json; else rw=; rm_=; rj=; fi
"$PY" - "$pj" "$pairs" "$runs" "$(nproc)" "$rw" "$rm_" "$pw" "$pm" "$rj" <<'EOF'
import json, sys
pj, pairs, runs, cores, rw, rm, pw, pm, rj = sys.argv[1:]
p = json.load(open(pj))
num = lambda s: float(s) if s else None

def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "n/a"

print(f"score, {int(pairs):,} pairs: ROUGE-L + ROUGE-Lsum (stemmed), METEOR, sentence + corpus BLEU; "
      f"best of {runs} runs; {cores} cores")
fmt = "%-36s %12s %12s %9s"
print(fmt % ("", "steptune", "python", "ratio"))
rw, rm, pw, pm = map(num, (rw, rm, pw, pm))
print(fmt % ("wall time, whole process (s)", "%.2f" % rw if rw else "n/a", "%.2f" % pw, ratio(pw, rw)))
print(fmt % ("peak memory (MiB)", "%d" % rm if rm else "n/a", "%d" % pm, ratio(pm, rm)))
print(f"python, by library (s; fastest run): " + ", ".join(f"{k} {v:.2f}" for k, v in p["seconds"].items())
      + f"; scoring total {p['seconds_total']:.2f}, process {p['seconds_process']:.2f}")
m = p["mean"]
print(f"python means: ROUGE-L {m['rouge_l']:.4f}, ROUGE-Lsum {m['rouge_lsum']:.4f}, METEOR {m['meteor']:.4f}, "
      f"sentence BLEU {m['sentence_bleu']:.2f}, corpus BLEU {p['corpus_bleu']:.2f}")
print("ratio: python/steptune (above 1: steptune faster / smaller). Whole-process figures: the Python")
print("side includes its imports and NLTK's WordNet loading, steptune its WordNet loading.")

# Same figures? steptune score --json: {"rows": [{"rouge_l", "rouge_lsum", "meteor", "bleu"}, ...],
# "corpus": {"rouge_l_f1", "rouge_lsum_f1", "meteor", "bleu" (corpus BLEU)}}. Checked only
# where those keys exist.
if rj:
    try:
        r = json.load(open(rj))
        c, rows = r.get("corpus", {}), r.get("rows", [])
        checks = [("ROUGE-L", c.get("rouge_l_f1"), m["rouge_l"]),
                  ("ROUGE-Lsum", c.get("rouge_lsum_f1"), m["rouge_lsum"]),
                  ("METEOR", c.get("meteor"), m["meteor"]),
                  ("corpus BLEU", c.get("bleu"), p["corpus_bleu"])]
        if rows and all(isinstance(x.get("bleu"), (int, float)) for x in rows):
            checks.append(("sentence BLEU", sum(x["bleu"] for x in rows) / len(rows), m["sentence_bleu"]))
        done = [(n, a, b) for n, a, b in checks if isinstance(a, (int, float))]
        bad = [(n, a, b) for n, a, b in done if abs(a - b) > 1e-9 * max(1.0, abs(b))]
        if not done:
            print("figures: steptune's JSON has none of the expected corpus keys; not compared")
        elif bad:
            for n, a, b in bad:
                print(f"WARNING: {n} differs: steptune {a!r} vs python {b!r}")
        else:
            print(f"figures agree (1e-9): " + ", ".join(n for n, _, _ in done))
    except Exception as e:  # a format change must not hide the timings above
        print(f"figures: could not compare steptune's JSON ({type(e).__name__}: {e})")
EOF
