"""Generate the data-stage reference fixtures for steptune's Rust tests.

Writes, relative to the repository root:

  tests/fixtures/qwen3_chat_template.json
      Qwen3-8B chat-template renderings (enable_thinking=False) of procedure / support
      conversations and hand-written edge cases, with the token ids transformers
      produces for the full conversation and for the prompt part (everything up to and
      including the generation prompt), so the Rust side can check its template
      rendering, its tokenization and its label masking.

  tests/fixtures/t5_tokenization.json
      t5-small SentencePiece tokenizations (tokenizer(text).input_ids, so with the
      trailing </s>=1) of prompts, numbered-step outputs and normalisation edge cases.

The fixtures are committed so that CI needs no Python. Regenerate them with the pinned
reference environment only (scripts/ref-env.sh), from the repository root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_fixtures.py [--shared ../shared]

The output is deterministic: running it twice gives byte-identical files.
"""

import argparse
import csv
import hashlib
import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

from pins import PINS, check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_fixtures.py")

import transformers  # noqa: E402  (imported after the version check on purpose)
from transformers import AutoTokenizer  # noqa: E402

assert transformers.__version__ == PINS["transformers"], transformers.__version__

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PROCEDURES = REPO / "data" / "procedures.jsonl"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def generator(tokenizer_json):
    # No paths, dates or host names: the string must be the same on every machine.
    return (
        "scripts/make_fixtures.py; "
        f"python {platform.python_version()}; "
        f"transformers=={version('transformers')} tokenizers=={version('tokenizers')} "
        f"jinja2=={version('jinja2')}; "
        f"tokenizer.json sha256 {sha256(tokenizer_json)}"
    )


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, indent=1) + "\n"
    path.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {path.relative_to(REPO)} ({len(text.encode('utf-8'))} bytes)")


def load_procedures():
    with open(PROCEDURES, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_bitext(shared):
    with open(shared / "data" / "bitext-customer-support.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def flat_ids(x):
    """apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5;
    older versions returned a list, possibly nested. Reduce all of these to list[int]."""
    if hasattr(x, "keys") and "input_ids" in x:
        x = x["input_ids"]
    if hasattr(x, "tolist"):
        x = x.tolist()
    x = list(x)
    if len(x) == 1 and isinstance(x[0], (list, tuple)):
        x = list(x[0])
    assert all(isinstance(i, int) for i in x), x[:5]
    return x


# ---------------------------------------------------------------------------
# Qwen3 chat template
# ---------------------------------------------------------------------------

def conv(user, assistant, system=None):
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return msgs


def tricky_cases():
    """Hand-written edge cases: (name, messages)."""
    return [
        ("unicode_indonesian", conv(
            "Bagaimana cara mengatur ulang kata sandi di aplikasi xx?",
            "1. Buka aplikasi xx dan ketuk 'Lupa Kata Sandi'.\n"
            "2. Masukkan alamat email yang terhubung dengan akun Anda.\n"
            "3. Buka email reset dan ketuk tautannya.\n"
            "4. Ketik kata sandi baru, lalu ketuk 'Simpan'.")),
        ("unicode_accented", conv(
            "¿Cómo cambio mi dirección de envío? Ça dépend du café — naïve Ångström façade, Größe, Łódź.",
            "1. Öffnen Sie „Einstellungen“ › «Adresse».\n"
            "2. Wählen Sie die neue Lieferadresse aus – fertig.\n"
            "3. Appuyez sur « Enregistrer » : c’est réglé…")),
        ("unicode_cjk", conv(
            "如何重置我的密码？パスワードを忘れました。비밀번호를 재설정하려면 어떻게 하나요?",
            "1. 打开应用并点击「忘记密码」。\n2. 入力したメールアドレスを確認してください。\n3. 새 비밀번호를 입력하고 저장을 누르세요.")),
        ("unicode_emoji", conv(
            "My order 📦 still hasn't arrived 😡😡 — can you help? 🙏🏽",
            "1. Open Orders 🧾 and pick the late one.\n"
            "2. Tap 'Report a problem' ⚠️.\n"
            "3. Family plan 👨‍👩‍👧‍👦 members can do this too 🇮🇩👍🏽.")),
        ("unicode_invisible_and_nbsp", conv(
            "non\u00a0breaking\u00a0space, zero\u200bwidth, soft\u00adhyphen, BOM\ufeff here, e\u0301 vs é",
            "1. Tap\u00a0'Next'.\n2. Type\u2009the\u202fcode\u2003and tap\u3000OK.")),
        ("whitespace_leading_trailing", conv(
            "   How do I reset my password?   ",
            "  1. Open Settings.  \n2. Tap 'Reset'.   ")),
        ("whitespace_blank_lines", conv(
            "\n\nreset password\n\n\n",
            "\n\n1. Open Settings.\n\n\n2. Tap 'Reset'.\n\n")),
        ("whitespace_tabs_crlf", conv(
            "Line one\r\nLine two\r\n\tindented\t\ttabs",
            "1. First\r\n2. Second\r\n\r\n3.\tThird\t")),
        ("whitespace_only_spaces_inside", conv(
            "a    b     c",
            "1. Step    with     runs of spaces.\n2.  Two spaces after the number.")),
        ("quotes_and_backslashes", conv(
            "He said \"don't\" and 'can't' — path C:\\Users\\xx\\file.txt, regex \\d+\\n, JSON {\"a\": \"b\\\"c\"}",
            "1. Open \"C:\\Program Files\\xx\\\" and run `xx.exe --flag=\"a b\"`.\n"
            "2. Type '\\\\server\\share' (two backslashes) then press Enter.")),
        ("placeholders", conv(
            "I want to cancel order {{Order Number}} placed on {{Website URL}}",
            "1. Sign in to {{Website URL}} and open {{Account Section}}.\n"
            "2. Find order {{Order Number}} and click {{Cancel Order}}.\n"
            "3. Call {{Customer Support Phone Number}} if the button is missing.")),
        ("template_syntax_in_content", conv(
            "Is {% if x %}{{ y }}{% endif %} or {# comment #} rendered literally?",
            "1. Yes: content like {{ messages[0].content }} and {%- raw -%} is data, not template code.")),
        ("short_hi", conv("Hi", "Hello! How can I help you today?")),
        ("one_step", conv("How do I log out?", "1. Tap 'Log out' at the bottom of the Settings menu.")),
        ("system_prompt", conv(
            "How do I change my delivery address?",
            "1. Open Orders and select the order.\n2. Tap 'Change address'.\n3. Save the new address.",
            system="You are a support assistant. Answer with short numbered steps only.")),
        ("multi_turn", [
            {"role": "system", "content": "Answer with numbered steps."},
            {"role": "user", "content": "How do I enable dark mode?"},
            {"role": "assistant", "content": "1. Open Settings.\n2. Tap Display.\n3. Choose Dark."},
            {"role": "user", "content": "And on Windows?"},
            {"role": "assistant", "content": "1. Open Settings > Personalization > Colors.\n2. Choose Dark."},
        ]),
        ("special_token_text_in_content", conv(
            "What does <|im_end|> or <|endoftext|> mean in a prompt?",
            "1. They are control tokens such as <|im_start|>; the tokenizer reads them as single tokens.")),
        ("think_tags_in_output", conv(
            "Show your reasoning?",
            "<think>\nhidden reasoning\n</think>\n\n1. Final answer step.")),
        ("digits_and_symbols", conv(
            "Refund 1234567890.55 USD (order #113542617735902) by 2024-12-31 at 23:59?",
            "1. Enter 4111 1111 1111 1111, exp 09/27, CVV 123.\n2. Pay $1,299.99 — or €1.299,99 — then 100% done ✓.")),
    ]


def bitext_cases(rows, n=5):
    step = len(rows) // n
    out = []
    for k in range(n):
        i = k * step
        r = rows[i]
        out.append((f"bitext_row{i}_{r['intent']}", conv(r["instruction"], r["response"])))
    return out


def qwen_case(tok, name, messages):
    assert messages[-1]["role"] == "assistant", name
    text = tok.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    ids = flat_ids(tok.apply_chat_template(messages, tokenize=True, enable_thinking=False))
    ids2 = tok(text, add_special_tokens=False).input_ids
    assert ids == ids2, f"{name}: apply_chat_template(tokenize=True) != tokenizer(text)"

    prompt_msgs = messages[:-1]
    prompt_text = tok.apply_chat_template(
        prompt_msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    prompt_ids = flat_ids(tok.apply_chat_template(
        prompt_msgs, tokenize=True, add_generation_prompt=True, enable_thinking=False))
    prompt_ids2 = tok(prompt_text, add_special_tokens=False).input_ids
    assert prompt_ids == prompt_ids2, f"{name}: prompt ids differ between the two routes"

    return {
        "name": name,
        "messages": messages,
        "text": text,
        "input_ids": ids,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
    }


def make_qwen(shared):
    model_dir = shared / "models" / "qwen3-8b"
    tok = AutoTokenizer.from_pretrained(str(model_dir))

    named = []
    for i, row in enumerate(load_procedures()):
        if i % 6 == 0:
            named.append((f"procedures_row{i}_{row['intent']}", conv(row["prompt"], row["output"])))
    named += tricky_cases()
    named += bitext_cases(load_bitext(shared))

    names = [n for n, _ in named]
    assert len(names) == len(set(names)), "duplicate case names"

    cases = [qwen_case(tok, n, m) for n, m in named]

    not_text_prefix = [c["name"] for c in cases if not c["text"].startswith(c["prompt_text"])]
    not_ids_prefix = [c["name"] for c in cases
                      if c["input_ids"][:len(c["prompt_ids"])] != c["prompt_ids"]]
    if not_text_prefix:
        print(f"NOTE: text does not start with prompt_text for {len(not_text_prefix)} case(s): "
              + ", ".join(not_text_prefix))
    else:
        print(f"qwen3: text starts with prompt_text in all {len(cases)} cases")
    if not_ids_prefix:
        print(f"NOTE: input_ids do not start with prompt_ids for {len(not_ids_prefix)} case(s): "
              + ", ".join(not_ids_prefix))
    else:
        print(f"qwen3: input_ids start with prompt_ids in all {len(cases)} cases")

    write_json(FIXTURES / "qwen3_chat_template.json", {
        "generator": generator(model_dir / "tokenizer.json"),
        "model": "qwen3-8b",
        "cases": cases,
    })
    return len(cases)


# ---------------------------------------------------------------------------
# T5 tokenization
# ---------------------------------------------------------------------------

T5_EDGE_TEXTS = [
    "",
    " ",
    "Hi",
    "  leading and trailing spaces  ",
    "multiple     internal   spaces",
    "line one\nline two\n\nline four",           # newlines become spaces
    "\n\nstarts and ends with newlines\n\n",
    "tabs\tand\r\nwindows\r\nnewlines",
    "Cancel order {{Order Number}} on {{Website URL}}",  # '{' and '}' are not in the vocab -> <unk>=2
    "Ça dépend du café — naïve façade, Größe, Ångström, Łódź",
    "Bagaimana cara mengatur ulang kata sandi di aplikasi xx?",
    "如何重置我的密码？パスワード 비밀번호",             # CJK -> <unk>
    "My order 📦 hasn't arrived 😡 🇮🇩 👍🏽",
    "non\u00a0breaking\u00a0space and full\uff37idth ＡＢＣ １２３ and the ﬁ ligature",
    "zero\u200bwidth and soft\u00adhyphen",
    "He said \"don't\" — C:\\Users\\xx\\file.txt, `code`, <tag>, a|b, ~tilde^caret",
    "1. Open the app.\n2. Tap 'Settings'.\n3. Done.",
    "Refund 1234567890.55 USD by 2024-12-31 at 23:59, 100% ✓",
    "translate English to German: The house is wonderful.",
    "summarize: </s> literal eos and <unk> literal unk in text",
]


def make_t5(shared):
    model_dir = shared / "models" / "t5-small"
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = load_procedures()

    texts = []
    texts += [r["prompt"] for i, r in enumerate(rows) if i % 12 == 0]
    outputs = list(dict.fromkeys(r["output"] for r in rows))  # distinct, in file order
    texts += outputs[::4]
    texts += T5_EDGE_TEXTS
    texts = list(dict.fromkeys(texts))

    cases = [{"text": t, "input_ids": list(tok(t).input_ids)} for t in texts]
    for c in cases:
        assert c["input_ids"] and c["input_ids"][-1] == tok.eos_token_id, c
    n_unk = sum(1 for c in cases if tok.unk_token_id in c["input_ids"])
    print(f"t5: {len(cases)} cases, {n_unk} contain <unk>={tok.unk_token_id}")

    write_json(FIXTURES / "t5_tokenization.json", {
        "generator": generator(model_dir / "tokenizer.json"),
        "model": "t5-small",
        "cases": cases,
    })
    return len(cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="shared data directory (default: ../shared relative to the repo root)")
    args = ap.parse_args()
    shared = args.shared.resolve()
    if not (shared / "models").is_dir():
        sys.exit(f"make_fixtures.py: no models/ under {shared}; pass --shared")
    make_qwen(shared)
    make_t5(shared)


if __name__ == "__main__":
    main()
