"""The reference libraries' pinned versions, in one place: scripts/ref-env.sh installs exactly
these, and every fixture generator checks them before it writes a number.

    python3 scripts/pins.py        prints one `name==version` per line (what ref-env.sh reads)
"""
import sys
from importlib.metadata import PackageNotFoundError, version

PINS = {
    "torch": "2.11.0",
    "transformers": "5.23.0",
    "tokenizers": "0.23.3",
    "peft": "0.21.2",
    "bitsandbytes": "0.50.2",
    "rouge-score": "0.1.2",
    "nltk": "3.10.4",
    "sacrebleu": "2.6.0",
    "safetensors": "0.8.0",
    "jinja2": "3.1.6",
    "tensorboard": "2.21.0",
}


def check_pins(script, names=None):
    """Exits with the list of mismatches unless every named library (all when None) is at its
    pin. Local version tags (torch's 2.11.0+cpu) are ignored."""
    bad = []
    for name in names or PINS:
        want = PINS[name]
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have is None or have.split("+")[0] != want:
            bad.append(f"  {name}: want {want}, have {have or 'not installed'}")
    if bad:
        sys.exit(
            f"{script}: library versions do not match the pins; "
            "run with the python that scripts/ref-env.sh prints.\n" + "\n".join(bad)
        )


if __name__ == "__main__":
    for name, want in PINS.items():
        print(f"{name}=={want}")
