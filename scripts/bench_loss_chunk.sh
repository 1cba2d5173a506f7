#!/usr/bin/env bash
# Benchmark: peak memory and step time of a training step with the LM head's loss all at once
# (`training.loss_chunk_tokens: 0`) against in chunks (the default 1024), at the real Qwen3
# vocabulary. Each configuration runs in its own process; no Python needed.
#   scripts/bench_loss_chunk.sh
# Environment: BENCH_HIDDEN (1024), BENCH_LAYERS (4), BENCH_SEQ (2048), BENCH_BATCH (2),
# BENCH_METHODS ("lora full"), BENCH_CHUNKS ("0 1024"), BENCH_STEPS (2) timed steps after
# BENCH_WARMUP (1), BENCH_THREADS (2), BENCH_NO_BUILD=1 skips `cargo build --release`.
#
# The model: scripts/bench_train.yaml's Qwen3 shape (random weights, fp32: this CPU has no fast
# bf16) widened to BENCH_HIDDEN and BENCH_LAYERS; every token of every row is labelled, so the
# head runs on batch × (seq − 1) positions. Figures: peak anonymous RSS of the training steps
# (what the process holds: weights, activations, logits), seconds per step.
set -euo pipefail
cd "$(dirname "$0")/.."
hidden=${BENCH_HIDDEN:-1024}
layers=${BENCH_LAYERS:-4}
seq=${BENCH_SEQ:-2048}
batch=${BENCH_BATCH:-2}
methods=${BENCH_METHODS:-"lora full"}
chunks=${BENCH_CHUNKS:-"0 1024"}
steps=${BENCH_STEPS:-2}
warmup=${BENCH_WARMUP:-1}
threads=${BENCH_THREADS:-2}
die() { echo "bench_loss_chunk: $*" >&2; exit 1; }
[[ "${BENCH_NO_BUILD:-0}" == 1 ]] || cargo build --release -q || die "cargo build failed"
bin=target/release/steptune
[[ -x $bin ]] || die "$bin is missing (cargo build --release)"
out=$(mktemp -d "${TMPDIR:-/tmp}/bench_loss_chunk.XXXXXX")
trap 'rm -rf "$out"' EXIT
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

# Random token ids, every one labelled: batch × (steps + warmup) rows of `seq` tokens.
awk -v rows=$((batch * (steps + warmup))) -v len="$seq" 'BEGIN { srand(1); for (r = 0; r < rows; r++) {
  s = ""; for (i = 0; i < len; i++) s = s (i ? "," : "") (1000 + int(rand() * 150000));
  printf "{\"input_ids\":[%s],\"labels\":[%s]}\n", s, s } }' > "$out/train.jsonl"

heads=$((hidden / 64))
printf '%-6s %-6s %8s %14s %14s %10s\n' method chunk tokens "peak anon MiB" "train MiB" "s/step"
for method in $methods; do
  for chunk in $chunks; do
    line=$("$bin" bench-train scripts/bench_train.yaml --prepared "$out/train.jsonl" --mode ordered \
      --steps "$steps" --warmup-steps "$warmup" --method "$method" \
      --set model.config.hidden_size=$hidden --set model.config.intermediate_size=$((hidden * 3)) \
      --set model.config.num_hidden_layers=$layers --set model.config.num_attention_heads=$heads \
      --set model.config.num_key_value_heads=$((heads / 2)) --set training.per_device_train_batch_size=$batch \
      --set training.loss_chunk_tokens=$chunk --set data.max_length=$seq 2>"$out/log") \
      || { cat "$out/log" >&2; die "$method, chunk $chunk failed"; }
    field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" <<<"$line"; }
    peak=$(field peak_anon_train_mib); before=$(field rss_before_train_mib)
    printf '%-6s %-6s %8s %14.0f %14.0f %10.2f\n' "$method" "$chunk" "$(field tokens)" "$peak" \
      "$(awk -v a="$peak" -v b="$before" 'BEGIN { print a - b }')" "$(field seconds_per_step)"
  done
done
