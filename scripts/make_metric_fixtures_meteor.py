r"""Generate the METEOR reference fixture for steptune's Rust tests (tests/metrics_meteor.rs).

Writes tests/fixtures/meteor.json (relative to the repository root) with:

  pairs       for every pair of tests/fixtures/metric_corpus.json: the tokens of the
              prediction (hypothesis) and of the reference, tokenised with TOKEN_PATTERN
              (the tokenisation steptune applies, src/eval/meteor.rs `tokenize`), and
              nltk.translate.meteor_score.meteor_score([ref_tokens], hyp_tokens), as a
              number ("meteor") and as repr() ("meteor_repr", exact);
  multi       multi-reference cases (meteor_score(references, hypothesis), the max over
              references): hand-written ones plus cases drawn from the corpus;
  tokenize    extra tokenisation cases: every distinct character of the corpus alone and
              between letters, and a few hand-written strings;
  char_classes  the code point ranges Python's `re` counts as \w and as \s (all of
              Unicode), so the Rust tokeniser's character classes are checked everywhere;
  lowercase   str.lower() of every distinct corpus token whose lower case differs;
  stems       PorterStemmer().stem(w) of every distinct lower-cased corpus token (what
              METEOR's stem stage compares);
  synonyms    for >= 2000 words, the synonym set METEOR's WordNet stage builds for a
              hypothesis word:
                  set(l.name() for s in wordnet.synsets(w) for l in s.lemmas()
                      if "_" not in l.name()) | {w}
              The words: the distinct lower-cased corpus tokens and their Porter stems
              (the synonym stage sees stems), some corpus tokens as written (upper case),
              the most frequent single-word WordNet lemmas (by tagsense_cnt), inflected
              forms from WordNet's exception lists and rule-inflected forms of common
              lemmas (to exercise morphy);
  wordnet_files  the size of every WordNet file used, so the Rust test can tell when it
              reads a different database than the one the fixture was made with.

NLTK reads WordNet from $NLTK_DATA/corpora/wordnet, which scripts/wordnet-setup.sh builds
from Debian's wordnet-base / wordnet-sense-index packages (the same files the Rust code
reads from /usr/share/wordnet) plus the `lexnames` file. Run from the repository root,
with the pinned reference environment:

    scripts/wordnet-setup.sh --nltk-data
    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_metric_fixtures_meteor.py

Environment: STEPTUNE_NLTK_DATA (default $HOME/.cache/steptune/nltk_data), the folder
wordnet-setup.sh prints with --nltk-data; STEPTUNE_WORDNET (default /usr/share/wordnet).

The output is deterministic: running it twice gives byte-identical files.
"""

import hashlib
import json
import os
import platform
import random
import re
import sys
import unicodedata
from pathlib import Path

from pins import PINS, check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_metric_fixtures_meteor.py", ["nltk"])

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "metric_corpus.json"
OUT = REPO / "tests" / "fixtures" / "meteor.json"
NLTK_DATA = Path(
    os.environ.get("STEPTUNE_NLTK_DATA") or Path.home() / ".cache" / "steptune" / "nltk_data"
)
WORDNET_DIR = Path(os.environ.get("STEPTUNE_WORDNET") or "/usr/share/wordnet")
NLTK_WN = NLTK_DATA / "corpora" / "wordnet"
WN_FILES = [
    f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")
] + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]

if not (NLTK_WN / "lexnames").is_file() or not (NLTK_WN / "data.noun").is_file():
    sys.exit(
        f"make_metric_fixtures_meteor.py: no NLTK WordNet in {NLTK_WN}; "
        "run scripts/wordnet-setup.sh --nltk-data first (or set STEPTUNE_NLTK_DATA)."
    )
for _f in WN_FILES:
    if (NLTK_WN / _f).read_bytes() != (WORDNET_DIR / _f).read_bytes():
        sys.exit(
            f"make_metric_fixtures_meteor.py: {NLTK_WN / _f} differs from {WORDNET_DIR / _f}; "
            "run scripts/wordnet-setup.sh --nltk-data again so NLTK and steptune read the same WordNet."
        )

# Must be set before nltk is imported (nltk.data.path is built at import time).
os.environ["NLTK_DATA"] = str(NLTK_DATA)

import nltk  # noqa: E402  (imported after the checks on purpose)
from nltk.corpus import wordnet  # noqa: E402
from nltk.stem.porter import PorterStemmer  # noqa: E402
from nltk.translate.meteor_score import meteor_score, single_meteor_score  # noqa: E402

assert nltk.__version__ == PINS["nltk"], nltk.__version__

# The tokenisation steptune applies before METEOR (src/eval/meteor.rs `tokenize`).
TOKEN_PATTERN = r"\w+|[^\w\s]"
TOKEN_RE = re.compile(TOKEN_PATTERN)


def tokenize(text):
    return TOKEN_RE.findall(text)


STEMMER = PorterStemmer()


def synonyms(word):
    """Exactly the set nltk's _enum_wordnetsyn_match builds for a hypothesis word."""
    return {
        lemma.name()
        for synset in wordnet.synsets(word)
        for lemma in synset.lemmas()
        if lemma.name().find("_") < 0
    } | {word}


def score_fields(score):
    """The score as a JSON number, and as Python's repr: the shortest string that reads
    back as exactly this double (serde_json's default float parser may be off by an ulp,
    Rust's str::parse is not)."""
    return {"meteor": score, "meteor_repr": repr(score)}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def generator():
    # No paths, dates or host names: the string must be the same on every machine.
    return (
        "scripts/make_metric_fixtures_meteor.py; "
        f"python {platform.python_version()}; nltk=={nltk.__version__}; "
        f"WordNet {wordnet.get_version()} (Debian wordnet-base), data.noun sha256 "
        f"{sha256(WORDNET_DIR / 'data.noun')}; metric_corpus.json sha256 {sha256(CORPUS)}"
    )


HAND_MULTI = [
    # nltk's doctest example
    (
        "nltk_doctest_h1",
        "It is a guide to action which ensures that the military always obeys the commands of the party",
        [
            "It is a guide to action that ensures that the military will forever heed Party commands",
            "It is the guiding principle which guarantees the military forces always being under the command of the Party",
            "It is the practical guide for the army always to heed the directions of the party",
        ],
    ),
    (
        "nltk_doctest_h2",
        "It is to insure the troops forever hearing the activity guidebook that party direct",
        [
            "It is a guide to action that ensures that the military will forever heed Party commands",
            "It is the guiding principle which guarantees the military forces always being under the command of the Party",
            "It is the practical guide for the army always to heed the directions of the party",
        ],
    ),
    ("no_match", "non matching hypothesis", ["this is a cat", "another one"]),
    ("empty_hypothesis", "", ["1. Open the app.", "2. Tap Settings."]),
    ("one_empty_reference", "Open the app and tap Settings.", ["", "Open the application, then tap Settings."]),
    ("all_empty_references", "Open the app.", ["", ""]),
    ("case_only", "OPEN THE APP", ["open the app", "Open The App"]),
    ("repeated_words", "the the the cat the", ["the cat the the", "cat cat the"]),
    ("stems", "1. Preheating the ovens. 2. Baked cookies carefully.", ["1. Preheat the oven.\n2. Bake the cookie carefully.", "Bake cookies."]),
    ("synonyms", "Choose a large pan and begin to heat it.", ["Pick a big pan and start heating it.", "Select a large skillet; start to warm it."]),
    ("synonym_vs_exact_order", "buy purchase buy", ["purchase buy purchase", "buy"]),
    ("ties_first_max", "press the button", ["press the button", "press the button"]),
    ("unicode", "Öffne die App — tippe auf „Einstellungen“ 🙂", ["Öffne die App und tippe auf Einstellungen.", "ÖFFNE die app"]),
    ("single_reference", "Restart the router, then wait two minutes.", ["Restart your router and wait 2 minutes."]),
]

HAND_TOKENIZE = [
    "1. Preheat the oven to 180°C.",
    "  don't--stop!! snake_case  ",
    "café naïve 2nd\tline\nÜber",
    "a\u001cb\u001dc\u001ed\u001ff\u0085g\u00a0h\u2028i\u2029j\u200bk\u200dl",
    "İstanbul ΟΔΟΣ ǅemal Kelvin ﬁle ＡＢＣ１２３",
    "e\u0301te\u0301 👩\u200d👧 🇺🇸",
    "",
    " \t\r\n",
    "Step 1: open Settings > Wi‑Fi (2.4 GHz); then… done.",
]


def code_point_ranges(pattern):
    """[[first, last], ...]: the code points (surrogates excluded) `pattern` matches."""
    rx = re.compile(pattern)
    ranges = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or not rx.match(chr(cp)):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return ranges


def main():
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    pairs_in = corpus["pairs"]
    assert len(pairs_in) >= 500, len(pairs_in)

    pairs = []
    all_tokens = set()
    for p in pairs_in:
        hyp = tokenize(p["prediction"])
        ref = tokenize(p["reference"])
        all_tokens.update(hyp)
        all_tokens.update(ref)
        score = meteor_score([ref], hyp)
        assert score == single_meteor_score(ref, hyp)
        pairs.append({"id": p["id"], "hypothesis": hyp, "reference": ref, **score_fields(score)})

    # Multi-reference cases: hand-written, then drawn from the corpus (the pair's own
    # reference among 1-3 others, or only others), seeded.
    multi = []
    for name, hyp_text, ref_texts in HAND_MULTI:
        hyp = tokenize(hyp_text)
        refs = [tokenize(r) for r in ref_texts]
        multi.append({"name": name, "hypothesis": hyp, "references": refs, **score_fields(meteor_score(refs, hyp))})
    rng = random.Random(20250611)
    nonempty = [p for p in pairs if p["hypothesis"] and p["reference"]]
    for k in range(60):
        base = rng.choice(nonempty)
        others = rng.sample(nonempty, rng.randint(1, 3))
        refs = [o["reference"] for o in others]
        if k % 3 != 2:  # two cases in three include the pair's own reference
            refs.insert(rng.randint(0, len(refs)), base["reference"])
        hyp = base["hypothesis"]
        multi.append({
            "name": f"corpus_{k:02d}_pair{base['id']}",
            "hypothesis": hyp,
            "references": refs,
            **score_fields(meteor_score(refs, hyp)),
        })

    # Tokenisation: every distinct character of the corpus, alone and inside a word.
    corpus_chars = sorted(set("".join(p["prediction"] + p["reference"] for p in pairs_in)))
    tok_cases = []
    for text in HAND_TOKENIZE + corpus_chars + [f"ab{c}cd" for c in corpus_chars]:
        tok_cases.append({"text": text, "tokens": tokenize(text)})

    lowered = sorted({t.lower() for t in all_tokens})
    lowercase = [[t, t.lower()] for t in sorted(all_tokens) if t.lower() != t]
    stems = [[w, STEMMER.stem(w)] for w in lowered]

    # Synonym word list.
    words = set(lowered)
    words.update(s for _, s in stems)
    words.update(sorted(t for t in all_tokens if t != t.lower())[:150])  # as written
    index_lemmas = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET_DIR / f"index.{pos}", encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                fields = line.split()
                n_ptr = int(fields[3])
                tagsense_cnt = int(fields[5 + n_ptr])
                if "_" not in fields[0]:
                    index_lemmas.append((-tagsense_cnt, fields[0]))
    index_lemmas.sort()
    common = []
    for _, lemma in index_lemmas:
        if lemma not in common:
            common.append(lemma)
        if len(common) == 1500:
            break
    words.update(common)
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET_DIR / f"{pos}.exc", encoding="utf-8") as f:
            forms = sorted(line.split()[0] for line in f if line.strip())
        words.update(forms[::4])
    for lemma in common[:300]:
        for suffix in ("s", "es", "ies", "ves", "ed", "ing", "er", "est", "men"):
            words.add(lemma + suffix)
    words.update(["", "ice cream", "Party", "DNA", "U.S.", "a-b", "ł", "naïve"])
    words = sorted(words)
    syn = [{"word": w, "synonyms": sorted(synonyms(w))} for w in words]
    assert len(syn) >= 2000, len(syn)

    out = {
        "generator": generator(),
        "params": {"alpha": 0.9, "beta": 3.0, "gamma": 0.5, "preprocess": "str.lower", "token_pattern": TOKEN_PATTERN},
        "wordnet_files": {f: (WORDNET_DIR / f).stat().st_size for f in WN_FILES},
        "pairs": pairs,
        "multi": multi,
        "tokenize": tok_cases,
        "char_classes": {
            "unicode_version": unicodedata.unidata_version,
            "word": code_point_ranges(r"\w"),
            "space": code_point_ranges(r"\s"),
        },
        "lowercase": lowercase,
        "stems": stems,
        "synonyms": syn,
    }
    write_json(OUT, out)
    print(
        f"{len(pairs)} pairs, {len(multi)} multi-reference cases, {len(tok_cases)} tokenize "
        f"cases, {len(stems)} stems, {len(syn)} synonym sets"
    )


def write_json(path, obj):
    """One case per line: compact but diff-friendly."""
    lines = ["{"]
    keys = list(obj)
    for i, key in enumerate(keys):
        comma = "," if i + 1 < len(keys) else ""
        value = obj[key]
        if isinstance(value, list):
            lines.append(f" {json.dumps(key)}: [")
            for j, item in enumerate(value):
                item_comma = "," if j + 1 < len(value) else ""
                lines.append("  " + json.dumps(item, ensure_ascii=False) + item_comma)
            lines.append(" ]" + comma)
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {path.relative_to(REPO)} ({len(text.encode('utf-8'))} bytes)")


if __name__ == "__main__":
    main()
