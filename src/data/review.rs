//! `steptune review`: a domain expert approves rows before they are trained on (the Qwen3
//! document's review-and-approve step).
//!
//! `export` writes a CSV sheet of the rows (all, or only the synthetic ones `steptune augment`
//! wrote with `"source": "synthetic"`), each under a stable id: a hash of its prompt and output
//! as the data file holds them, so reordering the file or changing the cleaning keeps every
//! decision, and editing a row asks for a new one. `import` records the filled sheets' decisions
//! in `<run>/review.jsonl`; `prepare` then trains only on approved rows among those
//! `data.require_review` selects. Review applies to train rows: eval rows are never filtered
//! (that would silently change what is measured); their decisions are counted in the report.
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::prepare::{clean_rows, load_rows, split_rows, PrepareReport};
use super::Example;
use crate::recipe::{LoadedRecipe, RequireReview};
use crate::run::write_atomic;

/// The decisions file in the run folder.
pub const REVIEW_FILE: &str = "review.jsonl";

/// The value of the source field that marks a row as written by `steptune augment`.
pub const SYNTHETIC: &str = "synthetic";

/// The columns of a review sheet, in order.
pub const SHEET_COLUMNS: [&str; 7] = ["id", "split", "source", "prompt", "output", "approved", "comment"];

/// FNV-1a over the prompt, a unit separator and the output: the same on every platform and
/// Rust version, so an id written into a sheet today matches the row next year.
pub fn row_id(prompt: &str, output: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in prompt.bytes().chain([0x1f]).chain(output.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub fn is_synthetic(source: Option<&str>) -> bool {
    source.is_some_and(|s| s.trim().eq_ignore_ascii_case(SYNTHETIC))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
}

impl Decision {
    fn word(self) -> &'static str {
        match self {
            Decision::Approved => "yes",
            Decision::Rejected => "no",
        }
    }
}

/// An `approved` cell: yes/no/y/n/true/false/1/0 in any case, or empty for "not decided yet".
pub fn parse_approved(cell: &str) -> std::result::Result<Option<Decision>, ()> {
    match cell.trim().to_lowercase().as_str() {
        "" => Ok(None),
        "yes" | "y" | "true" | "1" => Ok(Some(Decision::Approved)),
        "no" | "n" | "false" | "0" => Ok(Some(Decision::Rejected)),
        _ => Err(()),
    }
}

/// One line of `review.jsonl`: the decision on a row and the sheet cell it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewRecord {
    pub id: String,
    pub decision: Decision,
    #[serde(default)]
    pub comment: String,
    pub sheet: String,
    pub row: usize,
}

/// The decisions of a run, by row id.
#[derive(Debug, Clone, Default)]
pub struct Reviews {
    pub records: BTreeMap<String, ReviewRecord>,
}

impl Reviews {
    /// `None` when the file does not exist (nothing was reviewed yet).
    pub fn read(path: &Path) -> Result<Option<Reviews>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read the review decisions {}", path.display())),
        };
        let mut records = BTreeMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: ReviewRecord = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!("{} line {}: not a review decision ({e}); fix the line or import the sheets again into a fresh file", path.display(), i + 1)
            })?;
            records.insert(r.id.clone(), r);
        }
        Ok(Some(Reviews { records }))
    }

    pub fn decision(&self, id: &str) -> Option<Decision> {
        self.records.get(id).map(|r| r.decision)
    }

    /// Sorted by id, so the same decisions always give the same bytes.
    fn write(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        for r in self.records.values() {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        write_atomic(path, &buf)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DecisionCounts {
    pub approved: usize,
    pub rejected: usize,
    pub pending: usize,
}

impl DecisionCounts {
    fn count(&mut self, d: Option<Decision>) {
        match d {
            Some(Decision::Approved) => self.approved += 1,
            Some(Decision::Rejected) => self.rejected += 1,
            None => self.pending += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.approved + self.rejected + self.pending
    }
}

/// What review did in `prepare`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReviewReport {
    /// `data.require_review` as set: auto, synthetic, true or false.
    pub require_review: String,
    /// Which train rows had to be approved: `none`, `synthetic` or `all`.
    pub enforced_on: String,
    /// Whether `<run>/review.jsonl` existed.
    pub review_file: bool,
    /// Rows marked synthetic, both splits.
    pub synthetic_rows: usize,
    /// Train rows under review, by decision; where review is enforced only approved ones train.
    pub train: DecisionCounts,
    /// Eval rows under review, by decision: never filtered, only counted.
    pub eval: DecisionCounts,
}

/// Keeps the train rows that may be trained on under `require`, and counts decisions in both
/// splits. Rows "under review" are the synthetic ones, or every row with `require_review: true`.
pub fn apply(train: Vec<Example>, eval: &[Example], require: RequireReview, reviews: Option<&Reviews>) -> (Vec<Example>, ReviewReport) {
    let (setting, enforced) = match require {
        RequireReview::Auto => ("auto", reviews.is_some()),
        RequireReview::Synthetic => ("synthetic", true),
        RequireReview::All => ("true", true),
        RequireReview::Off => ("false", false),
    };
    let every_row = require == RequireReview::All;
    let under_review = |e: &Example| every_row || is_synthetic(e.provenance.as_deref());
    let decision = |e: &Example| reviews.and_then(|r| r.decision(&e.review_id));
    let mut report = ReviewReport {
        require_review: setting.into(),
        enforced_on: match (enforced, every_row) {
            (false, _) => "none",
            (true, false) => "synthetic",
            (true, true) => "all",
        }
        .into(),
        review_file: reviews.is_some(),
        synthetic_rows: train.iter().chain(eval).filter(|e| is_synthetic(e.provenance.as_deref())).count(),
        ..Default::default()
    };
    for e in eval.iter().filter(|e| under_review(e)) {
        report.eval.count(decision(e));
    }
    let mut kept = Vec::with_capacity(train.len());
    for e in train {
        if !under_review(&e) {
            kept.push(e);
            continue;
        }
        let d = decision(&e);
        report.train.count(d);
        if !enforced || d == Some(Decision::Approved) {
            kept.push(e);
        }
    }
    (kept, report)
}

/// The console line and report paragraph on review; `None` when no row is under review and
/// nothing was reviewed.
pub fn review_summary(r: &ReviewReport) -> Option<String> {
    if r.train.total() + r.eval.total() == 0 && !r.review_file {
        return None;
    }
    let (t, e) = (&r.train, &r.eval);
    let mut s = match r.enforced_on.as_str() {
        "none" => format!(
            "review not enforced (data.require_review: {}{}): train rows under review {} approved, {} rejected, {} pending, all trained on",
            r.require_review,
            if r.review_file { "" } else { ", no review.jsonl yet" },
            t.approved,
            t.rejected,
            t.pending
        ),
        on => format!(
            "review of {on} train rows: {} approved (trained on), {} rejected and {} pending (left out)",
            t.approved, t.rejected, t.pending
        ),
    };
    if e.total() > 0 {
        let _ = write!(s, "; eval rows under review (kept, not filtered): {} approved, {} rejected, {} pending", e.approved, e.rejected, e.pending);
    }
    Some(s)
}

/// Which rows a sheet lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    Synthetic,
    All,
}

impl std::str::FromStr for ExportScope {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<ExportScope> {
        match s {
            "synthetic" => Ok(ExportScope::Synthetic),
            "all" => Ok(ExportScope::All),
            other => bail!("--only must be synthetic or all, not {other}"),
        }
    }
}

/// A row as the reviewer sees it: cleaned (steps numbered, personal data scrubbed) as it would
/// be trained on.
#[derive(Debug, Clone)]
pub struct SheetRow {
    pub id: String,
    pub split: &'static str,
    pub source: String,
    pub prompt: String,
    pub output: String,
}

/// The rows `prepare` would split, in split order (train first): loaded (every `data.mix` source
/// too), cleaned, deduplicated, capped and split exactly as `prepare` does, before any review
/// filter and before the mix weights (which choose among the rows review lets train).
pub fn reviewable_rows(recipe: &LoadedRecipe) -> Result<Vec<SheetRow>> {
    let mut report = PrepareReport::default();
    let raw = load_rows(recipe, &mut report)?;
    let examples = clean_rows(recipe, raw, &mut report)?;
    let (train, eval, _) = split_rows(recipe, examples, &mut report);
    // `steptune augment`'s wordings join train as prepare adds them: they are what review is for.
    let train = super::augment::add_to_train(recipe, train, &eval, &mut report.augmented)?;
    let row = |split: &'static str| {
        move |e: Example| SheetRow { id: e.review_id, split, source: e.provenance.unwrap_or_else(|| "original".into()), prompt: e.prompt, output: e.output }
    };
    Ok(train.into_iter().map(row("train")).chain(eval.into_iter().map(row("eval"))).collect())
}

#[derive(Debug, Clone, Default)]
pub struct ExportSummary {
    pub rows: usize,
    /// Rows whose `approved` cell holds an earlier decision from review.jsonl.
    pub already_decided: usize,
}

/// Writes the sheet; decisions already in `<run>/review.jsonl` are filled in, so a sheet
/// exported again continues where the last one stopped.
pub fn export(recipe: &LoadedRecipe, run_root: &Path, scope: ExportScope, out: &Path) -> Result<ExportSummary> {
    let rows: Vec<SheetRow> = reviewable_rows(recipe)?
        .into_iter()
        .filter(|r| scope == ExportScope::All || is_synthetic(Some(&r.source)))
        .collect();
    if rows.is_empty() {
        bail!(
            "no synthetic rows to review: no row has `source: synthetic` (the provenance column: `data.columns.source`, or a `data.mix` source's `columns.source`). Export every row with --only all"
        );
    }
    let reviews = Reviews::read(&run_root.join(REVIEW_FILE))?.unwrap_or_default();
    let mut w = csv::Writer::from_path(out).with_context(|| format!("cannot write the review sheet {}", out.display()))?;
    w.write_record(SHEET_COLUMNS)?;
    let mut summary = ExportSummary { rows: rows.len(), ..Default::default() };
    for r in &rows {
        let earlier = reviews.records.get(&r.id);
        summary.already_decided += usize::from(earlier.is_some());
        let approved = earlier.map_or("", |e| e.decision.word());
        let comment = earlier.map_or("", |e| e.comment.as_str());
        w.write_record([r.id.as_str(), r.split, &r.source, &r.prompt, &r.output, approved, comment])?;
    }
    w.flush().with_context(|| format!("cannot write the review sheet {}", out.display()))?;
    Ok(summary)
}

/// A decided cell of a sheet.
#[derive(Debug, Clone)]
struct SheetDecision {
    id: String,
    decision: Decision,
    comment: String,
    sheet: String,
    row: usize,
}

/// Reads one filled sheet; every bad cell is added to `errors` by file, row and column. Rows are
/// numbered as a spreadsheet shows them: the header is row 1.
fn read_sheet(path: &Path, errors: &mut Vec<String>) -> Vec<SheetDecision> {
    let name = path.display().to_string();
    let mut reader = match csv::ReaderBuilder::new().flexible(true).has_headers(true).from_path(path) {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("{name}: cannot read: {e}"));
            return Vec::new();
        }
    };
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim_start_matches('\u{feff}').trim().to_lowercase()).collect(),
        Err(e) => {
            errors.push(format!("{name}: cannot read the header row: {e}"));
            return Vec::new();
        }
    };
    let col = |c: &str| headers.iter().position(|h| h == c);
    let (Some(id_col), Some(approved_col)) = (col("id"), col("approved")) else {
        errors.push(format!(
            "{name}: the header row needs the columns id and approved (it has: {}); start from a sheet written by `steptune review export`",
            headers.join(", ")
        ));
        return Vec::new();
    };
    let comment_col = col("comment");
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let row = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{name} row {row}: cannot read: {e}"));
                continue;
            }
        };
        let cell = |c: usize| rec.get(c).unwrap_or("");
        let decision = match parse_approved(cell(approved_col)) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(()) => {
                errors.push(format!("{name} row {row}, column approved: '{}' is not yes/no/empty; write yes, no or leave empty", cell(approved_col)));
                continue;
            }
        };
        let id = cell(id_col).trim();
        if id.is_empty() {
            errors.push(format!("{name} row {row}, column id: empty; keep the id the sheet was exported with"));
            continue;
        }
        let comment = comment_col.map_or("", |c| cell(c)).trim().to_string();
        out.push(SheetDecision { id: id.to_string(), decision, comment, sheet: name.clone(), row });
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    pub path: PathBuf,
    /// Decided rows read from the sheets.
    pub decisions: usize,
    /// Rows whose recorded decision or comment this import changed.
    pub changed: usize,
    /// Sheet rows whose id matches no row of the data any more.
    pub unknown: Vec<String>,
    /// Rows decided differently within this import (the later sheet or row wins).
    pub conflicts: Vec<String>,
    /// All recorded decisions after the import.
    pub approved: usize,
    pub rejected: usize,
}

/// Reads the filled sheets in order and merges their decisions into `<run>/review.jsonl`: a
/// later decision wins, an empty cell changes nothing. Nothing is written when any cell is bad.
pub fn import(recipe: &LoadedRecipe, run_root: &Path, sheets: &[PathBuf]) -> Result<ImportSummary> {
    if sheets.is_empty() {
        bail!("no review sheets given");
    }
    let mut errors = Vec::new();
    let decided: Vec<SheetDecision> = sheets.iter().flat_map(|s| read_sheet(s, &mut errors)).collect();
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(20);
        let more = if n > 20 { format!("\n  ... and {} more", n - 20) } else { String::new() };
        bail!("{n} bad cells in the review sheets (nothing was recorded):\n  {}{more}", errors.join("\n  "));
    }
    let known: HashSet<String> = reviewable_rows(recipe)?.into_iter().map(|r| r.id).collect();
    let path = run_root.join(REVIEW_FILE);
    let mut reviews = Reviews::read(&path)?.unwrap_or_default();
    let mut summary = ImportSummary { path: path.clone(), decisions: decided.len(), ..Default::default() };
    let mut this_import: BTreeMap<&str, &SheetDecision> = BTreeMap::new();
    for d in &decided {
        if let Some(prev) = this_import.insert(&d.id, d) {
            if prev.decision != d.decision {
                summary.conflicts.push(format!(
                    "row {}: {} row {} says {}, {} row {} says {}; the later ({} row {}) is kept",
                    d.id,
                    prev.sheet,
                    prev.row,
                    prev.decision.word(),
                    d.sheet,
                    d.row,
                    d.decision.word(),
                    d.sheet,
                    d.row
                ));
            }
        }
        if !known.contains(&d.id) {
            summary.unknown.push(format!(
                "{} row {}: id {} matches no row of the data (the row was edited or removed); its decision is recorded but applies to nothing",
                d.sheet, d.row, d.id
            ));
        }
        let record = ReviewRecord { id: d.id.clone(), decision: d.decision, comment: d.comment.clone(), sheet: d.sheet.clone(), row: d.row };
        if let Some(old) = reviews.records.get(&d.id) {
            if old.decision == record.decision && old.comment == record.comment {
                reviews.records.insert(d.id.clone(), ReviewRecord { sheet: old.sheet.clone(), row: old.row, ..record });
                continue;
            }
        }
        summary.changed += 1;
        reviews.records.insert(d.id.clone(), record);
    }
    // A row decided twice in one import counts once as changed.
    summary.changed = summary.changed.min(this_import.len());
    std::fs::create_dir_all(run_root).with_context(|| format!("cannot create the run folder {}", run_root.display()))?;
    reviews.write(&path)?;
    summary.approved = reviews.records.values().filter(|r| r.decision == Decision::Approved).count();
    summary.rejected = reviews.records.len() - summary.approved;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approved_cells() {
        for yes in ["yes", "Y", " TRUE ", "1", "Yes"] {
            assert_eq!(parse_approved(yes), Ok(Some(Decision::Approved)), "{yes}");
        }
        for no in ["no", "N", "False", "0"] {
            assert_eq!(parse_approved(no), Ok(Some(Decision::Rejected)), "{no}");
        }
        assert_eq!(parse_approved("  "), Ok(None));
        for bad in ["maybe", "ok", "2", "yes!"] {
            assert_eq!(parse_approved(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn row_ids_are_stable_and_tell_prompt_from_output() {
        // Fixed value: ids written into sheets must never change between versions.
        assert_eq!(row_id("a", "b"), row_id("a", "b"));
        assert_eq!(row_id("", ""), format!("{:016x}", {
            let mut h: u64 = 0xcbf29ce484222325;
            h ^= 0x1f;
            h.wrapping_mul(0x100000001b3)
        }));
        assert_ne!(row_id("ab", "c"), row_id("a", "bc"));
        assert_eq!(row_id("x", "y").len(), 16);
    }
}
