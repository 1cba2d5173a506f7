#!/usr/bin/env bash
# Re-makes the README's VRAM table: the design document's figures (Unsloth's table, copied from
# ../shared/seeds/002_6663459a84aa9388.txt) beside `steptune estimate` for the matching open
# models (configs/*/config.json), with the settings of configs/vram.yaml.
#   configs/vram_table.sh [path/to/steptune]
set -euo pipefail
cd "$(dirname "$0")"
bin=${1:-../target/release/steptune}
[[ -x $bin ]] || bin=../target/debug/steptune
echo "| document row | model (config) | QLoRA: document | QLoRA: steptune | LoRA 16-bit: document | LoRA 16-bit: steptune |"
echo "|---|---|---|---|---|---|"
while read -r row model doc_q doc_l; do
  q=$("$bin" estimate vram.yaml --set model.source="$model" --set finetune.method=qlora --json | python3 -c 'import json,sys; b=json.load(sys.stdin)["total_bytes"]; print("%.1f GB" % (b / 1e9))')
  l=$("$bin" estimate vram.yaml --set model.source="$model" --set finetune.method=lora --json | python3 -c 'import json,sys; b=json.load(sys.stdin)["total_bytes"]; print("%.1f GB" % (b / 1e9))')
  echo "| $row | $model | $doc_q GB | $q | $doc_l GB | $l |"
done <<'ROWS'
3B qwen2.5-3b 3.5 8
7B qwen2.5-7b 5 19
8B qwen3-8b 6 22
14B qwen2.5-14b 8.5 33
32B qwen2.5-32b 26 76
70B llama-3.1-70b 41 164
ROWS
