#!/usr/bin/env bash
# gguf-env.sh — the pinned llama.cpp environment for GGUF fixtures and live checks.
#
# llama.cpp's own converter (convert_hf_to_gguf.py + gguf-py) and its inference code, both from
# the MIT source that PyPI ships as llama-cpp-python's sdist, at one pinned version:
#   - the sdist, checked against its sha256, unpacked into $STEPTUNE_CACHE/llama-cpp-python-$V;
#   - a venv ($STEPTUNE_CACHE/gguf-venv) with the converter's own requirements
#     (requirements/requirements-convert_hf_to_gguf.txt: transformers 4.57.6, numpy 2.2.6,
#     sentencepiece, protobuf) and llama-cpp-python built from that sdist (cmake + ninja from
#     PyPI, about 5 minutes on 2 cores). torch 2.11.0 comes from the reference venv
#     (scripts/ref-env.sh) through a .pth file placed after the venv's own packages.
#
# Usage: scripts/gguf-env.sh      # prints the venv's python on the last line, the source folder
#                                 # on the line before
# Idempotent. Needs PyPI only.
set -euo pipefail
V=0.3.36
SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-$V.tar.gz
CACHE=${STEPTUNE_CACHE:-$HOME/.cache/steptune}
SRC=$CACHE/llama-cpp-python-$V
VENV=$CACHE/gguf-venv
log() { echo "gguf-env: $*" >&2; }
mkdir -p "$CACHE"

if [ ! -f "$SRC/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  tmp=$(mktemp -d)
  log "downloading llama-cpp-python $V (sdist)"
  curl -sSfL -o "$tmp/src.tar.gz" "$URL"
  echo "$SHA  $tmp/src.tar.gz" | sha256sum -c --quiet - || { log "sha256 mismatch for $URL"; exit 1; }
  tar xzf "$tmp/src.tar.gz" -C "$tmp"
  rm -rf "$SRC" && mv "$tmp/llama_cpp_python-$V" "$SRC" && rm -rf "$tmp"
fi

REF_PY=$("$(dirname "${BASH_SOURCE[0]}")/ref-env.sh" | tail -n1)
REF_SITE=$("$REF_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$REF_PY" -c 'import sys; print(sys.base_prefix)' >/dev/null
  "$(dirname "$(readlink -f "$REF_PY")")/python3" -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$REF_SITE" >"$SITE/zz-ref-venv-torch.pth"
if ! "$VENV/bin/python" -c 'import transformers, numpy, sentencepiece, google.protobuf, yaml, tqdm, llama_cpp, torch' 2>/dev/null; then
  log "installing the converter's requirements"
  "$VENV/bin/pip" install -q numpy==2.2.6 sentencepiece==0.2.1 transformers==4.57.6 protobuf==4.25.8 tqdm pyyaml requests diskcache jinja2 typing-extensions
  log "building llama-cpp-python $V from source (about 5 minutes)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$VENV/bin/pip" install -q --no-deps "$SRC"
fi
"$VENV/bin/python" - <<'PY'
import transformers, numpy, torch, llama_cpp
assert transformers.__version__ == "4.57.6", transformers.__version__
assert numpy.__version__ == "2.2.6", numpy.__version__
assert torch.__version__.split("+")[0] == "2.11.0", torch.__version__
assert llama_cpp.__version__ == "0.3.36", llama_cpp.__version__
PY
echo "$SRC/vendor/llama.cpp"
echo "$VENV/bin/python"
