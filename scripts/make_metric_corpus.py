"""Write the shared text-metric parity corpus: tests/fixtures/metric_corpus.json.

Every text-metric fixture (ROUGE-L/Lsum and BLEU here, METEOR elsewhere) is computed on
this one corpus, so the Rust metrics are all checked on the same (prediction, reference)
pairs. The file is written once and then kept: changing it invalidates every fixture
made from it.

  {"generator": str, "pairs": [{"id": n, "prediction": str, "reference": str}, ...]}

References are real texts: the numbered procedures in data/procedures.jsonl and answers
from the Bitext customer-support CSV. Predictions are what a fine-tuned model tends to
produce from them (steps dropped, reordered, repeated, renumbered, paraphrased with
synonyms, inflected, truncated, wrapped in chatty prose, merged into one line), plus
hand-written edge cases (empty texts, punctuation only, digits, accents, CJK, emoji,
Unicode case quirks, a very long text, newline-only texts, entities and whitespace that
the tokenizers treat specially).

Run from the repository root with the pinned reference python (scripts/ref-env.sh):

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_metric_corpus.py [--shared ../shared]

Deterministic: a fixed seed, sorted inputs and no set/hash iteration order, so running it
twice gives byte-identical output.
"""

import argparse
import csv
import hashlib
import json
import platform
import random
import re
import sys
from pathlib import Path

# Same pins as scripts/ref-env.sh (the metric libraries only; this script needs none of
# them, but it belongs to the metric fixtures and must run in the same environment).
from pins import check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_metric_corpus.py", ["rouge-score", "nltk", "sacrebleu"])

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "metric_corpus.json"
PROCEDURES = REPO / "data" / "procedures.jsonl"
SEED = 20250611
N_GENERATED = 600
N_BITEXT = 160


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------

def load_procedure_outputs():
    with open(PROCEDURES, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return sorted(dict.fromkeys(r["output"] for r in rows))


def load_bitext_responses(shared, rng):
    with open(shared / "data" / "bitext-customer-support.csv", encoding="utf-8", newline="") as f:
        responses = sorted(dict.fromkeys(r["response"] for r in csv.DictReader(f)))
    # Prefer answers that contain a numbered procedure (what steptune is trained to
    # produce), plus some plain prose answers.
    numbered = [r for r in responses if re.search(r"^\s*1\. ", r, re.M)]
    prose = [r for r in responses if not re.search(r"^\s*1\. ", r, re.M)]
    return rng.sample(numbered, N_BITEXT * 3 // 4) + rng.sample(prose, N_BITEXT // 4)


# ---------------------------------------------------------------------------
# Model-like perturbations
# ---------------------------------------------------------------------------

STEP_RE = re.compile(r"^(\s*)(\d+)[.)]\s+(.*)$")

SYNONYMS = [
    ("buy", "purchase"), ("purchase", "buy"), ("tap", "press"), ("press", "tap"),
    ("choose", "select"), ("select", "choose"), ("click", "select"), ("open", "launch"),
    ("go to", "navigate to"), ("enter", "type"), ("type", "enter"), ("find", "locate"),
    ("locate", "find"), ("check", "verify"), ("confirm", "verify"), ("delete", "remove"),
    ("remove", "delete"), ("start", "begin"), ("wait", "hold on"), ("make sure", "ensure"),
    ("sign in", "log in"), ("log in", "sign in"), ("account", "profile"), ("button", "option"),
    ("screen", "page"), ("settings", "preferences"), ("help", "assist"), ("get", "obtain"),
    ("need", "require"), ("pick", "choose"), ("follow", "complete"), ("save", "store"),
    ("show", "display"), ("look for", "search for"), ("update", "upgrade"), ("want", "wish"),
]

INFLECTIONS = [
    ("open", ["opened", "opening", "opens"]), ("tap", ["tapped", "tapping", "taps"]),
    ("select", ["selected", "selecting", "selects"]), ("enter", ["entered", "entering"]),
    ("choose", ["chose", "chosen", "choosing"]), ("create", ["created", "creating", "creates"]),
    ("follow", ["followed", "following"]), ("confirm", ["confirmed", "confirming"]),
    ("go", ["going", "goes", "went"]), ("save", ["saved", "saving"]),
    ("click", ["clicked", "clicking"]), ("update", ["updated", "updating", "updates"]),
    ("type", ["typed", "typing"]), ("find", ["finding", "found"]),
    ("install", ["installed", "installation", "installing"]), ("wait", ["waiting", "waited"]),
    ("step", ["steps", "stepping"]), ("setting", ["settings", "set"]),
    ("password", ["passwords"]), ("account", ["accounts"]), ("order", ["orders", "ordered"]),
    ("try", ["tries", "tried", "trying"]), ("apply", ["applies", "applied", "application"]),
    ("verify", ["verified", "verification", "verifies"]), ("use", ["used", "using", "usage"]),
]

INTROS = [
    "Sure! Here is how you can do it:",
    "Of course. Follow these steps:",
    "Here's a step-by-step guide to help you:",
    "No problem, I can help with that.",
    "To do this, please follow the instructions below.",
]
OUTROS = [
    "Let me know if you need anything else!",
    "That's it, you're all set.",
    "If you run into any problems, contact support.",
    "Hope this helps!",
    "You should now be able to continue without issues.",
]
FILLER = [
    "This usually takes a few minutes.",
    "Make sure you have a stable internet connection before you begin.",
    "You may need to restart the app afterwards.",
    "The exact labels can differ slightly depending on your version.",
    "Note: some options are only available to administrators.",
]


def split_steps(text):
    """(prefix lines, steps, suffix lines) where steps are the numbered lines' bodies."""
    lines = text.split("\n")
    idx = [i for i, line in enumerate(lines) if STEP_RE.match(line)]
    if not idx:
        return lines, [], []
    first, last = idx[0], idx[-1]
    steps = [STEP_RE.match(lines[i]).group(3) for i in idx]
    return lines[:first], steps, lines[last + 1:]


def join_steps(prefix, steps, suffix, style="dot"):
    body = []
    for n, s in enumerate(steps, 1):
        if style == "dot":
            body.append(f"{n}. {s}")
        elif style == "paren":
            body.append(f"{n}) {s}")
        elif style == "step":
            body.append(f"Step {n}: {s}")
        elif style == "dash":
            body.append(f"- {s}")
        elif style == "none":
            body.append(s)
    return "\n".join(prefix + body + suffix)


def case_preserving_sub(text, src, dst, rng, prob):
    pat = re.compile(r"\b" + re.escape(src) + r"\b", re.I)

    def repl(m):
        if rng.random() >= prob:
            return m.group(0)
        w = m.group(0)
        if w[:1].isupper():
            return dst[:1].upper() + dst[1:]
        return dst

    return pat.sub(repl, text)


def paraphrase(text, rng):
    pairs = rng.sample(SYNONYMS, k=rng.randint(3, 10))
    for src, dst in pairs:
        text = case_preserving_sub(text, src, dst, rng, 0.8)
    return text


def inflect(text, rng):
    pairs = rng.sample(INFLECTIONS, k=rng.randint(3, 8))
    for base, forms in pairs:
        text = case_preserving_sub(text, base, rng.choice(forms), rng, 0.7)
    return text


def drop_steps(text, rng):
    prefix, steps, suffix = split_steps(text)
    if len(steps) < 2:
        return text
    k = rng.randint(1, max(1, len(steps) // 2))
    keep = sorted(rng.sample(range(len(steps)), len(steps) - k))
    return join_steps(prefix, [steps[i] for i in keep], suffix)


def reorder_steps(text, rng):
    prefix, steps, suffix = split_steps(text)
    if len(steps) < 2:
        return text
    steps = list(steps)
    if rng.random() < 0.5:
        i = rng.randrange(len(steps) - 1)
        steps[i], steps[i + 1] = steps[i + 1], steps[i]
    else:
        rng.shuffle(steps)
    return join_steps(prefix, steps, suffix)


def repeat_steps(text, rng):
    prefix, steps, suffix = split_steps(text)
    if not steps:
        return text
    i = rng.randrange(len(steps))
    steps = steps[: i + 1] + [steps[i]] * rng.randint(1, 4) + steps[i + 1:]
    return join_steps(prefix, steps, suffix)


def renumber(text, rng):
    prefix, steps, suffix = split_steps(text)
    if not steps:
        return text
    return join_steps(prefix, steps, suffix, rng.choice(["paren", "step", "dash", "none"]))


def strip_prose(text, rng):
    _, steps, _ = split_steps(text)
    return join_steps([], steps, []) if steps else text


def truncate(text, rng):
    if len(text) < 10:
        return text
    cut = rng.randint(len(text) // 5, len(text) * 9 // 10)
    if rng.random() < 0.5:  # cut at a word boundary, like a max_new_tokens stop
        sp = text.rfind(" ", 0, cut)
        cut = sp if sp > 0 else cut
    return text[:cut]


def add_prose(text, rng):
    out = text
    if rng.random() < 0.7:
        out = rng.choice(INTROS) + ("\n\n" if rng.random() < 0.6 else " ") + out
    if rng.random() < 0.7:
        out = out + ("\n\n" if rng.random() < 0.6 else " ") + rng.choice(OUTROS)
    if rng.random() < 0.4:
        lines = out.split("\n")
        i = rng.randrange(len(lines) + 1)
        lines.insert(i, rng.choice(FILLER))
        out = "\n".join(lines)
    return out


def one_line(text, rng):
    return re.sub(r"\s*\n\s*", " ", text).strip()


def change_case(text, rng):
    return text.lower() if rng.random() < 0.6 else text.upper()


def whitespace_noise(text, rng):
    choice = rng.randrange(4)
    if choice == 0:
        return text.replace("\n", "\r\n")
    if choice == 1:
        return text.replace("\n", "\n\n")
    if choice == 2:
        return "  " + text.replace(". ", ".  ") + "\n\n"
    return text.replace("\n", " \n\t")


PERTURBATIONS = [
    ("drop", drop_steps), ("reorder", reorder_steps), ("repeat", repeat_steps),
    ("renumber", renumber), ("strip_prose", strip_prose), ("paraphrase", paraphrase),
    ("inflect", inflect), ("truncate", truncate), ("prose", add_prose),
    ("one_line", one_line), ("case", change_case), ("whitespace", whitespace_noise),
]
WEIGHTS = [3, 2, 1, 2, 1, 4, 4, 2, 3, 1, 1, 1]


def model_like(reference, others, rng):
    r = rng.random()
    if r < 0.04:
        return reference  # a perfect copy
    if r < 0.10:
        return rng.choice(others)  # the answer to a different request
    text = reference
    k = rng.choice([1, 1, 2, 2, 3, 4])
    names = []
    for _ in range(k):
        name, fn = rng.choices(PERTURBATIONS, weights=WEIGHTS)[0]
        names.append(name)
        text = fn(text, rng)
    return text


# ---------------------------------------------------------------------------
# Edge cases (prediction, reference)
# ---------------------------------------------------------------------------

def edge_cases(procs):
    p0, p1 = procs[0], procs[1]
    long_ref = "\n".join(procs[i] for i in range(12))
    long_pred = "\n".join(procs[i] for i in range(1, 13))
    very_long_line = " ".join(procs[i].replace("\n", " ") for i in range(20))
    everything = "\n\n".join(procs)
    return [
        ("", p0),
        (p0, ""),
        ("", ""),
        ("Tap", "Tap"),
        ("Tap", "Press"),
        ("open", "1. Open the app."),
        ("...!!! ???", p0),
        ("...!!! ???", "---"),
        ("1. 2. 3.", "1. 2. 3. 4."),
        ("12345 678", "12345 6789"),
        ("Call 1-800-555-0199 within 3-4 days; pay $1,000.50 or 2.5%.",
         "Call 1-800-555-0199 within 3–4 days, pay $1,000.50 or 2,5 %."),
        ("Café naïve résumé — Schritt für Schritt öffnen", "Cafe naive resume, Schritt fur Schritt offnen"),
        ("Ouvrez l'application et sélectionnez « Paramètres ».",
         "Ouvrez l’application puis sélectionnez \"Paramètres\"."),
        ("打开应用程序，然后点击设置。", "打开应用，点击“设置”。"),
        ("アプリを開いて設定をタップします", "1. アプリを開く\n2. 設定をタップ"),
        ("🙂 Tap 👍 then 🔒 Lock", "Tap 👍 then Lock 🔒"),
        ("👨‍👩‍👧 family plan 🇺🇸", "family plan"),
        ("İstanbul KELVIN Kelvin sign \u212a ǅ ß straße ﬁnal", "istanbul kelvin k dž ss strasse final"),
        ("ΟΔΟΣ ΟΔΗΓΙΕΣ Σ", "οδος οδηγιες σ"),
        ("e\u0301tape d\u00e9tape", "étape detape"),
        ("ＡＢＣ full-width １２３", "ABC full-width 123"),
        ("zero\u200bwidth no\u00a0break thin\u2009space", "zero width no break thin space"),
        ("sep\x1cfile\x1dgroup\x1erecord\x1funit", "sep file group record unit"),
        ("tab\tseparated\vvertical\fform", "tab separated vertical form"),
        ("line\u2028separator\u2029para\x85nel", "line separator para nel"),
        ("Tom &amp; Jerry &lt;b&gt; &quot;quoted&quot; &amp;quot;", "Tom & Jerry <b> \"quoted\" &quot;"),
        ("text <skipped> more", "text more"),
        ("hyphen-\nated word-\n", "hyphenated word"),
        ("Don't stop; it's the user's choice (or isn't it?)", "Do not stop, it is the users choice"),
        ("Visit https://example.com/help?id=42&x=y or email help@example.com.",
         "Visit example.com/help or email help@example.com"),
        ("{{Website Name}} > {{Order Details}} > [Cancel]", "{{Website Name}} {{Order Details}} {{Cancel Order}}"),
        ("a.b,c 1.5 1,5 x. y, .z ,w 3. 4, 5-6 a-b", "a . b , c 1.5 1,5"),
        ("end with period .", "end with period."),
        (p0, p0),
        (p1, p1),
        (p0.upper(), p0),
        (p0.lower(), p0.upper()),
        (p0.replace("\n", " "), p0),
        (p0, p0.replace("\n", " ")),
        (p0.replace("\n", "\r\n"), p0),
        ("\n", "\n"),
        ("\n\n\n", p0),
        (p0, "\n\n"),
        ("   ", "   "),
        (" \n \n ", p0),
        ("\n1. Open the app.\n\n\n2. Tap Settings.\n", "1. Open the app.\n2. Tap Settings."),
        ("Tap Settings\n\nTap Settings\nTap Settings", "Tap Settings"),
        ("the the the the the the the", "the cat sat on the mat"),
        ("running runs ran runner generously caresses ponies ties skies dying lying",
         "run run run run generous caress poni tie sky die lie"),
        ("relational conditional rational valenci hesitanci digitizer conformabli",
         "relate condition rational valence hesitance digitize conformable"),
        ("feed agreed plastered bled motoring sing conflated troubled sized hopping",
         "feed agree plaster bled motor sing conflate trouble size hop"),
        ("proceed exceed succeed news innings outings cannings howe",
         "proceeding exceeding succeeding new inning outing canning how"),
        ("Supercalifragilisticexpialidocious" * 20, "supercalifragilisticexpialidocious"),
        ("yyyyyyyyyyyyyyyyyyyyyyyy yyy", "yyyyyyyyyyyyyyyyyyyyyyyy"),
        ("x", "y"),
        ("a b c d", "d c b a"),
        ("a b c d e f g", "a b c d e f g h"),
        ("The quick brown fox jumps over the lazy dog",
         "The quick brown dog jumps on the log."),
        (long_pred, long_ref),
        (very_long_line, long_ref),
        (long_ref, very_long_line),
        (everything, long_ref),
        (everything.replace("\n", " "), everything),
    ]


def generator(shared):
    # No paths, dates or host names: the string must be the same on every machine.
    return (
        f"scripts/make_metric_corpus.py; python {platform.python_version()}; seed {SEED}; "
        f"data/procedures.jsonl sha256 {sha256(PROCEDURES)}; "
        f"bitext-customer-support.csv sha256 "
        f"{sha256(shared / 'data' / 'bitext-customer-support.csv')}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="shared data directory (default: ../shared relative to the repo root)")
    args = ap.parse_args()
    shared = args.shared.resolve()

    rng = random.Random(SEED)
    procs = load_procedure_outputs()
    bitext = load_bitext_responses(shared, rng)
    references = procs + bitext

    pairs = []
    for pred, ref in edge_cases(procs):
        pairs.append((pred, ref))
    for i in range(N_GENERATED):
        # Every procedure at least a few times, then Bitext answers.
        ref = references[i % len(references)] if i < 2 * len(procs) else rng.choice(references)
        others = procs if ref in procs else bitext
        others = [o for o in others if o != ref]
        pairs.append((model_like(ref, others, rng), ref))

    out = {
        "generator": generator(shared),
        "pairs": [{"id": n, "prediction": p, "reference": r} for n, (p, r) in enumerate(pairs)],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, ensure_ascii=False, indent=1) + "\n"
    OUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {OUT.relative_to(REPO)} ({len(pairs)} pairs, {len(text.encode('utf-8'))} bytes)")


if __name__ == "__main__":
    main()
