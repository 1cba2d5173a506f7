#!/usr/bin/env bash
# wordnet-setup.sh — make the WordNet 3.0 database available to steptune's METEOR.
#
# steptune's METEOR (src/eval/meteor.rs) has a WordNet synonym stage, exactly like NLTK's
# meteor_score. It reads the plain WordNet 3.0 database files (index.*, data.*, *.exc)
# that Debian ships in the packages wordnet-base and wordnet-sense-index, installed in
# /usr/share/wordnet. This script:
#
#   1. installs those packages with apt-get if a database file is missing from
#      /usr/share/wordnet (needs root; otherwise it stops with a message saying what to
#      run);
#   2. with --nltk-data only: builds an NLTK data folder whose corpora/wordnet/ holds
#      copies of the same files (copies: NLTK refuses symlinks that point outside its
#      corpus root) plus the `lexnames` file NLTK's WordNetCorpusReader requires and
#      Debian does not ship, so that NLTK (scripts/make_metric_fixtures_meteor.py) reads
#      the very same database the Rust code reads;
#   3. prints the WordNet folder on the last line of stdout (with --nltk-data, the NLTK
#      data folder instead, i.e. the value for NLTK_DATA).
#
# Usage:  scripts/wordnet-setup.sh              # what `cargo test` needs; prints /usr/share/wordnet
#         scripts/wordnet-setup.sh --nltk-data  # also the NLTK copy, for regenerating fixtures
#
# Environment:
#   STEPTUNE_NLTK_DATA  NLTK data folder to build (default: $HOME/.cache/steptune/nltk_data)
#
# steptune itself finds the database through $STEPTUNE_WORDNET if set, else
# /usr/share/wordnet. Idempotent: running it again changes nothing. Works on a fresh
# Debian bookworm (or Ubuntu) machine when run as root.
set -euo pipefail

WN_DIR=/usr/share/wordnet
NLTK_DATA_DIR="${STEPTUNE_NLTK_DATA:-${HOME:-/root}/.cache/steptune/nltk_data}"
PACKAGES=(wordnet-base wordnet-sense-index)
# Files NLTK's WordNetCorpusReader opens (lexnames is written separately below).
WN_FILES=(
  index.noun index.verb index.adj index.adv
  data.noun data.verb data.adj data.adv
  noun.exc verb.exc adj.exc adv.exc
  index.sense cntlist.rev
)

want_nltk=0
case "${1:-}" in
  "") ;;
  --nltk-data) want_nltk=1 ;;
  -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
  *) echo "wordnet-setup: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

log() { echo "wordnet-setup: $*" >&2; }

missing_files() {
  local f
  for f in "${WN_FILES[@]}"; do
    [[ -s "$WN_DIR/$f" ]] || echo "$f"
  done
}

if [[ -n "$(missing_files)" ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    log "ERROR: the WordNet 3.0 database is missing from $WN_DIR ($(missing_files | tr '\n' ' '))."
    log "Install it as root:  apt-get update && apt-get install -y ${PACKAGES[*]}"
    log "(or run this script as root), or point STEPTUNE_WORDNET at a folder holding"
    log "the WordNet 3.0 dict files (index.*, data.*, *.exc)."
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: $WN_DIR is incomplete and apt-get is not available on this machine."
    log "Install WordNet 3.0's dict files (index.*, data.*, *.exc) somewhere and set STEPTUNE_WORDNET."
    exit 1
  fi
  log "installing ${PACKAGES[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
  if [[ -n "$(missing_files)" ]]; then
    log "ERROR: still missing after install: $(missing_files | tr '\n' ' ')"
    exit 1
  fi
else
  log "WordNet database present in $WN_DIR"
fi

if [[ $want_nltk -eq 0 ]]; then
  echo "$WN_DIR"
  exit 0
fi

# NLTK view of the same database: copies + lexnames (the standard WordNet 3.0 list;
# NLTK asserts line i starts with the number i and keeps the second column).
NLTK_WN="$NLTK_DATA_DIR/corpora/wordnet"
mkdir -p "$NLTK_WN"
for f in "${WN_FILES[@]}"; do
  if [[ -L "$NLTK_WN/$f" ]] || ! cmp -s "$WN_DIR/$f" "$NLTK_WN/$f"; then
    rm -f "$NLTK_WN/$f"
    cp "$WN_DIR/$f" "$NLTK_WN/$f"
  fi
done
LEXNAMES='00	adj.all	3
01	adj.pert	3
02	adv.all	4
03	noun.Tops	1
04	noun.act	1
05	noun.animal	1
06	noun.artifact	1
07	noun.attribute	1
08	noun.body	1
09	noun.cognition	1
10	noun.communication	1
11	noun.event	1
12	noun.feeling	1
13	noun.food	1
14	noun.group	1
15	noun.location	1
16	noun.motive	1
17	noun.object	1
18	noun.person	1
19	noun.phenomenon	1
20	noun.plant	1
21	noun.possession	1
22	noun.process	1
23	noun.quantity	1
24	noun.relation	1
25	noun.shape	1
26	noun.state	1
27	noun.substance	1
28	noun.time	1
29	verb.body	2
30	verb.change	2
31	verb.cognition	2
32	verb.communication	2
33	verb.competition	2
34	verb.consumption	2
35	verb.contact	2
36	verb.creation	2
37	verb.emotion	2
38	verb.motion	2
39	verb.perception	2
40	verb.possession	2
41	verb.social	2
42	verb.stative	2
43	verb.weather	2
44	adj.ppl	3'
if [[ "$(cat "$NLTK_WN/lexnames" 2>/dev/null || true)" != "$LEXNAMES" ]]; then
  printf '%s\n' "$LEXNAMES" > "$NLTK_WN/lexnames"
fi
log "NLTK data folder ready: $NLTK_DATA_DIR (NLTK_DATA=$NLTK_DATA_DIR)"

echo "$NLTK_DATA_DIR"
