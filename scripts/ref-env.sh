#!/usr/bin/env bash
# ref-env.sh — create (or reuse) the pinned Python reference environment.
#
# steptune's numbers are checked against fixtures that Python reference libraries
# produce (scripts/make_fixtures.py). Those fixtures are committed, so CI never needs
# Python; this script exists so that anyone regenerating them gets exactly the same
# library versions.
#
# Usage:  scripts/ref-env.sh            # prints the venv's python path on the last line
#         VENV_PY=$(scripts/ref-env.sh | tail -n1)
#
# Environment:
#   STEPTUNE_REF_VENV    venv location (default: $HOME/.cache/steptune/ref-venv)
#   STEPTUNE_REF_PYTHON  interpreter used to create a new venv (default: python3;
#                        the reference venv was built with CPython 3.11.7)
#
# Idempotent: an existing venv whose versions already match the pins is reused
# untouched; otherwise the pins are (re)installed with pip and checked again.
# Exits non-zero if the installed versions still do not match.
set -euo pipefail

VENV="${STEPTUNE_REF_VENV:-$HOME/.cache/steptune/ref-venv}"
BASE_PY="${STEPTUNE_REF_PYTHON:-python3}"

# The pins live in scripts/pins.py, which the fixture generators check too.
mapfile -t PINS < <("$BASE_PY" "$(dirname "${BASH_SOURCE[0]}")/pins.py")
[ "${#PINS[@]}" -gt 0 ] || { echo "ref-env: cannot read scripts/pins.py with $BASE_PY" >&2; exit 1; }

log() { echo "ref-env: $*" >&2; }

# Prints one line per mismatch; exit status 0 iff every pin matches.
check_pins() {
  "$VENV/bin/python" - "${PINS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

bad = 0
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        bad += 1
        print(f"  {name}: want {want}, have {have or 'not installed'}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv at $VENV with $BASE_PY ($("$BASE_PY" --version 2>&1))"
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv "$VENV"
else
  log "reusing venv at $VENV ($("$VENV/bin/python" --version 2>&1))"
fi

if check_pins; then
  log "all ${#PINS[@]} pinned versions match"
else
  log "installing pinned versions"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
  if check_pins; then
    log "all ${#PINS[@]} pinned versions match"
  else
    log "ERROR: installed versions do not match the pins (see above)"
    exit 1
  fi
fi

echo "$VENV/bin/python"
