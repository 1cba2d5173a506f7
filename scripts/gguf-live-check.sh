#!/usr/bin/env bash
# gguf-live-check.sh — llama.cpp itself runs what `steptune export` wrote (outside CI).
#
# Builds llama.cpp's `llama-simple` from the pinned source (llama-cpp-python 0.3.36's vendored
# llama.cpp, via scripts/gguf-env.sh; cmake and ninja from PyPI; about 4 minutes on 2 cores), then:
#   1. the tiny checkpoints of scripts/make_gguf_fixtures.py (Qwen3 tied and untied, Qwen2,
#      Llama 3.1 with llama3 RoPE, and Qwen3 + a LoRA adapter merged by the export) exported as
#      f32, f16 and q8_0: llama-simple's greedy continuation of a chat prompt against
#      `steptune generate`'s on the checkpoint, token by token through their text;
#   2. the quickstart's trained model (`steptune run`, full fine-tuning with its own BPE
#      tokenizer, exported with --tokenizer-pre gpt-2): llama-simple's answer to a held-out
#      paraphrase against steptune's.
# Prints one line per file and exits 1 when any differs or llama.cpp fails to load one.
#
#   scripts/gguf-live-check.sh            # STEPTUNE_BIN (default target/release/steptune)
#   QUICKSTART_RUN=runs/quickstart scripts/gguf-live-check.sh   # reuse a finished run
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${STEPTUNE_BIN:-target/release/steptune}
[ -x "$BIN" ] || { echo "gguf-live-check: $BIN not found (cargo build --release)" >&2; exit 2; }
CACHE=${STEPTUNE_CACHE:-$HOME/.cache/steptune}
mapfile -t env_out < <(scripts/gguf-env.sh)
LLAMA_SRC=${env_out[-2]}
PY=${env_out[-1]}

# cmake + ninja from PyPI, then llama-simple only.
TOOLS=$CACHE/cmake-venv
[ -x "$TOOLS/bin/cmake" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q cmake ninja; }
BUILD=$CACHE/llama-simple-0.3.36
SIMPLE=$BUILD/bin/llama-simple
if [ ! -x "$SIMPLE" ]; then
  t0=$SECONDS
  PATH=$TOOLS/bin:$PATH cmake -S "$LLAMA_SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  PATH=$TOOLS/bin:$PATH cmake --build "$BUILD" --target llama-simple -j "$(nproc)" >/dev/null
  echo "built llama-simple in $((SECONDS - t0)) s"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gguf-live.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
PROMPT_USER="How do I reset my password in the xx app?"
# The rendered chat prompt in variable $1 (printf -v: $(...) would drop the trailing newlines).
chatml() { printf -v "$1" '<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' "$2"; }

# llama-simple prints the prompt's pieces, then the continuation; keep what follows the prompt.
llama_continuation() { # FILE PROMPT N
  local out
  out=$("$SIMPLE" -m "$1" -n "$3" "$2" 2>"$work/simple.err") || { echo "llama-simple failed on $1: $(tail -n3 "$work/simple.err")" >&2; return 1; }
  printf '%s' "${out#"$2"}"
}
steptune_continuation() { # MODEL_DIR ADAPTER PROMPT_USER N
  local args=(generate --model "$1" --prompt "$3" --max-new-tokens "$4" --json)
  [ -n "$2" ] && args+=(--adapter "$2")
  "$BIN" "${args[@]}" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["text"], end="")'
}
trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
# steptune generate's `text` is trimmed; llama-simple prints the pieces as they are.
compare() { # LABEL LLAMA_TEXT STEPTUNE_TEXT
  if [ "$(trim "$2")" == "$(trim "$3")" ]; then
    printf 'ok    %-28s %s\n' "$1" "$(printf '%s' "$2" | head -c 60 | tr '\n' ' ')"
  else
    printf 'DIFF  %-28s llama.cpp: %q\n      %-28s steptune:  %q\n' "$1" "$2" "" "$3"
    fail=1
  fi
}

"$PY" scripts/make_gguf_fixtures.py --checkpoints "$work/ck"
for name in qwen3_tied qwen3_untied qwen2 llama qwen3_lora; do
  model=$work/ck/$name adapter=""
  if [ "$name" == qwen3_lora ]; then model=$work/ck/qwen3_tied adapter=$work/ck/qwen3_lora; fi
  want=$(steptune_continuation "$model" "$adapter" "$PROMPT_USER" 16)
  for ot in f32 f16 q8_0; do
    f=$work/out/$name.$ot.gguf
    "$BIN" export --model "$model" ${adapter:+--adapter "$adapter"} --outtype "$ot" --out "$f" 2>/dev/null
    chatml prompt "$PROMPT_USER"
    got=$(llama_continuation "$f" "$prompt" 16) || { fail=1; continue; }
    if [ "$ot" == f32 ]; then compare "$name $ot" "$got" "$want"; else printf 'ran   %-28s %s\n' "$name $ot" "$(printf '%s' "$got" | head -c 60 | tr '\n' ' ')"; fi
  done
done

# The quickstart's trained model: a real steptune result in llama.cpp.
run=${QUICKSTART_RUN:-}
if [ -z "$run" ]; then
  run=$work/quickstart
  "$BIN" run --set output_dir="$run" >"$work/quickstart.log" 2>&1 || { echo "the quickstart run failed: $(tail -n5 "$work/quickstart.log")" >&2; exit 1; }
fi
q=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["prompt"])' "$run/prepared/eval.jsonl" 2>/dev/null || echo "$PROMPT_USER")
"$BIN" export --run "$run" --outtype f32 --tokenizer-pre gpt-2 --out "$work/out/quickstart.f32.gguf" 2>/dev/null
want=$(steptune_continuation "$run/model" "" "$q" 64)
chatml prompt "$q"
got=$(llama_continuation "$work/out/quickstart.f32.gguf" "$prompt" 64) || fail=1
compare "quickstart f32" "$got" "$want"
echo "prompt: $q"
printf 'llama.cpp answer:\n%s\n' "$got"
exit $fail
