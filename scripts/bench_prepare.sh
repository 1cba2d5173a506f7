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
# steptune twice: the same work as Python (bench_prepare_equal.yaml: all 4,514 raw pairs, no
# cleaning), and the full data stage of recipes/bitext-qwen3-qlora.yaml.
run_rs() { # recipe -> "wall_s peak_mib template_tokenize_s rows"
  /usr/bin/time -f '%e %M' -o "$out/time" target/release/steptune prepare "$1" --output-dir "$out/run" 2>/dev/null
  read -r secs kib <"$out/time"
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], int(sys.argv[3])//1024, r["seconds"]["template_and_tokenize"], r["split"]["train_rows"]+r["split"]["eval_rows"])' \
    "$out/run/prepare_report.json" "$secs" "$kib"
}
eq=(); full=(); py=()
for i in $(seq "$runs"); do
  eq+=("$(run_rs scripts/bench_prepare_equal.yaml)")
  full+=("$(run_rs recipes/bitext-qwen3-qlora.yaml)")
  py+=("$("$PY" scripts/bench_prepare.py ../shared/data/bitext-customer-support.csv --tokenizer ../shared/models/qwen3-8b | tail -n1 \
    | "$PY" -c 'import json,sys; r=json.load(sys.stdin); print(r["seconds_total"], round(r["peak_rss_mib"]), r["seconds_template_and_tokenize"], r["rows"])')")
done
# Best run by wall time, one line per side: wall peak tok rows
best() { printf '%s\n' "$@" | sort -g | head -n1; }
read -r ew em et er <<<"$(best "${eq[@]}")"
read -r fw fm ft fr <<<"$(best "${full[@]}")"
read -r pw pm pt pr <<<"$(best "${py[@]}")"
ratio() { echo "$1 / $2" | bc -l; }
echo "prepare, Bitext CSV (4,514 rows), real Qwen3-8B tokenizer; best of $runs runs; $(nproc) cores"
printf '%-34s %14s %14s %10s %16s\n' "" "steptune same" "python" "ratio" "steptune full"
printf '%-34s %14s %14s %10s %16s\n' "rows templated and tokenised" "$er" "$pr" "" "$fr"
printf '%-34s %14.3f %14.3f %9.2fx %16.3f\n' "wall time, whole process (s)" "$ew" "$pw" "$(ratio "$pw" "$ew")" "$fw"
printf '%-34s %14.3f %14.3f %9.2fx %16.3f\n' "template + tokenize (s)" "$et" "$pt" "$(ratio "$pt" "$et")" "$ft"
printf '%-34s %14d %14d %9.2fx %16d\n' "peak memory (MiB)" "$em" "$pm" "$(ratio "$pm" "$em")" "$fm"
echo "same: the work Python does (render both templates, tokenise) plus loading, checking and writing."
echo "full: also step normalisation, PII, dedup and split; rows without steps are dropped."
echo "python: transformers apply_chat_template + fast tokenizer; its wall time includes importing transformers."
