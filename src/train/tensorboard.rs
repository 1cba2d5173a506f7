//! TensorBoard event files (`training.report_to: [tensorboard]`), written by hand.
//!
//! The format is small and frozen: TFRecord framing (length, masked CRC32C of the length, data,
//! masked CRC32C of the data) around `Event` protobufs, of which scalars need four fields. The
//! crates that write it pull an old protobuf code generator and image stack, so the few bytes are
//! encoded here; tests/tensorboard.rs proves TensorBoard's own reader reads them back.
//!
//! One folder, `<run>/tensorboard/`, holds every file of a run, so `tensorboard --logdir runs/`
//! shows each run (and each sweep point, a run of its own) as `<name>/tensorboard`.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::recipe::LoadedRecipe;
use crate::run::RunDir;

/// What TensorBoard's loaders expect as the first event of a file: version 2 means "restarts are
/// marked by SessionLog START", not guessed from steps going backwards.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The run's event folder when the recipe asks for TensorBoard.
pub fn dir_of(recipe: &LoadedRecipe, run: &RunDir) -> Option<PathBuf> {
    recipe.recipe.training.report_to.iter().any(|r| r == "tensorboard").then(|| run.path("tensorboard"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    FileVersion(String),
    /// Scalars by tag, stored as `simple_value` (a float), as `SummaryWriter.add_scalar` does.
    Scalars(Vec<(String, f32)>),
    /// SessionLog START: TensorBoard drops the points of earlier files at or after this step, so
    /// a resumed run shows the resumed values, not the ones of the run that was killed.
    SessionStart,
}

/// One append-only events file.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl EventWriter {
    /// A new file in `dir`, named as TensorFlow's and PyTorch's writers name theirs, plus
    /// `suffix`. TensorBoard reads a folder's files in name order, and a resume's SessionLog START
    /// must come after the killed run's points: so the seconds in the name are past those of
    /// every file already there, even when two processes start within one second.
    pub fn create(dir: &Path, suffix: &str) -> Result<EventWriter> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let wall_time = now();
        let newest = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("events.out.tfevents.")?.split('.').next()?.parse::<u64>().ok())
            .max();
        let secs = newest.map_or(wall_time as u64, |n| (wall_time as u64).max(n + 1));
        let host = hostname();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("events.out.tfevents.{secs:010}.{host}.{}.{n}{suffix}", std::process::id()));
            if !path.exists() {
                return EventWriter::create_at(&path, wall_time);
            }
        }
    }

    /// A file at `path` whose first event (the file version) carries `wall_time`; the fixture
    /// test fixes both so the bytes are reproducible.
    pub fn create_at(path: &Path, wall_time: f64) -> Result<EventWriter> {
        let file = std::fs::OpenOptions::new().create_new(true).write(true).open(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = EventWriter { file, path: path.to_path_buf() };
        w.write(&Event { wall_time, step: 0, what: What::FileVersion(FILE_VERSION.into()) })?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record in one write, so a reader never sees half a record unless the process
    /// dies mid-write (which TensorBoard tolerates at the end of a file).
    pub fn write(&mut self, e: &Event) -> Result<()> {
        self.file.write_all(&record(&encode(e))).with_context(|| format!("cannot append to {}", self.path.display()))
    }

    /// Scalars at `step`, stamped now.
    pub fn scalars(&mut self, step: i64, values: Vec<(String, f32)>) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.write(&Event { wall_time: now(), step, what: What::Scalars(values) })
    }

    pub fn session_start(&mut self, step: i64) -> Result<()> {
        self.write(&Event { wall_time: now(), step, what: What::SessionStart })
    }
}

/// The scalars of one metrics.jsonl line: `step` is the x axis, every other number a tag.
/// Eval lines (those with `eval_*` keys) go under `eval/` (`eval_loss` → `eval/loss`), the rest
/// under `train/`, so each group is one section of TensorBoard's scalar page.
pub fn scalars_of_line(v: &serde_json::Value) -> Option<(i64, Vec<(String, f32)>)> {
    let obj = v.as_object()?;
    let step = obj.get("step")?.as_i64()?;
    let section = if obj.keys().any(|k| k.starts_with("eval_")) { "eval" } else { "train" };
    let values = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, x)| Some((format!("{section}/{}", k.strip_prefix("eval_").unwrap_or(k)), x.as_f64()? as f32)))
        .collect();
    Some((step, values))
}

/// Suffix of the eval stage's files, so a re-run of the eval replaces its file (as it replaces
/// report.json) instead of adding a second point at the same step.
pub const EVAL_SUFFIX: &str = ".eval";

/// The eval stage's corpus scores, `(system, scores as a JSON object)`, as `eval_<system>/<metric>`
/// at `step` (the last train step), so base and tuned sit beside the loss curves. The count of
/// prompts (`n`) is not a metric and is left out.
pub fn write_eval(dir: &Path, step: u64, systems: &[(String, serde_json::Value)]) -> Result<PathBuf> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("events.out.tfevents.") && name.ends_with(EVAL_SUFFIX) {
                std::fs::remove_file(e.path()).with_context(|| format!("cannot remove the previous eval events {}", e.path().display()))?;
            }
        }
    }
    let values = systems
        .iter()
        .flat_map(|(system, scores)| {
            scores.as_object().into_iter().flatten().filter(|(k, _)| k.as_str() != "n").filter_map(move |(k, v)| Some((format!("eval_{system}/{k}"), v.as_f64()? as f32)))
        })
        .collect();
    let mut w = EventWriter::create(dir, EVAL_SUFFIX)?;
    w.scalars(step as i64, values)?;
    Ok(w.path().to_path_buf())
}

/// Seconds since the Unix epoch, the unit of `Event.wall_time`.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok()).or_else(|| std::env::var("COMPUTERNAME").ok()).unwrap_or_default();
    // The name is part of a file name: keep it to characters every file system takes.
    let clean: String = raw.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

// ---- protobuf: tensorflow/core/util/event.proto and framework/summary.proto, the fields used ----

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, ((field << 3) | 2) as u64);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// `Event {double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
/// SessionLog session_log = 7}`, `Summary {repeated Value value = 1}`, `Value {string tag = 1;
/// float simple_value = 2}`, `SessionLog {SessionStatus status = 1}` with START = 1. Fields are
/// written in number order and zero numbers are left out, as protobuf's own serialiser does.
pub fn encode(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    if e.wall_time.to_bits() != 0 {
        out.push(0x09); // field 1, 64-bit
        out.extend_from_slice(&e.wall_time.to_le_bytes());
    }
    if e.step != 0 {
        out.push(0x10); // field 2, varint
        varint(&mut out, e.step as u64);
    }
    match &e.what {
        What::FileVersion(v) => bytes_field(&mut out, 3, v.as_bytes()),
        What::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, x) in values {
                let mut value = Vec::new();
                bytes_field(&mut value, 1, tag.as_bytes());
                value.push(0x15); // field 2, 32-bit: set even when 0.0, it is a oneof member
                value.extend_from_slice(&x.to_le_bytes());
                bytes_field(&mut summary, 1, &value);
            }
            bytes_field(&mut out, 5, &summary);
        }
        What::SessionStart => bytes_field(&mut out, 7, &[0x08, 0x01]),
    }
    out
}

// ---- TFRecord framing ----

/// `len: u64 LE, masked_crc32c(len), data, masked_crc32c(data)`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// TFRecord stores CRCs masked, so that a CRC of data that itself holds CRCs stays well mixed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli), table-driven: a few records per step need no SIMD crate.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answers() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn events_are_the_bytes_protobuf_writes() {
        // Event(wall_time=1.5, file_version="brain.Event:2").SerializeToString()
        let e = encode(&Event { wall_time: 1.5, step: 0, what: What::FileVersion(FILE_VERSION.into()) });
        let mut want = vec![0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 13];
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e, want);
        // Event(step=300, summary=Summary(value=[Value(tag="a", simple_value=0.0)]))
        let e = encode(&Event { wall_time: 0.0, step: 300, what: What::Scalars(vec![("a".into(), 0.0)]) });
        assert_eq!(e, vec![0x10, 0xac, 0x02, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15, 0, 0, 0, 0]);
        // Event(step=5, session_log=SessionLog(status=START))
        assert_eq!(encode(&Event { wall_time: 0.0, step: 5, what: What::SessionStart }), vec![0x10, 5, 0x3a, 2, 0x08, 1]);
    }

    #[test]
    fn metrics_lines_map_to_train_and_eval_tags() {
        let (step, v) = scalars_of_line(&serde_json::json!({"step": 3, "epoch": 0, "loss": 1.25, "lr": 1e-4})).unwrap();
        assert_eq!(step, 3);
        assert_eq!(v, vec![("train/epoch".to_string(), 0.0), ("train/loss".into(), 1.25), ("train/lr".into(), 1e-4f64 as f32)]);
        let (_, v) = scalars_of_line(&serde_json::json!({"step": 4, "epoch": 1, "eval_loss": 2.5, "note": "x", "nan": null})).unwrap();
        assert_eq!(v, vec![("eval/epoch".to_string(), 1.0), ("eval/loss".into(), 2.5)]);
        assert!(scalars_of_line(&serde_json::json!({"loss": 1.0})).is_none());
    }
}
