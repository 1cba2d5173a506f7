"""Reference fixture for steptune's TensorBoard event files (src/train/tensorboard.rs).

Reads the event files that steptune's writer made from fixed inputs,

  tests/fixtures/tensorboard/run/events.out.tfevents.*
      three files of one run folder: a training run killed after step 6, its resume from
      step 4 (a SessionLog START at step 5), and the eval stage's file (`.eval`); the
      inputs are `fixture_files()` in tests/tensorboard.rs,

with TensorBoard's own code only, and writes what it finds:

  tests/fixtures/tensorboard/reader.json
      {"generator",
       "files": [{"name", "records", "events": [{"wall_time", "step", and one of
                 "file_version" | "session_log" | "values": [[tag, value], ...]}]}]},
       "accumulator": {tag: [[step, value, wall_time], ...]}}
      "files": every record of each file, read by TensorBoard's record reader (which checks
      both masked CRC32Cs of every record) and parsed as tensorboard's Event proto; each
      record must also be exactly the bytes protobuf itself serialises for that event.
      "accumulator": EventAccumulator(run folder).Scalars(tag) for every tag: what
      `tensorboard --logdir` plots, after the START purge.

Floats are written as strings holding Python's repr (shortest round-trip form), so Rust
reads the exact f32 values back (nan and inf included).

Regenerate, from the repository root:

    STEPTUNE_BLESS=1 cargo test --test tensorboard    # rewrites the event files
    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_tensorboard_fixtures.py

Deterministic: the event files carry fixed wall times, so running both twice gives
byte-identical files.
"""

import json
import platform
from importlib.metadata import version
from pathlib import Path

from pins import check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_tensorboard_fixtures.py", ["tensorboard"])

from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402
from tensorboard.compat.tensorflow_stub import errors  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "tensorboard"
RUN = FIXTURES / "run"


def f(x):
    """A float as the string of Python's repr (exact round trip)."""
    return repr(float(x))


def checked_records(path):
    """Every record through TensorBoard's stub record reader, which raises DataLossError on a
    bad CRC. (The event loaders swallow that error and stop early, so they alone would hide a
    bad record.)"""
    reader = PyRecordReader_New(str(path))
    out = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        out.append(reader.record())


def read_file(path):
    records = checked_records(path)
    raw = list(RawEventFileLoader(str(path)).Load())
    assert raw == records, f"{path.name}: the event loader stopped early"
    events = []
    for data in raw:
        e = event_pb2.Event.FromString(data)
        assert e.SerializeToString(deterministic=True) == data, f"{path.name}: not protobuf's own bytes"
        row = {"wall_time": f(e.wall_time), "step": e.step}
        kind = e.WhichOneof("what")
        if kind == "file_version":
            row["file_version"] = e.file_version
        elif kind == "session_log":
            row["session_log"] = event_pb2.SessionLog.SessionStatus.Name(e.session_log.status)
        elif kind == "summary":
            for v in e.summary.value:
                assert v.WhichOneof("value") == "simple_value", v
            row["values"] = [[v.tag, f(v.simple_value)] for v in e.summary.value]
        else:
            raise AssertionError(f"{path.name}: unexpected event {kind}")
        events.append(row)
    return {"name": path.name, "records": len(records), "events": events}


def to_text(obj):
    """One event, and one tag's points, per line: small diffs when a value changes."""
    one = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    files = ",\n".join(
        f'{{"name":{one(fl["name"])},"records":{fl["records"]},"events":[\n' + ",\n".join(one(e) for e in fl["events"]) + "\n]}"
        for fl in obj["files"]
    )
    acc = ",\n".join(f"{one(tag)}:{one(pts)}" for tag, pts in obj["accumulator"].items())
    text = f'{{\n"generator":{one(obj["generator"])},\n"files":[\n{files}\n],\n"accumulator":{{\n{acc}\n}}\n}}\n'
    assert json.loads(text) == obj
    return text


def main():
    paths = sorted(p for p in RUN.iterdir() if "tfevents" in p.name)
    assert len(paths) == 3, paths
    files = [read_file(p) for p in paths]
    acc = event_accumulator.EventAccumulator(str(RUN), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    accumulator = {
        tag: [[s.step, f(s.value), f(s.wall_time)] for s in acc.Scalars(tag)]
        for tag in sorted(acc.Tags()["scalars"])
    }
    obj = {
        "generator": (f"scripts/make_tensorboard_fixtures.py; python {platform.python_version()}; "
                      f"tensorboard=={version('tensorboard')} protobuf=={version('protobuf')}; "
                      "PyRecordReader_New, RawEventFileLoader, EventAccumulator(purge_orphaned_data=True)"),
        "files": files,
        "accumulator": accumulator,
    }
    text = to_text(obj)
    out = FIXTURES / "reader.json"
    out.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {out.relative_to(REPO)} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
