#!/usr/bin/env python3
r"""Scoring 10,000 (prediction, reference) pairs with the Python reference libraries: the
Python side of scripts/bench_score.sh (`steptune score --pred --ref` is the other side).

    python scripts/bench_score.py --out DIR [--pairs 10000] [--seed 0] [--write-only]

1. Builds --pairs pairs deterministically from tests/fixtures/metric_corpus.json: pair i is
   corpus pair i mod 663; in the first pass over the corpus the texts are as they are, in
   every later pass the prediction gets one small edit drawn from random.Random(seed) (drop,
   repeat, swap or lower-case a word, drop or repeat a line, cut the text short), so the
   pairs are not 15 copies of the same 663. References are never edited.
   Writes DIR/pred.jsonl and DIR/ref.jsonl: one {"id": i, "text": ...} per line, same ids
   and order in both. Byte-identical for the same --pairs and --seed.
2. Unless --write-only, times, in this one process (time.perf_counter), over all pairs:
     rouge        rouge_score.rouge_scorer.RougeScorer(["rougeL", "rougeLsum"],
                  use_stemmer=True).score(reference, prediction)
     wordnet_load nltk's WordNet reader loading (wordnet.ensure_loaded(); NLTK_DATA must
                  name a folder with corpora/wordnet: scripts/wordnet-setup.sh --nltk-data)
     meteor       nltk.translate.meteor_score.meteor_score([ref_tokens], pred_tokens), tokens
                  re.findall(r"\w+|[^\w\s]", text) (steptune's METEOR tokenisation)
     bleu         sacrebleu.sentence_bleu(prediction, [reference]) for every pair, and
                  sacrebleu.corpus_bleu(predictions, [references]) once
   and prints one JSON line: the seconds of each, their total, the wall time of the whole
   process (imports included), peak RSS, and the mean scores (a sanity check against
   steptune's figures).
"""
import argparse
import json
import os
import random
import re
import resource
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fixtures" / "metric_corpus.json"
TOKEN = re.compile(r"\w+|[^\w\s]")


def perturb(text, rng):
    """One small edit of a prediction (deterministic given rng's state)."""
    lines = text.split("\n")
    op = rng.randrange(7)
    li = rng.randrange(len(lines))
    words = lines[li].split(" ")
    wi = rng.randrange(len(words))
    if op == 0 and len(words) > 1:  # drop a word
        del words[wi]
    elif op == 1:  # repeat a word
        words.insert(wi, words[wi])
    elif op == 2 and len(words) > 1:  # swap two neighbouring words
        j = min(wi + 1, len(words) - 1)
        i = j - 1
        words[i], words[j] = words[j], words[i]
    elif op == 3:  # lower-case a word
        words[wi] = words[wi].lower()
    elif op == 4 and len(lines) > 1:  # drop a line
        del lines[li]
        return "\n".join(lines)
    elif op == 5:  # repeat a line
        lines.insert(li, lines[li])
        return "\n".join(lines)
    elif op == 6 and len(text) > 20:  # cut short
        return text[: rng.randrange(len(text) // 2, len(text))]
    lines[li] = " ".join(words)
    return "\n".join(lines)


def build_pairs(n, seed):
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))["pairs"]
    rng = random.Random(seed)
    preds, refs = [], []
    for i in range(n):
        p = corpus[i % len(corpus)]
        pred, ref = p["prediction"], p["reference"]
        if i >= len(corpus):
            pred = perturb(pred, rng)
        preds.append(pred)
        refs.append(ref)
    return preds, refs


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for pred.jsonl and ref.jsonl")
    ap.add_argument("--pairs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-only", action="store_true", help="only write the JSONL files")
    args = ap.parse_args()

    preds, refs = build_pairs(args.pairs, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "pred.jsonl", preds)
    write_jsonl(out / "ref.jsonl", refs)
    print(f"bench_score.py: wrote {len(preds)} pairs to {out}/pred.jsonl and {out}/ref.jsonl",
          file=sys.stderr)
    if args.write_only:
        return

    if not os.environ.get("NLTK_DATA"):
        sys.exit("bench_score.py: set NLTK_DATA to the folder `scripts/wordnet-setup.sh --nltk-data` prints")

    import sacrebleu
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    seconds = {}

    t0 = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    rl = rlsum = 0.0
    for p, r in zip(preds, refs):
        s = scorer.score(r, p)
        rl += s["rougeL"].fmeasure
        rlsum += s["rougeLsum"].fmeasure
    seconds["rouge"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    wordnet.ensure_loaded()
    seconds["wordnet_load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    met = 0.0
    for p, r in zip(preds, refs):
        met += meteor_score([TOKEN.findall(r)], TOKEN.findall(p))
    seconds["meteor"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sb = 0.0
    for p, r in zip(preds, refs):
        sb += sacrebleu.sentence_bleu(p, [r]).score
    cb = sacrebleu.corpus_bleu(preds, [refs]).score
    seconds["bleu"] = time.perf_counter() - t0

    n = len(preds)
    total = sum(seconds.values())
    print(json.dumps({
        "impl": "python",
        "pairs": n,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "seconds_total": round(total, 4),
        "seconds_process": round(time.perf_counter() - T_START, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "mean": {
            "rouge_l": rl / n,
            "rouge_lsum": rlsum / n,
            "meteor": met / n,
            "sentence_bleu": sb / n,
        },
        "corpus_bleu": cb,
    }), flush=True)


if __name__ == "__main__":
    main()
