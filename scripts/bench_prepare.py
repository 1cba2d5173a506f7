"""Python baseline for steptune's data-preparation benchmark.

Does what steptune's data stage does for a Qwen3 SFT run on the Bitext customer-support
CSV, the way a transformers user would: for every row, build
[user=instruction, assistant=response], render it with the Qwen3 chat template
(enable_thinking=False), tokenize all texts in one batched call, render and tokenize the
prompt-only texts (add_generation_prompt=True) to get the prompt lengths, and from these
the label lengths (tokens the loss is computed on).

Prints one JSON line:
  {"rows", "seconds_import", "seconds_load_csv", "seconds_load_tokenizer",
   "seconds_template_and_tokenize", "seconds_total", "peak_rss_mib", "total_tokens",
   "total_label_tokens", "cpu_count"}
seconds_total runs from the start of this script (before importing transformers) to the
end of the work; peak_rss_mib is ru_maxrss of this single process. The fast tokenizer's
batched encode may use several threads (it is still one process).

Usage (pinned reference venv, see scripts/ref-env.sh), from the repository root:
    $VENV_PY scripts/bench_prepare.py ../shared/data/bitext-customer-support.csv \
        [--tokenizer ../shared/models/qwen3-8b]
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

from transformers import AutoTokenizer  # noqa: E402

T_IMPORT = time.perf_counter()

REPO = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description="Python baseline for the data-prep benchmark")
    ap.add_argument("csv", type=Path, help="Bitext customer-support CSV")
    ap.add_argument("--tokenizer", type=Path,
                    default=REPO.parent / "shared" / "models" / "qwen3-8b",
                    help="Qwen3 tokenizer directory (default: ../shared/models/qwen3-8b)")
    args = ap.parse_args()

    t = time.perf_counter()
    with open(args.csv, encoding="utf-8", newline="") as f:
        rows = [(r["instruction"], r["response"]) for r in csv.DictReader(f)]
    t_csv = time.perf_counter() - t

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(args.tokenizer))
    t_tok = time.perf_counter() - t

    t = time.perf_counter()
    convs = [[{"role": "user", "content": u}, {"role": "assistant", "content": a}]
             for u, a in rows]
    texts = [tok.apply_chat_template(c, tokenize=False, enable_thinking=False)
             for c in convs]
    prompts = [tok.apply_chat_template(c[:1], tokenize=False, add_generation_prompt=True,
                                       enable_thinking=False)
               for c in convs]
    full_ids = tok(texts, add_special_tokens=False).input_ids
    prompt_ids = tok(prompts, add_special_tokens=False).input_ids
    label_lens = [len(f) - len(p) for f, p in zip(full_ids, prompt_ids)]
    t_work = time.perf_counter() - t

    t_total = time.perf_counter() - T0
    assert all(n > 0 for n in label_lens)

    print(json.dumps({
        "rows": len(rows),
        "seconds_import": round(T_IMPORT - T0, 4),
        "seconds_load_csv": round(t_csv, 4),
        "seconds_load_tokenizer": round(t_tok, 4),
        "seconds_template_and_tokenize": round(t_work, 4),
        "seconds_total": round(t_total, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "total_tokens": sum(len(f) for f in full_ids),
        "total_label_tokens": sum(label_lens),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
