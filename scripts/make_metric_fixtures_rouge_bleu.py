"""Reference fixtures for steptune's Porter stemmer, ROUGE-L/Lsum and BLEU (src/eval/).

Writes, relative to the repository root:

  tests/fixtures/porter_nltk.json
      {"generator", "words": [[word, stem], ...]}: NLTK's PorterStemmer() (the
      NLTK_EXTENSIONS mode that rouge-score and NLTK's meteor_score both use) on >10,000
      distinct words: the vocabulary of data/procedures.jsonl and the Bitext CSV, WordNet
      lemmas and irregular forms (Debian's /usr/share/wordnet, if installed), every rule's
      suffixes on assorted stems, all short strings over a small alphabet, capitalised and
      upper-case forms, digits and non-ASCII words.

  tests/fixtures/rouge.json
      rouge-score RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False/True) on every
      pair of tests/fixtures/metric_corpus.json (scorer.score(reference, prediction)),
      plus DefaultTokenizer tokens of the corpus's short texts.

  tests/fixtures/bleu.json
      sacrebleu sentence_bleu on every pair (one reference, and two references), and
      corpus_bleu over all pairs and several subsets with one and two reference streams,
      plus Tokenizer13a output for the corpus's short texts.

Floats are written as strings holding Python's repr (shortest round-trip form): Rust's
str::parse::<f64> reads them back exactly, while serde_json's default float parser may
be one ulp off.

Run after scripts/make_metric_corpus.py, from the repository root, with the pinned
reference python (scripts/ref-env.sh):

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_metric_fixtures_rouge_bleu.py

Deterministic: running it twice gives byte-identical files (on a machine with the same
WordNet package, which the generator string records).
"""

import hashlib
import itertools
import json
import platform
import random
import re
import sys
from importlib.metadata import version
from pathlib import Path

# Same pins as scripts/ref-env.sh.
from pins import PINS, check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_metric_fixtures_rouge_bleu.py", ["rouge-score", "nltk", "sacrebleu"])

import nltk  # noqa: E402  (imported after the version check on purpose)
import sacrebleu  # noqa: E402
from nltk.stem import porter  # noqa: E402
from rouge_score import rouge_scorer, tokenizers  # noqa: E402
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a  # noqa: E402

assert nltk.__version__ == PINS["nltk"], nltk.__version__
assert sacrebleu.__version__ == PINS["sacrebleu"], sacrebleu.__version__

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
CORPUS = FIXTURES / "metric_corpus.json"
PROCEDURES = REPO / "data" / "procedures.jsonl"
SHARED = REPO.parent / "shared"
BITEXT = SHARED / "data" / "bitext-customer-support.csv"
WORDNET = Path("/usr/share/wordnet")
SEED = 1234
SHORT_TEXT = 400  # texts up to this many characters also get token fixtures


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def f(x):
    """A float as the string of Python's repr (exact round trip)."""
    return repr(float(x))


def write_json(path, obj):
    """Top-level keys one per line and every list element on its own compact line: small
    files that still diff line by line."""
    parts = []
    for key, val in obj.items():
        if isinstance(val, list):
            items = ",\n".join(json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in val)
            parts.append(f"{json.dumps(key)}: [\n{items}\n]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(val, ensure_ascii=False)}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    assert json.loads(text) == obj
    path.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {path.relative_to(REPO)} ({len(text.encode('utf-8'))} bytes)")


def base_generator():
    # No paths, dates or host names: the string must be the same on every machine.
    return (f"scripts/make_metric_fixtures_rouge_bleu.py; python {platform.python_version()}; "
            f"rouge-score=={version('rouge-score')} nltk=={version('nltk')} "
            f"sacrebleu=={version('sacrebleu')}; metric_corpus.json sha256 {sha256(CORPUS)}")


# ---------------------------------------------------------------------------
# Porter
# ---------------------------------------------------------------------------

def check_stemmer_identity():
    """rouge-score (and NLTK's METEOR) must stem with exactly PorterStemmer() in its
    default NLTK_EXTENSIONS mode; otherwise porter_nltk.json tests the wrong thing."""
    stemmer = tokenizers.DefaultTokenizer(use_stemmer=True)._stemmer
    assert type(stemmer) is porter.PorterStemmer, type(stemmer)
    assert stemmer.mode == porter.PorterStemmer.NLTK_EXTENSIONS, stemmer.mode
    import inspect

    from nltk.translate import meteor_score
    default = inspect.signature(meteor_score.single_meteor_score).parameters["stemmer"].default
    assert type(default) is porter.PorterStemmer, type(default)
    assert default.mode == porter.PorterStemmer.NLTK_EXTENSIONS, default.mode
    return stemmer


def corpus_words():
    import csv
    words = []
    with open(BITEXT, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            words += re.findall(r"\w+", r["instruction"] + " " + r["response"])
    with open(PROCEDURES, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                words += re.findall(r"\w+", r["prompt"] + " " + r["output"])
    return sorted(dict.fromkeys(words))


def wordnet_words(rng):
    """Lemmas from index.* (sampled) and all irregular forms from *.exc."""
    if not (WORDNET / "index.noun").is_file():
        return [], "no wordnet"
    lemmas = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"index.{pos}", encoding="utf-8") as fh:
            lemmas[pos] = [ln.split(" ", 1)[0] for ln in fh if ln.strip() and not ln.startswith(" ")]
    exc = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"{pos}.exc", encoding="utf-8") as fh:
            for ln in fh:
                exc += ln.split()
    words = lemmas["verb"] + lemmas["adv"]
    words += rng.sample(lemmas["adj"], 6000) + rng.sample(lemmas["noun"], 9000)
    words += exc
    # Collocations are joined with '_' in WordNet; keep the parts as words too.
    out = []
    for w in words:
        out += [w] + w.split("_")
    files = sorted(WORDNET.glob("index.*")) + sorted(WORDNET.glob("*.exc"))
    digest = hashlib.sha256(b"".join(sha256(p).encode() for p in files)).hexdigest()
    return out, f"wordnet files sha256 {digest}"


SUFFIXES = """ational tional enci anci izer bli abli alli entli eli ousli ization ation ator alism
iveness fulness ousness aliti iviti biliti fulli logi icate ative alize iciti ical ful ness al
ance ence er ic able ible ant ement ment ent ion sion tion ou ism ate iti ous ive ize e ll
sses ies ss s eed ed ing ied y at bl iz ated ating izing bled led ling lled lling ies ied ying
ement ements ations ically fully lessly nesses""".split()
STEMS = """ b tr a ra hop fil conf relat condi gener valenc y sy toy happ contr geo archaeo ab
sk d l t fe agr plaster motor troubl siz fail cr bo yy syzyg oat tree ivy orrer privat
electr adjust adopt homolog commun activ angular effect bowdler reviv allow infer airlin
gyroscop defens irrit replac depend probat ceas controll ro feu""".split() + [""]
TRICKY = """a I i y Y by BY sky skies Skies SKY dying lying tying news innings inning outings
outing cannings canning howe proceed exceed succeed proceeding exceeded succeeds
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated
troubled sized hopping tanned falling hissing fizzed failing filing happy relational
conditional rational valenci hesitanci digitizer conformabli radicalli differentli vileli
analogousli vietnamization predication operator feudalism decisiveness hopefulness
callousness formaliti sensitiviti sensibiliti triplicate formative formalize electriciti
electrical hopeful goodness revival allowance inference airliner gyroscopic adjustable
defensible irritant replacement adjustment dependent adoption homologou communism activate
angulariti homologous effective bowdlerize probate rate cease controll roll generously
generalization geology theology archaeology dies died flies spied spies cries tried dyed
eyed eed ied ing ed ies sses ss s ys yy yyy yyyy yyyyy yyying yay yoyo toy toys enjoy
enjoying enjoyment syzygy quickly daily dryly shyly sly slyly ally rally really fully
fulli hopefulli agreed disagreed freed deed need needed seeded bleed proceeded
a*ded b*ding *d x*d a*d *ded 2nd 3rd 1990s covid19 4ing 12ing 100s mp3 h2o x86_64 3ds
tap taps tapped tapping press pressed presses pressing choose chose chosen choosing select
selected selecting selection selections open opened opening opens opener buy buys bought
buying purchase purchased purchases purchasing purchaser
Running RUNNING Ran Caresses PONIES TIES Happy HAPPILY Relational GENERALIZATION
café Café CAFÉ naïve naïveté résumé Résumé Über über straße STRASSE İstanbul İ İİ İİİ ıi
ΟΔΟΣ Σ ΣΣ σς ΣΟΦΙΑΣ οδος ǅungla ǄUNGLA ǈ ǋ ﬁle ﬁnal ﬂing Kelvin Ωmega Å
Привет ПРИВЕТ мама 日本語 打开应用程序 🙂 🙂🙂🙂 👍ing e\u0301tape étape ＡＢＣ ａｂｃing
\ua7cbing ab\ua7cb\ua7cb ΟΣ\ua7cbΟΣ""".split()


def porter_words(rng):
    words = corpus_words()
    n_corpus = len(words)
    wn, wn_note = wordnet_words(rng)
    words += wn
    words += [s + x for s in STEMS for x in SUFFIXES]
    alphabet = "aeiouybcdlstz"
    for n in (1, 2, 3):
        words += ["".join(p) for p in itertools.product(alphabet, repeat=n)]
    for w in rng.sample(words, 800):
        words += [w.capitalize(), w.upper()]
    words += TRICKY
    words += ["y" * 200, "ational" * 30, "sses" * 50 + "ing", "a" * 300 + "lli"]
    words = sorted(dict.fromkeys(w for w in words if w))
    return words, n_corpus, wn_note


def make_porter(rng):
    stemmer = check_stemmer_identity()
    words, n_corpus, wn_note = porter_words(rng)
    assert len(words) >= 10000, len(words)
    pairs = [[w, stemmer.stem(w)] for w in words]
    # rouge-score's tokenizer stems exactly through this object: check it on the plain
    # lowercase ASCII words it can see (tokens of more than 3 characters get stemmed).
    from rouge_score import tokenize as rtok
    for w, s in pairs:
        if re.fullmatch(r"[a-z0-9]{4,}", w):
            assert rtok.tokenize(w, stemmer) == ([s] if re.fullmatch(r"[a-z0-9]+", s) else []), w
    write_json(FIXTURES / "porter_nltk.json", {
        "generator": (f"{base_generator()}; PorterStemmer() mode {stemmer.mode}; "
                      f"{n_corpus} corpus words; {wn_note}"),
        "words": pairs,
    })


# ---------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------

def score3(s):
    return {"precision": f(s.precision), "recall": f(s.recall), "fmeasure": f(s.fmeasure)}


def make_rouge(pairs):
    scorers = {
        "nostem": rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False),
        "stem": rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True),
    }
    toks = {k: tokenizers.DefaultTokenizer(use_stemmer=(k == "stem")) for k in scorers}
    out_pairs, out_tokens = [], []
    for p in pairs:
        row = {"id": p["id"]}
        for k, sc in scorers.items():
            # rouge-score's argument order: (target, prediction).
            r = sc.score(p["reference"], p["prediction"])
            row[k] = {"rougeL": score3(r["rougeL"]), "rougeLsum": score3(r["rougeLsum"])}
        out_pairs.append(row)
        for field in ("prediction", "reference"):
            text = p[field]
            if len(text) <= SHORT_TEXT:
                out_tokens.append({"id": p["id"], "field": field,
                                   "nostem": toks["nostem"].tokenize(text),
                                   "stem": toks["stem"].tokenize(text)})
    write_json(FIXTURES / "rouge.json", {
        "generator": base_generator() + "; RougeScorer(['rougeL','rougeLsum'], use_stemmer=False|True)",
        "pairs": out_pairs,
        "tokens": out_tokens,
    })


# ---------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------

def bleu_dict(b):
    return {"score": f(b.score), "counts": list(b.counts), "totals": list(b.totals),
            "precisions": [f(x) for x in b.precisions], "bp": f(b.bp),
            "sys_len": b.sys_len, "ref_len": b.ref_len}


def second_references(pairs):
    """A second reference per pair: the prediction of another pair made from the same
    reference (a paraphrase of it), else the pair's own reference again."""
    by_ref = {}
    for p in pairs:
        by_ref.setdefault(p["reference"], []).append(p["id"])
    alt = []
    for p in pairs:
        ids = by_ref[p["reference"]]
        others = [i for i in ids if i != p["id"]]
        if others:
            nxt = next((i for i in others if i > p["id"]), others[0])
            alt.append(["prediction", nxt])
        else:
            alt.append(["reference", p["id"]])
    return alt


def make_bleu(pairs, rng):
    by_id = {p["id"]: p for p in pairs}
    text = lambda item: by_id[item[1]][item[0]]  # noqa: E731
    alt = second_references(pairs)

    sentence, sentence2 = [], []
    for p, a in zip(pairs, alt):
        b = sacrebleu.sentence_bleu(p["prediction"], [p["reference"]])
        sentence.append({"id": p["id"], **bleu_dict(b)})
        b2 = sacrebleu.sentence_bleu(p["prediction"], [p["reference"], text(a)])
        sentence2.append({"id": p["id"], "ref2": a, **bleu_dict(b2)})

    ids_all = [p["id"] for p in pairs]
    ntok = lambda s: len(Tokenizer13a()(s.rstrip()).split())  # noqa: E731
    subsets = {
        "all": ids_all,
        "first50": ids_all[:50],
        "edge_and_short": [p["id"] for p in pairs if len(p["prediction"]) <= 80],
        "nonempty": [p["id"] for p in pairs if p["prediction"].strip() and p["reference"].strip()],
        "shorter_hyp": [p["id"] for p in pairs if ntok(p["prediction"]) < ntok(p["reference"])],
        "random100": sorted(rng.sample(ids_all, 100)),
        "empty_hyps": [p["id"] for p in pairs if not p["prediction"].strip()],
        "single_pair_0": ids_all[:1],
        "tiny_no_4grams": [p["id"] for p in pairs
                           if 0 < ntok(p["prediction"]) <= 3 and ntok(p["reference"]) > 0],
    }
    corpus = []
    for name, ids in subsets.items():
        assert ids, name
        hyps = [by_id[i]["prediction"] for i in ids]
        stream1 = [["reference", i] for i in ids]
        stream2 = [alt[i] for i in ids]
        for streams in ([stream1], [stream1, stream2]):
            refs = [[text(item) for item in s] for s in streams]
            b = sacrebleu.corpus_bleu(hyps, refs)
            corpus.append({"name": f"{name}/{len(streams)}ref", "hyp_ids": ids,
                           "ref_streams": streams, **bleu_dict(b)})

    tok = Tokenizer13a()
    tokens = []
    for p in pairs:
        for field in ("prediction", "reference"):
            if len(p[field]) <= SHORT_TEXT:
                # BLEU's _preprocess_segment: rstrip, then 13a.
                tokens.append({"id": p["id"], "field": field, "tok13a": tok(p[field].rstrip())})

    write_json(FIXTURES / "bleu.json", {
        "generator": base_generator() + "; sacrebleu.sentence_bleu / corpus_bleu defaults (13a, exp)",
        "sentence": sentence,
        "sentence_2refs": sentence2,
        "corpus": corpus,
        "tokens": tokens,
    })


def main():
    rng = random.Random(SEED)
    pairs = json.loads(CORPUS.read_text(encoding="utf-8"))["pairs"]
    assert [p["id"] for p in pairs] == list(range(len(pairs)))
    make_porter(rng)
    make_rouge(pairs)
    make_bleu(pairs, rng)


if __name__ == "__main__":
    main()
