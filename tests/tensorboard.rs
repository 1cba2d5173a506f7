//! TensorBoard event files: the writer reproduces committed files byte for byte; TensorBoard's
//! own reader (scripts/make_tensorboard_fixtures.py → reader.json) finds in them exactly the
//! values that went in, and drops a killed run's points after a resume as we expect; a tiny run
//! with `report_to: [tensorboard]`, killed and resumed, then evaluated, leaves event files that
//! hold the values of metrics.jsonl and report.json.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::steptune;
use steptune::train::tensorboard::{self, Event, EventWriter, What};

// ---- a reader written apart from the writer: CRCs checked bit by bit, protobuf decoded by field ----

/// CRC-32C, bit at a time: no table shared with the writer.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
        }
    }
    !c
}

fn masked(data: &[u8]) -> u32 {
    let c = crc32c_bitwise(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

fn records(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            return Err(format!("truncated header at byte {at}"));
        }
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
        if u32::from_le_bytes(rest[8..12].try_into().unwrap()) != masked(&rest[..8]) {
            return Err(format!("bad length CRC at byte {at}"));
        }
        if rest.len() < 16 + len {
            return Err(format!("truncated record at byte {at}"));
        }
        let data = &rest[12..12 + len];
        if u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap()) != masked(data) {
            return Err(format!("bad data CRC at byte {at}"));
        }
        out.push(data);
        at += 16 + len;
    }
    Ok(out)
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Vec<(u64, Field<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut b)),
            1 => {
                let v = b[..8].try_into().unwrap();
                b = &b[8..];
                Field::Fixed64(v)
            }
            5 => {
                let v = b[..4].try_into().unwrap();
                b = &b[4..];
                Field::Fixed32(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = &b[..n];
                b = &b[n..];
                Field::Bytes(v)
            }
            w => panic!("wire type {w}"),
        };
        out.push((key >> 3, f));
    }
    out
}

fn decode(data: &[u8]) -> Event {
    let mut e = Event { wall_time: 0.0, step: 0, what: What::Scalars(Vec::new()) };
    for (n, f) in fields(data) {
        match (n, f) {
            (1, Field::Fixed64(v)) => e.wall_time = f64::from_le_bytes(v),
            (2, Field::Varint(v)) => e.step = v as i64,
            (3, Field::Bytes(v)) => e.what = What::FileVersion(String::from_utf8(v.to_vec()).unwrap()),
            (5, Field::Bytes(summary)) => {
                let mut values = Vec::new();
                for (k, value) in fields(summary) {
                    let (1, Field::Bytes(value)) = (k, value) else { panic!("Summary field {k}") };
                    let (mut tag, mut x) = (String::new(), None);
                    for (k, f) in fields(value) {
                        match (k, f) {
                            (1, Field::Bytes(t)) => tag = String::from_utf8(t.to_vec()).unwrap(),
                            (2, Field::Fixed32(v)) => x = Some(f32::from_le_bytes(v)),
                            (k, _) => panic!("Summary.Value field {k}"),
                        }
                    }
                    values.push((tag, x.expect("simple_value")));
                }
                e.what = What::Scalars(values);
            }
            (7, Field::Bytes(log)) => {
                assert!(matches!(fields(log)[..], [(1, Field::Varint(1))]), "SessionLog other than START");
                e.what = What::SessionStart;
            }
            (n, _) => panic!("Event field {n}"),
        }
    }
    e
}

fn read_events(path: &Path) -> Vec<Event> {
    let bytes = std::fs::read(path).unwrap();
    records(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().map(decode).collect()
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.file_name().unwrap().to_string_lossy().contains("tfevents")).collect();
    v.sort();
    v
}

/// A comparable form of an event: floats by their bits, so NaN equals NaN and -0 is not 0.
fn key(e: &Event) -> String {
    let what = match &e.what {
        What::FileVersion(v) => format!("version {v}"),
        What::SessionStart => "START".into(),
        What::Scalars(v) => v.iter().map(|(t, x)| format!("{t}={:08x}", x.to_bits())).collect::<Vec<_>>().join(" "),
    };
    format!("{:016x} {} {what}", e.wall_time.to_bits(), e.step)
}

/// What TensorBoard plots from a folder's files, in name order: a SessionLog START at step s drops
/// every point seen so far at step ≥ s (EventAccumulator's purge for file version 2).
fn plotted(files: &[Vec<Event>]) -> BTreeMap<String, Vec<(i64, u32, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, u32, f64)>> = BTreeMap::new();
    for events in files {
        assert!(matches!(&events[0].what, What::FileVersion(v) if v == "brain.Event:2"), "a file starts with its version");
        for e in events {
            match &e.what {
                What::SessionStart => out.values_mut().for_each(|pts| pts.retain(|p| p.0 < e.step)),
                What::Scalars(values) => {
                    for (tag, x) in values {
                        out.entry(tag.clone()).or_default().push((e.step, x.to_bits(), e.wall_time));
                    }
                }
                What::FileVersion(_) => {}
            }
        }
    }
    out
}

// ---- the fixture: fixed inputs, committed bytes, TensorBoard's reading of them ----

fn fixture_dir() -> PathBuf {
    common::repo().join("tests/fixtures/tensorboard")
}

fn scalars(wall_time: f64, step: i64, values: &[(&str, f32)]) -> Event {
    Event { wall_time, step, what: What::Scalars(values.iter().map(|(t, x)| (t.to_string(), *x)).collect()) }
}

fn train_line(wall_time: f64, step: i64, run: f32) -> Event {
    let s = step as f32;
    scalars(
        wall_time,
        step,
        &[("train/epoch", (step / 4) as f32), ("train/loss", 6.0 / (1.0 + run * s)), ("train/lr", 2e-4 * s / 8.0), ("train/grad_norm", 1.0 + 0.1 * s), ("train/tokens_per_second", 12345.678 + s)],
    )
}

/// Three files of one run: trained to step 6 and killed, resumed from the checkpoint at step 4
/// (so steps 5 and 6 come again, with other values), then evaluated. Step 3 also carries
/// awkward floats.
fn fixture_files() -> Vec<(&'static str, Vec<Event>)> {
    let t0 = 1_700_000_000.0;
    let mut first = vec![Event { wall_time: t0, step: 0, what: What::SessionStart }, scalars(t0 + 0.5, 0, &[("eval/loss", 6.5)])];
    for step in 1..=6 {
        first.push(train_line(t0 + 1.5 * step as f64, step, 0.3));
        if step == 3 {
            first.push(scalars(
                t0 + 4.75,
                3,
                &[("edge/zero", 0.0), ("edge/negative_zero", -0.0), ("edge/negative", -1.5), ("edge/subnormal", f32::from_bits(1)), ("edge/max", f32::MAX), ("edge/tenth", 0.1), ("edge/inf", f32::INFINITY), ("edge/minus_inf", f32::NEG_INFINITY), ("edge/nan", f32::NAN)],
            ));
        }
        if step == 4 {
            first.push(scalars(t0 + 6.25, 4, &[("eval/epoch", 1.0), ("eval/loss", 4.25)]));
        }
    }
    let t1 = t0 + 100.0;
    let mut second = vec![Event { wall_time: t1, step: 5, what: What::SessionStart }];
    for step in 5..=8 {
        second.push(train_line(t1 + step as f64, step, 0.5));
    }
    second.push(scalars(t1 + 8.5, 8, &[("eval/epoch", 2.0), ("eval/loss", 3.125)]));
    let eval = vec![scalars(t0 + 200.25, 8, &[("eval_base/rouge_l_f1", 0.125), ("eval_base/meteor", 0.2), ("eval_tuned/rouge_l_f1", 0.625), ("eval_tuned/meteor", 0.7)])];
    vec![
        ("events.out.tfevents.1700000000.fixture.1.0", first),
        ("events.out.tfevents.1700000100.fixture.2.0", second),
        ("events.out.tfevents.1700000200.fixture.3.0.eval", eval),
    ]
}

/// Writes the fixture's files into `dir` with the writer; each starts with its version event
/// stamped with the wall time of its first event.
fn write_fixture(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, events) in fixture_files() {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let mut w = EventWriter::create_at(&path, events[0].wall_time).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
    }
}

/// The fixture's events as written: the version event first in each file.
fn fixture_events() -> Vec<Vec<Event>> {
    fixture_files()
        .into_iter()
        .map(|(_, events)| {
            let mut v = vec![Event { wall_time: events[0].wall_time, step: 0, what: What::FileVersion("brain.Event:2".into()) }];
            v.extend(events);
            v
        })
        .collect()
}

#[test]
fn the_writer_reproduces_the_committed_event_files_byte_for_byte() {
    let committed = fixture_dir().join("run");
    if std::env::var_os("STEPTUNE_BLESS").is_some() {
        write_fixture(&committed);
    }
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let names: Vec<_> = fixture_files().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(event_files(&committed).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>(), names);
    for name in &names {
        let (want, got) = (std::fs::read(committed.join(name)).unwrap(), std::fs::read(d.path().join(name)).unwrap());
        assert!(want == got, "{name}: the writer's bytes differ from the committed file (STEPTUNE_BLESS=1 rewrites it, then rerun scripts/make_tensorboard_fixtures.py)");
    }
    // Our own reader gets the inputs back from the committed bytes.
    let read: Vec<Vec<String>> = event_files(&committed).iter().map(|p| read_events(p).iter().map(key).collect()).collect();
    let want: Vec<Vec<String>> = fixture_events().iter().map(|f| f.iter().map(key).collect()).collect();
    assert_eq!(read, want);
}

fn parse_f(v: &serde_json::Value) -> f64 {
    v.as_str().expect("floats are repr strings").parse().unwrap()
}

#[test]
fn tensorboards_own_reader_finds_the_values_written_and_drops_the_killed_runs_points() {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("reader.json")).unwrap()).unwrap();
    assert!(json["generator"].as_str().unwrap().contains("tensorboard==2.21.0"));
    let files = json["files"].as_array().unwrap();
    let want = fixture_events();
    assert_eq!(files.len(), want.len());
    for (file, events) in files.iter().zip(&want) {
        // Every record passed TensorBoard's CRC checks and is protobuf's own serialisation.
        assert_eq!(file["records"].as_u64(), Some(events.len() as u64), "{}", file["name"]);
        let read: Vec<String> = file["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let what = if let Some(v) = row["file_version"].as_str() {
                    What::FileVersion(v.into())
                } else if let Some(s) = row["session_log"].as_str() {
                    assert_eq!(s, "START");
                    What::SessionStart
                } else {
                    What::Scalars(row["values"].as_array().unwrap().iter().map(|p| (p[0].as_str().unwrap().to_string(), parse_f(&p[1]) as f32)).collect())
                };
                key(&Event { wall_time: parse_f(&row["wall_time"]), step: row["step"].as_i64().unwrap(), what })
            })
            .collect();
        assert_eq!(read, events.iter().map(key).collect::<Vec<_>>(), "{}", file["name"]);
    }
    // EventAccumulator's scalars: the resumed run's steps 5 and 6, not the killed run's.
    let acc: BTreeMap<String, Vec<(i64, u32, f64)>> = json["accumulator"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, pts)| (tag.clone(), pts.as_array().unwrap().iter().map(|p| (p[0].as_i64().unwrap(), (parse_f(&p[1]) as f32).to_bits(), parse_f(&p[2]))).collect()))
        .collect();
    let expected = plotted(&want);
    assert_eq!(acc, expected);
    let loss_steps: Vec<i64> = acc["train/loss"].iter().map(|p| p.0).collect();
    assert_eq!(loss_steps, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(acc["train/loss"][4].1, (6.0f32 / (1.0 + 0.5 * 5.0)).to_bits(), "step 5 is the resumed run's");
    assert_eq!(acc["eval/loss"].iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 4, 8]);
    assert_eq!(acc["edge/nan"].len(), 1);
}

#[test]
fn the_reader_rejects_a_corrupt_record() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("events.out.tfevents.1.x.1.0");
    let mut w = EventWriter::create_at(&path, 1.0).unwrap();
    w.write(&scalars(2.0, 1, &[("train/loss", 1.0)])).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(records(&bytes).unwrap().len(), 2);
    let last = bytes.len() - 5; // the last byte of the loss value
    bytes[last] ^= 1;
    assert!(records(&bytes).unwrap_err().contains("bad data CRC"));
}

#[test]
fn a_second_eval_replaces_the_eval_events_file() {
    let d = tempfile::tempdir().unwrap();
    let scores = |x: f64| vec![("tuned".to_string(), serde_json::json!({"n": 6, "rouge_l_f1": x, "order_kendall_tau": null}))];
    let first = tensorboard::write_eval(d.path(), 4, &scores(0.25)).unwrap();
    let second = tensorboard::write_eval(d.path(), 4, &scores(0.5)).unwrap();
    assert_ne!(first, second);
    assert_eq!(event_files(d.path()), vec![second.clone()]);
    let events = read_events(&second);
    assert_eq!(events.len(), 2);
    assert_eq!((events[1].step, &events[1].what), (4, &What::Scalars(vec![("eval_tuned/rouge_l_f1".into(), 0.5)])));
}

// ---- a real run ----

/// What metrics.jsonl says TensorBoard should plot: every number but the step, eval lines under
/// `eval/` with `eval_` dropped, the rest under `train/`.
fn from_metrics(path: &Path) -> BTreeMap<String, Vec<(i64, u32)>> {
    let mut out: BTreeMap<String, Vec<(i64, u32)>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object().unwrap();
        let eval = obj.keys().any(|k| k.starts_with("eval_"));
        for (k, x) in obj {
            if let (false, Some(x)) = (k == "step", x.as_f64()) {
                let tag = if eval { format!("eval/{}", k.trim_start_matches("eval_")) } else { format!("train/{k}") };
                out.entry(tag).or_default().push((v["step"].as_i64().unwrap(), (x as f32).to_bits()));
            }
        }
    }
    out
}

#[test]
fn a_killed_resumed_and_evaluated_run_leaves_the_values_of_metrics_jsonl_and_report_json() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let recipe = common::tiny_recipe(
        d.path(),
        "tb",
        "{method: full}",
        "{max_steps: 4, device: cpu, per_device_train_batch_size: 8, learning_rate: 3.0e-3, logging_steps: 1, eval_strategy: steps, eval_steps: 2, save_strategy: steps, save_steps: 2, report_to: [tensorboard]}",
        "eval: {max_new_tokens: 8, max_samples: 4, compare_base: true}\n",
    );
    let r = recipe.to_str().unwrap();
    let (code, _, err) = steptune(&["prepare", r], d.path());
    assert_eq!(code, 0, "{err}");
    // Killed after step 3; its checkpoint lost, so the run resumes from step 2 and step 3's
    // points in the first file are orphans.
    let (code, _, err) = steptune(&["train", r, "--stop-after", "3"], d.path());
    assert_ne!(code, 0, "{err}");
    std::fs::remove_dir_all(run.join("checkpoints/step-00000003")).unwrap();
    let (code, _, err) = steptune(&["train", r], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from"), "{err}");
    let (code, _, err) = steptune(&["eval", r], d.path());
    assert_eq!(code, 0, "{err}");

    let files = event_files(&run.join("tensorboard"));
    assert_eq!(files.len(), 3, "{files:?}");
    let eval_file = files.iter().position(|p| p.to_string_lossy().ends_with(".eval")).expect("the eval stage's file");
    let eval_events = read_events(&files[eval_file]);
    let train: Vec<Vec<Event>> = files.iter().enumerate().filter(|(i, _)| *i != eval_file).map(|(_, p)| read_events(p)).collect();
    assert_eq!(train[0][1].what, What::SessionStart);
    assert_eq!((train[1][1].step, &train[1][1].what), (3, &What::SessionStart), "the resumed file starts after the checkpoint's step");
    let raw_loss_steps: Vec<i64> = train.iter().flatten().filter_map(|e| match &e.what {
        What::Scalars(v) if v.iter().any(|(t, _)| t == "train/loss") => Some(e.step),
        _ => None,
    }).collect();
    assert_eq!(raw_loss_steps, vec![1, 2, 3, 3, 4], "step 3 was logged by both runs");

    let plotted: BTreeMap<String, Vec<(i64, u32)>> = plotted(&train).into_iter().map(|(t, pts)| (t, pts.into_iter().map(|p| (p.0, p.1)).collect())).collect();
    let metrics = from_metrics(&run.join("metrics.jsonl"));
    assert_eq!(plotted, metrics, "TensorBoard's view of the train files equals metrics.jsonl");
    for tag in ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second", "eval/loss"] {
        assert!(plotted.contains_key(tag), "no {tag} in {:?}", plotted.keys());
    }
    assert_eq!(plotted["train/loss"].iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);

    // The eval stage: each system's corpus scores at the last step.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let mut want = Vec::new();
    for s in report["systems"].as_array().unwrap() {
        for (k, v) in s["corpus"].as_object().unwrap() {
            if let (true, Some(x)) = (k != "n", v.as_f64()) {
                want.push((format!("eval_{}/{k}", s["name"].as_str().unwrap()), x as f32));
            }
        }
    }
    assert!(want.iter().any(|(t, _)| t == "eval_base/meteor") && want.iter().any(|(t, _)| t == "eval_tuned/rouge_l_f1"), "{want:?}");
    assert_eq!(eval_events.len(), 2);
    assert_eq!(eval_events[1].step, 4);
    assert_eq!(key(&Event { what: What::Scalars(want), ..eval_events[1].clone() }), key(&eval_events[1]));
}
