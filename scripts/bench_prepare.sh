#!/usr/bin/env bash
# Benchmark: `steptune prepare` on the 4,514-row Bitext CSV with the real Qwen3-8B tokenizer,
# side by side with the same templating and tokenisation in Python (transformers'
# apply_chat_template + the fast tokenizer), one process each, on this machine.
#   scripts/bench_prepare.sh [runs]        (needs ../shared and the reference venv: scripts/ref-env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
PY=$(scripts/ref-env.sh | tail -n1)
cargo build --release -q
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
best() { sort -g | head -n1; }
rs_total=(); rs_tok=(); rs_rss=(); py_total=(); py_tok=(); py_rss=()
for i in $(seq "$runs"); do
  /usr/bin/time -f '%e %M' -o "$out/time" target/release/steptune prepare recipes/bitext-qwen3-qlora.yaml --output-dir "$out/run" 2>/dev/null
  read -r secs kib <"$out/time"
  rs_total+=("$secs"); rs_rss+=("$((kib / 1024))")
  rs_tok+=("$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"]["template_and_tokenize"])' "$out/run/prepare_report.json")")
  line=$("$PY" scripts/bench_prepare.py ../shared/data/bitext-customer-support.csv --tokenizer ../shared/models/qwen3-8b | tail -n1)
  py_total+=("$(echo "$line" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds_total"])')")
  py_tok+=("$(echo "$line" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds_template_and_tokenize"])')")
  py_rss+=("$(echo "$line" | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["peak_rss_mib"]))')")
done
a=$(printf '%s\n' "${rs_total[@]}" | best); b=$(printf '%s\n' "${py_total[@]}" | best)
c=$(printf '%s\n' "${rs_tok[@]}" | best); d=$(printf '%s\n' "${py_tok[@]}" | best)
e=$(printf '%s\n' "${rs_rss[@]}" | best); f=$(printf '%s\n' "${py_rss[@]}" | best)
echo "prepare on the Bitext CSV (4,514 rows, Qwen3-8B tokenizer), best of $runs runs, $(nproc) cores"
printf '%-44s %12s %12s %8s\n' "" "steptune" "python" "ratio"
printf '%-44s %12.3f %12.3f %7.2fx\n' "wall time, whole process (s)" "$a" "$b" "$(echo "$b / $a" | bc -l)"
printf '%-44s %12.3f %12.3f %7.2fx\n' "template + tokenize (s)" "$c" "$d" "$(echo "$d / $c" | bc -l)"
printf '%-44s %12d %12d %7.2fx\n' "peak memory (MiB)" "$e" "$f" "$(echo "$f / $e" | bc -l)"
echo "steptune's process also loads, validates, normalises steps, scrubs PII, dedups, splits and writes the files;"
echo "python's does only the template and tokenisation (and pays the transformers import)."
