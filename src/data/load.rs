//! Loading JSON arrays, JSONL and CSV into raw rows, checking every row up front.
//!
//! Every problem names the file, the row (and line) and the field, so a researcher can fix the
//! data without guessing. File-level problems (missing file, JSON syntax) are hard errors;
//! row-level ones are collected so all of them are reported at once.
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::recipe::{Columns, DataFormat};

/// Where a row came from: file, 1-based row, and the line it starts on when known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowRef {
    pub file: String,
    pub row: usize,
    pub line: Option<u64>,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} row {} (line {})", self.file, self.row, l),
            None => write!(f, "{} row {}", self.file, self.row),
        }
    }
}

/// An output as the file holds it: one text, or a list of steps.
#[derive(Debug, Clone, PartialEq)]
pub enum RawOutput {
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct RawRow {
    pub at: RowRef,
    pub prompt: String,
    pub output: RawOutput,
    pub group: Option<String>,
    pub id: Option<String>,
    /// The provenance column (`data.columns.source`): where the row came from (`synthetic` for
    /// rows written by `steptune augment`). Not the `data.mix` source, which `prepare` adds.
    pub provenance: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RowError {
    pub at: RowRef,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}, field `{}`: {}", self.at, field, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}

/// Which source field fed each example field in one file.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ColumnsUsed {
    pub prompt: String,
    pub output: String,
    pub group: Option<String>,
    pub id: Option<String>,
    pub source: Option<String>,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub rows: Vec<RawRow>,
    pub errors: Vec<RowError>,
    pub columns: ColumnsUsed,
    pub format: &'static str,
}

const PROMPT_NAMES: [&str; 5] = ["prompt", "instruction", "question", "input", "query"];
const OUTPUT_NAMES: [&str; 5] = ["output", "response", "answer", "steps", "completion"];
const GROUP_NAMES: [&str; 2] = ["group", "intent"];
const ID_NAMES: [&str; 1] = ["id"];
const SOURCE_NAMES: [&str; 1] = ["source"];

pub fn load_file(path: &Path, format: DataFormat, columns: &Columns) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read data file {}", path.display()))?;
    let format = match format {
        DataFormat::Auto => detect_format(path)?,
        f => f,
    };
    let name = path.display().to_string();
    match format {
        DataFormat::Csv => load_csv(&name, &bytes, path.extension().is_some_and(|e| e == "tsv"), columns),
        DataFormat::Jsonl => load_jsonl(&name, &bytes, columns),
        DataFormat::Json => load_json(&name, &bytes, columns),
        DataFormat::Auto => unreachable!(),
    }
}

fn detect_format(path: &Path) -> Result<DataFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "json" => DataFormat::Json,
        "jsonl" | "ndjson" => DataFormat::Jsonl,
        "csv" | "tsv" => DataFormat::Csv,
        _ => bail!("{}: cannot tell the format from the extension `.{ext}`; set `data.format` to json, jsonl or csv", path.display()),
    })
}

fn pick(explicit: &Option<String>, names: &[&str], present: &dyn Fn(&str) -> bool) -> Option<String> {
    match explicit {
        Some(c) => Some(c.clone()),
        None => names.iter().find(|n| present(n)).map(|n| n.to_string()),
    }
}

/// Resolves the column mapping against the fields a file has; an explicitly mapped column that
/// is missing is an error that lists what the file does have.
fn resolve_columns(file: &str, columns: &Columns, fields: &[String]) -> Result<ColumnsUsed> {
    // No row could be read at all: keep the usual names so each row's own error is reported.
    if fields.is_empty() {
        let or = |c: &Option<String>, d: &str| c.clone().unwrap_or_else(|| d.to_string());
        return Ok(ColumnsUsed {
            prompt: or(&columns.prompt, "prompt"),
            output: or(&columns.output, "output"),
            group: columns.group.clone(),
            id: columns.id.clone(),
            source: columns.source.clone(),
        });
    }
    let present = |n: &str| fields.iter().any(|f| f == n);
    let need = |explicit: &Option<String>, names: &[&str], what: &str| -> Result<String> {
        match pick(explicit, names, &present) {
            Some(c) if present(&c) => Ok(c),
            Some(c) => bail!("{file}: column `{c}` (data.columns.{what}) is not in the file; it has: {}", fields.join(", ")),
            None => bail!(
                "{file}: no {what} column; looked for {}. Map one with `data.columns.{what}`; the file has: {}",
                names.join(", "),
                fields.join(", ")
            ),
        }
    };
    let optional = |explicit: &Option<String>, names: &[&str], what: &str| -> Result<Option<String>> {
        match pick(explicit, names, &present) {
            Some(c) if present(&c) => Ok(Some(c)),
            Some(c) if explicit.is_some() => bail!("{file}: column `{c}` (data.columns.{what}) is not in the file; it has: {}", fields.join(", ")),
            _ => Ok(None),
        }
    };
    Ok(ColumnsUsed {
        prompt: need(&columns.prompt, &PROMPT_NAMES, "prompt")?,
        output: need(&columns.output, &OUTPUT_NAMES, "output")?,
        group: optional(&columns.group, &GROUP_NAMES, "group")?,
        id: optional(&columns.id, &ID_NAMES, "id")?,
        source: optional(&columns.source, &SOURCE_NAMES, "source")?,
    })
}

fn line_of_offset(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset.min(bytes.len())].iter().filter(|&&b| b == b'\n').count() as u64
}

fn utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let off = e.valid_up_to();
        anyhow::anyhow!("{file}: invalid UTF-8 at line {} (byte {off}); re-save the file as UTF-8", line_of_offset(bytes, off))
    })
}

fn load_json(file: &str, bytes: &[u8], columns: &Columns) -> Result<Loaded> {
    let text = utf8(file, bytes)?;
    let value: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{file}: not valid JSON at line {} column {}: {e}", e.line(), e.column()))?;
    let Value::Array(items) = value else {
        bail!("{file}: a JSON data file must hold an array of objects; for one object per line use .jsonl")
    };
    let fields = object_keys(items.iter());
    let used = resolve_columns(file, columns, &fields)?;
    let mut out = Loaded { columns: used, format: "json", ..Default::default() };
    for (i, item) in items.iter().enumerate() {
        let at = RowRef { file: file.to_string(), row: i + 1, line: None };
        row_from_json(at, item, &mut out);
    }
    Ok(out)
}

fn load_jsonl(file: &str, bytes: &[u8], columns: &Columns) -> Result<Loaded> {
    let mut parsed: Vec<(RowRef, Result<Value, RowError>)> = Vec::new();
    let mut row = 0;
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        row += 1;
        let at = RowRef { file: file.to_string(), row, line: Some(n as u64 + 1) };
        let value = match std::str::from_utf8(raw) {
            Err(e) => Err(RowError { at: at.clone(), field: None, message: format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()) }),
            Ok(s) => serde_json::from_str::<Value>(s)
                .map_err(|e| RowError { at: at.clone(), field: None, message: format!("not valid JSON at column {}: {e}", e.column()) }),
        };
        parsed.push((at, value));
    }
    let fields = object_keys(parsed.iter().filter_map(|(_, v)| v.as_ref().ok()));
    let used = resolve_columns(file, columns, &fields)?;
    let mut out = Loaded { columns: used, format: "jsonl", ..Default::default() };
    for (at, value) in parsed {
        match value {
            Ok(v) => row_from_json(at, &v, &mut out),
            Err(e) => out.errors.push(e),
        }
    }
    Ok(out)
}

/// Every key any object has, in order of first appearance: optional fields (a group) may be
/// absent from the first rows.
fn object_keys<'a>(items: impl Iterator<Item = &'a Value>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for o in items.filter_map(Value::as_object) {
        for k in o.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn row_from_json(at: RowRef, item: &Value, out: &mut Loaded) {
    let err = |field: Option<&str>, message: String| RowError { at: at.clone(), field: field.map(str::to_string), message };
    let Some(obj) = item.as_object() else {
        out.errors.push(err(None, format!("expected an object, found {}", type_name(item))));
        return;
    };
    let cols = out.columns.clone();
    let mut errors = Vec::new();
    let prompt = match obj.get(&cols.prompt) {
        Some(Value::String(s)) => check_text(s).map_err(|m| err(Some(&cols.prompt), m)),
        Some(v) => Err(err(Some(&cols.prompt), format!("must be a string, found {}", type_name(v)))),
        None => Err(err(Some(&cols.prompt), "is missing".into())),
    };
    let output = match obj.get(&cols.output) {
        Some(Value::String(s)) => check_text(s).map(RawOutput::Text).map_err(|m| err(Some(&cols.output), m)),
        Some(Value::Array(items)) => {
            let mut steps = Vec::with_capacity(items.len());
            let mut bad = None;
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) => match check_text(s) {
                        Ok(s) => steps.push(s),
                        Err(m) => bad = bad.or(Some(format!("step {} {m}", i + 1))),
                    },
                    other => bad = bad.or(Some(format!("step {} must be a string, found {}", i + 1, type_name(other)))),
                }
            }
            match bad {
                Some(m) => Err(err(Some(&cols.output), m)),
                None if steps.is_empty() => Err(err(Some(&cols.output), "is an empty list".into())),
                None => Ok(RawOutput::List(steps)),
            }
        }
        Some(v) => Err(err(Some(&cols.output), format!("must be a string or a list of strings, found {}", type_name(v)))),
        None => Err(err(Some(&cols.output), "is missing".into())),
    };
    let label = |name: &Option<String>, errors: &mut Vec<RowError>| -> Option<String> {
        let name = name.as_ref()?;
        match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(v) => {
                errors.push(err(Some(name), format!("must be a non-empty string or a number, found {}", type_name(v))));
                None
            }
        }
    };
    let group = label(&cols.group, &mut errors);
    let id = label(&cols.id, &mut errors);
    // A provenance object carries the source inside it: {"source": "synthetic", "model": ...}.
    let source = match cols.source.as_ref().and_then(|name| obj.get(name).map(|v| (name, v))) {
        Some((name, Value::Object(p))) => match p.get("source") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => {
                errors.push(err(Some(name), "is an object without a `source` string (write {\"source\": \"synthetic\", ...})".into()));
                None
            }
        },
        _ => label(&cols.source, &mut errors),
    };
    match (prompt, output) {
        (Ok(prompt), Ok(output)) if errors.is_empty() => out.rows.push(RawRow { at, prompt, output, group, id, provenance: source }),
        (p, o) => {
            out.errors.extend(p.err());
            out.errors.extend(o.err());
            out.errors.extend(errors);
        }
    }
}

/// A text field must hold something. (Special tokens inside text are checked once the
/// tokenizer is known: see `prepare`.)
fn check_text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("is empty".into());
    }
    Ok(s.to_string())
}

fn load_csv(file: &str, bytes: &[u8], tsv: bool, columns: &Columns) -> Result<Loaded> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(if tsv { b'\t' } else { b',' })
        .from_reader(bytes);
    let headers = reader.byte_headers().with_context(|| format!("{file}: cannot read the CSV header"))?.clone();
    let mut names = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let h = std::str::from_utf8(h).map_err(|_| anyhow::anyhow!("{file}: header column {} is not valid UTF-8", i + 1))?;
        names.push(h.trim_start_matches('\u{feff}').trim().to_string());
    }
    let used = resolve_columns(file, columns, &names)?;
    let index = |c: &str| names.iter().position(|n| n == c);
    let (pi, oi) = (index(&used.prompt).expect("resolved"), index(&used.output).expect("resolved"));
    let gi = used.group.as_deref().and_then(index);
    let ii = used.id.as_deref().and_then(index);
    let si = used.source.as_deref().and_then(index);
    let mut out = Loaded { columns: used.clone(), format: "csv", ..Default::default() };
    let mut record = csv::ByteRecord::new();
    let mut row = 0;
    loop {
        let at_line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(at_line);
                bail!("{file}: CSV error at line {line}: {e}");
            }
        }
        row += 1;
        let at = RowRef { file: file.to_string(), row, line: Some(record.position().map(|p| p.line()).unwrap_or(at_line)) };
        if record.len() != names.len() {
            out.errors.push(RowError {
                at,
                field: None,
                message: format!(
                    "has {} fields but the header has {}: a quote is probably unbalanced or a field holds an unquoted comma",
                    record.len(),
                    names.len()
                ),
            });
            continue;
        }
        let field = |i: usize| -> Result<String, RowError> {
            std::str::from_utf8(&record[i]).map(str::to_string).map_err(|e| RowError {
                at: at.clone(),
                field: Some(names[i].clone()),
                message: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            })
        };
        let mut errors = Vec::new();
        let prompt = field(pi).and_then(|s| check_text(&s).map_err(|m| RowError { at: at.clone(), field: Some(names[pi].clone()), message: m }));
        let output = field(oi).and_then(|s| check_text(&s).map_err(|m| RowError { at: at.clone(), field: Some(names[oi].clone()), message: m }));
        let mut optional = |i: Option<usize>| -> Option<String> {
            let i = i?;
            match field(i) {
                Ok(s) if s.trim().is_empty() => None,
                Ok(s) => Some(s.trim().to_string()),
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        };
        let group = optional(gi);
        let id = optional(ii);
        let source = optional(si);
        match (prompt, output) {
            (Ok(prompt), Ok(output)) if errors.is_empty() => out.rows.push(RawRow { at, prompt, output: RawOutput::Text(output), group, id, provenance: source }),
            (p, o) => {
                out.errors.extend(p.err());
                out.errors.extend(o.err());
                out.errors.extend(errors);
            }
        }
    }
    Ok(out)
}

/// The first `max` row errors, one per line, and how many more there are.
pub fn describe_errors(errors: &[RowError], max: usize) -> String {
    let mut s: Vec<String> = errors.iter().take(max).map(|e| format!("  {e}")).collect();
    if errors.len() > max {
        s.push(format!("  ... and {} more", errors.len() - max));
    }
    s.join("\n")
}
