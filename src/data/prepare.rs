//! `steptune prepare`: raw files → checked, cleaned, split, templated and tokenised examples in
//! `<run>/prepared/{train,eval}.jsonl`, with `prepare_report.{md,json}` saying what was done.
//!
//! Order matters: outputs are normalised and scrubbed before deduplication (so two rows that
//! differ only by an e-mail address are duplicates), and oversampling happens after the split
//! (so no copy of a train row can land in eval).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;

use super::dedup::{dedup, text_key, DedupReport};
use super::load::{describe_errors, load_file, ColumnsUsed, RawOutput, RawRow, RowError};
use super::review::{self, ReviewReport, Reviews, REVIEW_FILE};
use super::pii::PiiCounts;
use super::split::{oversample, split, SplitReport};
use super::stats::{round_up, split_stats, SplitStats};
use super::steps::{normalise_list, normalise_text, StepShape};
use super::encode::{encode_seq2seq_batch, ChatEncoder, Encoded, IGNORE_INDEX};
use super::mix::{cap_sources, weigh_sources, SourceReport};
use super::window::{chat_windows, seq2seq_windows, Window};
use crate::model::chat_template::ChatTemplate;
use super::Example;
use crate::model::source::{self, ModelKind};
use crate::model::tokenizer::TokenizerBundle;
use crate::recipe::{BadRows, Columns, DataFormat, GroupBy, LoadedRecipe, NoSteps, OverLength};
use crate::run::{write_atomic, RunDir};

/// One example ready for training, as written to `prepared/*.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub id: String,
    pub split: &'static str,
    pub group: String,
    pub prompt: String,
    pub output: String,
    /// 0 for an original row, k for the k-th oversampled copy.
    pub copy: usize,
    pub truncated: bool,
    /// The `data.mix` source the row came from (absent for `data.files`), so later stages can
    /// break scores down by source.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `over_length: sliding_window`: which window of its example this is; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    #[serde(flatten)]
    pub enc: Encoded,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReport {
    /// The `data.mix` source; empty for `data.files`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub file: String,
    pub format: &'static str,
    pub rows: usize,
    pub bad_rows: usize,
    pub columns: ColumnsUsed,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LengthPolicyReport {
    pub max_length: usize,
    pub policy: String,
    pub truncated: Vec<String>,
    pub dropped: Vec<String>,
    /// sliding_window: the examples cut into windows, and how many windows they gave in all.
    pub windowed: Vec<String>,
    pub windows_made: usize,
    /// Rows whose prompt alone reaches max_length: nothing would be left to learn, so they go.
    pub dropped_prompt_too_long: Vec<String>,
    /// The smallest multiple of 64 that holds 99% of the rows, and one that holds all of them.
    pub suggested_max_length_p99: usize,
    pub suggested_max_length_all: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    pub model_kind: Option<ModelKind>,
    pub tokenizer: String,
    pub files: Vec<FileReport>,
    /// `data.mix`: rows per source through cleaning, capping, the split, review and the weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceReport>,
    pub rows_loaded: usize,
    pub bad_rows: Vec<RowError>,
    pub limited_to: Option<usize>,
    pub output_shapes: BTreeMap<String, usize>,
    pub dropped_no_steps: usize,
    pub pii: PiiCounts,
    pub dedup: DedupReport,
    /// Reviewers' decisions on the rows that need them (`data.require_review`).
    pub review: ReviewReport,
    pub split: SplitReport,
    /// `<run>/augmented.jsonl` rows added to train (`steptune augment`).
    pub augmented: super::augment::AugmentAdded,
    pub length: LengthPolicyReport,
    pub stats_train: SplitStats,
    pub stats_eval: SplitStats,
    pub seconds: BTreeMap<String, f64>,
}

pub struct PrepareOutput {
    pub train: Vec<Prepared>,
    pub eval: Vec<Prepared>,
    pub report: PrepareReport,
    pub tokenizer: TokenizerBundle,
}

struct Timer(Instant);
impl Timer {
    fn lap(&mut self, seconds: &mut BTreeMap<String, f64>, name: &str) {
        seconds.insert(name.to_string(), self.0.elapsed().as_secs_f64());
        self.0 = Instant::now();
    }
}

/// Runs the data stage and writes its files into the run folder (where it also finds the
/// reviewers' decisions, `review.jsonl`).
pub fn run(recipe: &LoadedRecipe, run: &RunDir) -> Result<PrepareOutput> {
    let out = prepare_in(recipe, &run.root)?;
    write_outputs(run, &out)?;
    Ok(out)
}

/// The data stage without writing anything (tests and benchmarks call this); review decisions
/// come from the recipe's output folder.
pub fn prepare(recipe: &LoadedRecipe) -> Result<PrepareOutput> {
    prepare_in(recipe, &recipe.output_dir())
}

/// The data stage with the review decisions of the run folder `run_root`.
pub fn prepare_in(recipe: &LoadedRecipe, run_root: &Path) -> Result<PrepareOutput> {
    let r = &recipe.recipe;
    let d = &r.data;
    let mut report = PrepareReport::default();
    let mut t = Timer(Instant::now());
    let t0 = Instant::now();

    let raw = load_rows(recipe, &mut report)?;
    t.lap(&mut report.seconds, "load");
    let examples = clean_rows(recipe, raw, &mut report)?;
    t.lap(&mut report.seconds, "normalise_and_scrub");

    // 3. Deduplicate, cap the mix sources, then split by paraphrase, add `steptune augment`'s new
    // wordings to train, hold back train rows that need a reviewer's approval (the augmented ones
    // are synthetic), weigh the mix sources, and oversample rare train groups.
    // Review comes before the weights, so a weighted source is its fraction of the rows allowed
    // to train (every one of which was on the sheet `steptune review export` wrote).
    let (train, eval, mut split_report) = split_rows(recipe, examples, &mut report);
    let train = super::augment::add_to_train(recipe, train, &eval, &mut report.augmented)?;
    let train_split = if d.mix.is_empty() { BTreeMap::new() } else { rows_per_source(&train) };
    let reviews = Reviews::read(&run_root.join(REVIEW_FILE))?;
    let (train, review_report) = review::apply(train, &eval, d.require_review, reviews.as_ref());
    report.review = review_report;
    if train.is_empty() {
        bail!(
            "no train rows are left after review: {} rows need approval and none is approved ({} rejected, {} pending). \
             Write a sheet with `steptune review export`, have it filled, read it back with `steptune review import`, \
             or set `data.require_review: false`",
            report.review.train.total(),
            report.review.train.rejected,
            report.review.train.pending
        );
    }
    let train_reviewed = if d.mix.is_empty() { BTreeMap::new() } else { rows_per_source(&train) };
    let (train, eval) = if d.mix.is_empty() { (train, eval) } else { weigh_sources(train, eval, &d.mix, r.seed, &mut report.sources)? };
    for src in &mut report.sources {
        let (split_n, reviewed_n) = (train_split.get(&src.name).copied().unwrap_or(0), train_reviewed.get(&src.name).copied().unwrap_or(0));
        src.train_rows_split = split_n;
        src.review_held_back = split_n - reviewed_n;
    }
    split_report.train_rows = train.len();
    split_report.eval_rows = eval.len();
    let train = oversample(train, d.oversample_min_rows, r.seed, &mut split_report);
    report.split = split_report;
    t.lap(&mut report.seconds, "dedup_and_split");

    // 4. Tokenizer: trained on the train split for tiny models, else the model's own.
    let files = source::resolve(recipe, false)?;
    let kind = files.kind();
    report.model_kind = Some(kind);
    let tokenizer = match (&r.model.train_tokenizer, &r.model.tokenizer, &files.dir) {
        (Some(cfg), _, _) => {
            let texts: Vec<&str> = train.iter().filter(|e| e.copy == 0).flat_map(|e| [e.prompt.as_str(), e.output.as_str()]).collect();
            report.tokenizer = format!("byte-level BPE trained on the train split (vocab {})", cfg.vocab_size);
            TokenizerBundle::train_bpe(texts.into_iter(), cfg.vocab_size, cfg.min_frequency)?
        }
        (None, Some(dir), _) => {
            let dir = recipe.resolve(dir).context("model.tokenizer")?;
            report.tokenizer = dir.display().to_string();
            TokenizerBundle::from_dir(&dir)?
        }
        (None, None, Some(dir)) => {
            report.tokenizer = dir.display().to_string();
            TokenizerBundle::from_dir(dir)?
        }
        (None, None, None) => bail!(
            "no tokenizer for `{}`: it is not downloaded; set `model.tokenizer` to a folder with tokenizer.json, or \
             `model.train_tokenizer` for a tiny model",
            r.model.source
        ),
    };
    let mut tokenizer = tokenizer;
    if let Some(t) = &r.model.chat_template {
        tokenizer.chat_template = Some(t.clone());
    }
    // A special or control token written inside the data (`<|im_start|>`, `</think>`, `</s>`)
    // would forge a turn or end the sequence early: such rows are bad rows, under on_bad_row.
    let specials: Vec<String> = tokenizer.added_tokens().into_iter().filter(|t| t.chars().count() >= 3).collect();
    let mut forged = Vec::new();
    let mut keep_clean = |rows: Vec<Example>| -> Vec<Example> {
        rows.into_iter()
            .filter(|e| {
                let hit = [("prompt", &e.prompt), ("output", &e.output)]
                    .into_iter()
                    .find_map(|(field, text)| specials.iter().find(|t| text.contains(t.as_str())).map(|t| (field, t)));
                match hit {
                    Some((field, tok)) => {
                        forged.push(RowError {
                            at: e.at.clone(),
                            field: Some(field.into()),
                            message: format!("contains the tokenizer's special token `{tok}`, which would forge a turn or end the sequence; write it differently or drop the row"),
                        });
                        false
                    }
                    None => true,
                }
            })
            .collect()
    };
    let train = keep_clean(train);
    let eval = keep_clean(eval);
    if !forged.is_empty() {
        if d.on_bad_row == BadRows::Error {
            bail!(
                "{} rows contain special or control tokens of the tokenizer:\n{}\nRemove them from the data, or set `data.on_bad_row: skip`.",
                forged.len(),
                describe_errors(&forged, 20)
            );
        }
        report.bad_rows.extend(forged);
    }
    t.lap(&mut report.seconds, "tokenizer");

    // 5. Template and tokenise; label only the answer.
    let chat = match kind {
        ModelKind::Causal => {
            let mut enc = ChatEncoder::new(&tokenizer, ChatTemplate::from_tokenizer(&tokenizer)?, r.model.system_prompt.clone(), r.model.enable_thinking)?;
            enc.train_on_prompt = d.train_on_prompt;
            Some(enc)
        }
        ModelKind::Seq2Seq => None,
    };
    let encode = |rows: &[Example]| -> Result<Vec<Encoded>> {
        let pairs: Vec<(&str, &str)> = rows.iter().map(|e| (e.prompt.as_str(), e.output.as_str())).collect();
        match &chat {
            None => encode_seq2seq_batch(&tokenizer, &pairs),
            Some(enc) => {
                let mut out = Vec::with_capacity(rows.len());
                let mut errors = Vec::new();
                for (row, res) in rows.iter().zip(enc.encode_batch(&pairs)) {
                    match res {
                        Ok(e) => out.push(e),
                        Err(e) => errors.push(format!("  {}: {e}", row.at)),
                    }
                }
                if !errors.is_empty() {
                    let n = errors.len();
                    errors.truncate(20);
                    bail!("{n} rows could not be templated:\n{}", errors.join("\n"));
                }
                Ok(out)
            }
        }
    };
    let train_enc = encode(&train)?;
    let eval_enc = encode(&eval)?;
    t.lap(&mut report.seconds, "template_and_tokenize");

    // 6. Statistics before the length policy, then the policy itself.
    let limited = |e: &Encoded| limited_len(kind, e);
    let stats = |enc: &[Encoded]| {
        let col = |f: &dyn Fn(&Encoded) -> usize| enc.iter().map(f).collect::<Vec<usize>>();
        split_stats(&col(&|e| e.prompt_tokens), &col(&|e| e.answer_tokens), &col(&|e| e.total_tokens), &col(&limited), d.max_length)
    };
    report.stats_train = stats(&train_enc);
    report.stats_eval = stats(&eval_enc);
    let all_totals: Vec<usize> = train_enc.iter().chain(&eval_enc).map(limited).collect();
    let all = super::stats::summarize(&all_totals);
    report.length = LengthPolicyReport {
        max_length: d.max_length,
        policy: serde_json::to_value(d.over_length).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        suggested_max_length_p99: round_up(all.p99, 64),
        suggested_max_length_all: round_up(all.max as f64, 64),
        ..Default::default()
    };
    let policy = LengthPolicy { kind, max_length: d.max_length, over_length: d.over_length, window_stride: d.window_stride };
    let train = apply_length_policy(train, train_enc, "train", &policy, &mut report.length)?;
    let eval = apply_length_policy(eval, eval_enc, "eval", &policy, &mut report.length)?;
    for source in &mut report.sources {
        source.prepared_train = train.iter().filter(|p| p.source == source.name).count();
        source.prepared_eval = eval.iter().filter(|p| p.source == source.name).count();
    }
    if train.is_empty() {
        bail!("no train rows are left after the length policy; raise data.max_length (suggested: {})", report.length.suggested_max_length_all);
    }
    t.lap(&mut report.seconds, "length_policy");
    report.seconds.insert("total".into(), t0.elapsed().as_secs_f64());
    Ok(PrepareOutput { train, eval, report, tokenizer })
}

/// 1. Loads and checks every row of every file of every source (`data.files`, or each `data.mix`
/// source); each row comes with its `data.mix` source's name (empty for `data.files`).
/// `steptune review` reads the same rows.
pub fn load_rows(recipe: &LoadedRecipe, report: &mut PrepareReport) -> Result<Vec<(String, RawRow)>> {
    let d = &recipe.recipe.data;
    let mut raw = Vec::new();
    for source in sources_of(d) {
        let mut source_report = SourceReport { name: source.name.clone(), weight: source.weight, max_rows: source.max_rows, ..Default::default() };
        for f in &source.files {
            let path = recipe.resolve(f).with_context(|| format!("{}: {}", source.files_key, f.display()))?;
            let loaded = load_file(&path, source.format, &source.columns).with_context(|| format!("{}: {}", source.files_key, f.display()))?;
            report.files.push(FileReport {
                source: source.name.clone(),
                file: path.display().to_string(),
                format: loaded.format,
                rows: loaded.rows.len() + loaded.errors.len(),
                bad_rows: loaded.errors.len(),
                columns: loaded.columns.clone(),
            });
            source_report.files.push(path.display().to_string());
            source_report.rows_loaded += loaded.rows.len() + loaded.errors.len();
            source_report.bad_rows += loaded.errors.len();
            raw.extend(loaded.rows.into_iter().map(|row| (source.name.clone(), row)));
            report.bad_rows.extend(loaded.errors);
        }
        if !d.mix.is_empty() {
            report.sources.push(source_report);
        }
    }
    report.rows_loaded = raw.len() + report.bad_rows.len();
    if !report.bad_rows.is_empty() && d.on_bad_row == BadRows::Error {
        bail!(
            "{} of {} rows failed validation:\n{}\nFix these rows, or set `data.on_bad_row: skip` to leave them out (they are then listed in prepare_report.md).",
            report.bad_rows.len(),
            report.rows_loaded,
            describe_errors(&report.bad_rows, 20)
        );
    }
    if let Some(n) = d.limit {
        if raw.len() > n {
            raw.truncate(n);
            report.limited_to = Some(n);
        }
    }
    Ok(raw)
}

/// 2. Normalises outputs to numbered steps and scrubs personal data; each example keeps the
/// review id of the row as the file holds it, so a reviewer's decision survives changes to
/// the cleaning.
pub fn clean_rows(recipe: &LoadedRecipe, raw: Vec<(String, RawRow)>, report: &mut PrepareReport) -> Result<Vec<Example>> {
    let d = &recipe.recipe.data;
    let scrubber = super::pii::scrubber_of(recipe)?;
    let mut examples = Vec::with_capacity(raw.len());
    for (source, row) in raw {
        let (output, shape) = match (&row.output, d.normalize_steps) {
            (RawOutput::List(items), _) => {
                let n = normalise_list(items);
                (n.text, n.shape)
            }
            (RawOutput::Text(text), true) => {
                let n = normalise_text(text, d.step_style);
                (n.text, n.shape)
            }
            (RawOutput::Text(text), false) => (text.trim().to_string(), StepShape::NoSteps),
        };
        let shape_name = serde_json::to_value(&shape).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        *report.output_shapes.entry(shape_name).or_default() += 1;
        if shape == StepShape::NoSteps && d.normalize_steps && d.on_no_steps == NoSteps::Drop {
            report.dropped_no_steps += 1;
            continue;
        }
        let (prompt, output) = match &scrubber {
            Some(s) => {
                let (p, c1) = s.scrub(row.prompt.trim());
                let (o, c2) = s.scrub(&output);
                report.pii.add(&c1);
                report.pii.add(&c2);
                (p, o)
            }
            None => (row.prompt.trim().to_string(), output),
        };
        let group = match (d.group_by, &row.group) {
            (GroupBy::Output, _) | (GroupBy::Auto, None) => text_key(&output),
            (_, Some(g)) => g.clone(),
            (GroupBy::Column, None) => bail!("{}: no group value, but `data.group_by` is `column`; fill the group column or use group_by: auto", row.at),
        };
        // Two sources' equal group names are different intents: namespaced, they never merge.
        let group = if source.is_empty() { group } else { format!("{source}/{group}") };
        let file_stem = Path::new(&row.at.file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let id = row.id.clone().unwrap_or_else(|| format!("{file_stem}:{}", row.at.row));
        let review_id = review::row_id(row.prompt.trim(), &raw_output_text(&row.output));
        examples.push(Example { id, prompt, output, group, at: row.at, copy: 0, source, provenance: row.provenance, review_id });
    }
    if examples.is_empty() {
        bail!("no usable rows are left after cleaning (loaded {}, dropped without steps {})", report.rows_loaded, report.dropped_no_steps);
    }
    Ok(examples)
}

/// The output as the file holds it: the text, or the steps one per line.
fn raw_output_text(output: &RawOutput) -> String {
    match output {
        RawOutput::Text(t) => t.trim().to_string(),
        RawOutput::List(items) => items.iter().map(|s| s.trim()).collect::<Vec<_>>().join("\n"),
    }
}

/// 3. Deduplicates over all sources, caps the `data.mix` sources (`max_rows`) and splits by
/// paraphrase: the rows review and the mix weights then choose from, which `steptune review
/// export` lists.
pub fn split_rows(recipe: &LoadedRecipe, examples: Vec<Example>, report: &mut PrepareReport) -> (Vec<Example>, Vec<Example>, SplitReport) {
    let (r, d) = (&recipe.recipe, &recipe.recipe.data);
    let (examples, dedup_report) = dedup(examples, d.dedup.exact, d.dedup.near_threshold);
    report.dedup = dedup_report;
    let examples = if d.mix.is_empty() { examples } else { cap_sources(examples, &d.mix, r.seed, &mut report.sources) };
    split(examples, &d.split, r.seed)
}

fn rows_per_source(rows: &[Example]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in rows {
        *n.entry(e.source.clone()).or_insert(0) += 1;
    }
    n
}

/// One source to load: `data.files` alone, or one `data.mix` source with `data.format` and
/// `data.columns` filling what it leaves unset.
struct LoadSource {
    /// Empty for `data.files`.
    name: String,
    /// The recipe key that lists the files, for errors (`data.files`, `data.mix[1] (general).files`).
    files_key: String,
    files: Vec<std::path::PathBuf>,
    format: DataFormat,
    columns: Columns,
    weight: Option<f64>,
    max_rows: Option<usize>,
}

fn sources_of(d: &crate::recipe::DataSection) -> Vec<LoadSource> {
    if d.mix.is_empty() {
        return vec![LoadSource { name: String::new(), files_key: "data.files".into(), files: d.files.clone(), format: d.format, columns: d.columns.clone(), weight: None, max_rows: None }];
    }
    d.mix
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let or = |own: &Option<String>, shared: &Option<String>| own.clone().or_else(|| shared.clone());
            LoadSource {
                name: s.name.clone(),
                files_key: format!("data.mix[{i}] ({}).files", s.name),
                files: s.files.clone(),
                format: if s.format == DataFormat::Auto { d.format } else { s.format },
                columns: Columns {
                    prompt: or(&s.columns.prompt, &d.columns.prompt),
                    output: or(&s.columns.output, &d.columns.output),
                    group: or(&s.columns.group, &d.columns.group),
                    id: or(&s.columns.id, &d.columns.id),
                    source: or(&s.columns.source, &d.columns.source),
                },
                weight: s.weight,
                max_rows: s.max_rows,
            }
        })
        .collect()
}

/// The length `max_length` bounds: the one sequence (chat), or the longer side (seq2seq).
fn limited_len(kind: ModelKind, e: &Encoded) -> usize {
    match kind {
        ModelKind::Causal => e.input_ids.len(),
        ModelKind::Seq2Seq => e.input_ids.len().max(e.labels.len()),
    }
}

/// What `apply_length_policy` needs of the recipe and the model.
struct LengthPolicy {
    kind: ModelKind,
    max_length: usize,
    over_length: OverLength,
    window_stride: Option<usize>,
}

fn apply_length_policy(rows: Vec<Example>, encs: Vec<Encoded>, split: &'static str, policy: &LengthPolicy, rep: &mut LengthPolicyReport) -> Result<Vec<Prepared>> {
    let (kind, max_len) = (policy.kind, policy.max_length);
    let mut out = Vec::with_capacity(rows.len());
    let mut too_long = Vec::new();
    for (row, mut enc) in rows.into_iter().zip(encs) {
        let over = limited_len(kind, &enc) > max_len;
        let name = format!("{} ({} tokens)", row.at, enc.total_tokens);
        let mut truncated = false;
        if over {
            match policy.over_length {
                OverLength::Error => {
                    too_long.push(name);
                    continue;
                }
                OverLength::Drop => {
                    rep.dropped.push(name);
                    continue;
                }
                OverLength::SlidingWindow => {
                    let windows = match kind {
                        ModelKind::Causal => chat_windows(&enc, max_len, policy.window_stride),
                        ModelKind::Seq2Seq => seq2seq_windows(&enc, max_len, policy.window_stride),
                    };
                    // Every window carries the whole prompt: one that alone does not fit is dropped.
                    let Some(windows) = windows else {
                        rep.dropped_prompt_too_long.push(name);
                        continue;
                    };
                    rep.windows_made += windows.len();
                    rep.windowed.push(format!("{name}: {} windows", windows.len()));
                    for (window, enc) in windows {
                        out.push(Prepared {
                            id: row.id.clone(),
                            split,
                            group: row.group.clone(),
                            prompt: row.prompt.clone(),
                            output: row.output.clone(),
                            copy: row.copy,
                            truncated: false,
                            source: row.source.clone(),
                            window: Some(window),
                            enc,
                        });
                    }
                    continue;
                }
                OverLength::Truncate => {
                    if kind == ModelKind::Causal && enc.prompt_tokens >= max_len {
                        rep.dropped_prompt_too_long.push(name);
                        continue;
                    }
                    enc.input_ids.truncate(max_len);
                    enc.labels.truncate(max_len);
                    enc.prompt_tokens = enc.prompt_tokens.min(enc.input_ids.len());
                    // Chat labels may cover the prompt too (train_on_prompt): count the answer only.
                    let answer_from = if kind == ModelKind::Causal { enc.prompt_tokens } else { 0 };
                    enc.answer_tokens = enc.labels.iter().skip(answer_from).filter(|&&l| l != IGNORE_INDEX).count();
                    enc.total_tokens = match kind {
                        ModelKind::Causal => enc.input_ids.len(),
                        ModelKind::Seq2Seq => enc.input_ids.len() + enc.labels.len(),
                    };
                    truncated = true;
                    rep.truncated.push(name);
                }
            }
        }
        out.push(Prepared { id: row.id, split, group: row.group, prompt: row.prompt, output: row.output, copy: row.copy, truncated, source: row.source, window: None, enc });
    }
    if !too_long.is_empty() {
        let n = too_long.len();
        too_long.truncate(20);
        bail!(
            "{n} {split} rows are longer than data.max_length = {max_len}:\n  {}\nRaise data.max_length (holds 99%: {}, holds all: {}), or set data.over_length to truncate, drop or sliding_window.",
            too_long.join("\n  "),
            rep.suggested_max_length_p99,
            rep.suggested_max_length_all
        );
    }
    Ok(out)
}

fn jsonl(rows: &[Prepared]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(rows.len() * 512);
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

pub fn write_outputs(run: &RunDir, out: &PrepareOutput) -> Result<()> {
    write_atomic(&run.path("prepared/train.jsonl"), &jsonl(&out.train)?)?;
    write_atomic(&run.path("prepared/eval.jsonl"), &jsonl(&out.eval)?)?;
    out.tokenizer.save(&run.path("tokenizer"))?;
    write_atomic(&run.path("prepare_report.json"), serde_json::to_string_pretty(&out.report)?.as_bytes())?;
    write_atomic(&run.path("prepare_report.md"), report_markdown(&out.report).as_bytes())?;
    Ok(())
}

fn fmt_summary(s: &super::stats::Summary) -> String {
    format!("{} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {}", s.min, s.mean, s.p50, s.p90, s.p95, s.p99, s.max)
}

pub fn report_markdown(r: &PrepareReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Data preparation report\n");
    let _ = writeln!(s, "Model kind: {:?}. Tokenizer: {}.\n", r.model_kind.unwrap_or(ModelKind::Causal), r.tokenizer);
    let _ = writeln!(s, "## Files\n\n| file | format | rows | bad rows | prompt ← | output ← | group ← |\n|---|---|---|---|---|---|---|");
    for f in &r.files {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.file, f.format, f.rows, f.bad_rows, f.columns.prompt, f.columns.output, f.columns.group.as_deref().unwrap_or("(by output)")
        );
    }
    if !r.bad_rows.is_empty() {
        let _ = writeln!(s, "\n{} rows were skipped (data.on_bad_row: skip):\n", r.bad_rows.len());
        for e in r.bad_rows.iter().take(50) {
            let _ = writeln!(s, "- {e}");
        }
    }
    if !r.sources.is_empty() {
        let _ = writeln!(
            s,
            "\n## Sources (data.mix)\n\n| source | weight / cap | rows loaded | bad | after cleaning | kept | train / eval after split | train held back by review | train / eval mixed | train share | prepared train / eval |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for src in &r.sources {
            let sizing = match (src.weight, src.max_rows) {
                (Some(w), _) => format!("weight {w}"),
                (None, Some(n)) => format!("max_rows {n}"),
                (None, None) => "all rows".to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {sizing} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {:.3} | {} / {} |",
                src.name,
                src.rows_loaded,
                src.bad_rows,
                src.rows_cleaned,
                src.rows_kept,
                src.train_rows_split,
                src.eval_rows_split,
                src.review_held_back,
                src.train_rows,
                src.eval_rows,
                src.train_share,
                src.prepared_train,
                src.prepared_eval
            );
        }
    }
    if let Some(n) = r.limited_to {
        let _ = writeln!(s, "\nKept only the first {n} rows (data.limit).");
    }
    let _ = writeln!(s, "\n## Cleaning\n");
    let shapes: Vec<String> = r.output_shapes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(s, "- Output shapes found: {}.", shapes.join(", "));
    let _ = writeln!(s, "- Dropped for having no steps: {}.", r.dropped_no_steps);
    let _ = writeln!(
        s,
        "- Personal data replaced: {} e-mail, {} phone, {} card, {} IP, {} name, {} NIK, {} NPWP, {} bank account.",
        r.pii.email, r.pii.phone, r.pii.card, r.pii.ip, r.pii.name, r.pii.nik, r.pii.npwp, r.pii.bank_account
    );
    let _ = writeln!(
        s,
        "- Duplicates removed: {} exact, {} near; {} prompts appear with different outputs.",
        r.dedup.exact.len(),
        r.dedup.near.len(),
        r.dedup.conflicting_prompts
    );
    for d in r.dedup.exact.iter().chain(&r.dedup.near).take(10) {
        let _ = writeln!(s, "  - {} duplicates {} (similarity {:.2})", d.removed, d.kept, d.similarity);
    }
    if let Some(line) = review::review_summary(&r.review) {
        let _ = writeln!(s, "\n## Review\n");
        let _ = writeln!(s, "- {line}.");
        let _ = writeln!(s, "- Synthetic rows: {}. Decisions come from `review.jsonl` (`steptune review import`).", r.review.synthetic_rows);
    }
    let sp = &r.split;
    let _ = writeln!(s, "\n## Split\n");
    let _ = writeln!(s, "- {} groups; {} train rows, {} eval rows.", sp.groups, sp.train_rows, sp.eval_rows);
    if !r.augmented.file.is_empty() {
        let a = &r.augmented;
        let _ = writeln!(s, "- Augmented wordings added to train: {} of {} in {} (rejected: {:?}).", a.added, a.rows_in_file, a.file, a.rejected);
    }
    let _ = writeln!(s, "- Oversampled: {} rows added to {} small train groups.", sp.oversampled_rows, sp.oversampled_groups);
    let _ = writeln!(s, "- Eval rows moved to train because their prompt was also in train: {}.", sp.leaks_moved);
    if !sp.single_row_groups.is_empty() {
        let shown: Vec<&str> = sp.single_row_groups.iter().take(20).map(String::as_str).collect();
        let _ = writeln!(s, "- {} single-row groups (train only, not evaluated): {}.", sp.single_row_groups.len(), shown.join(", "));
    }
    let _ = writeln!(s, "\n## Token lengths\n\n| split | part | min | mean | p50 | p90 | p95 | p99 | max |\n|---|---|---|---|---|---|---|---|---|");
    for (name, st) in [("train", &r.stats_train), ("eval", &r.stats_eval)] {
        for (part, sm) in [("prompt", &st.prompt), ("answer", &st.answer), ("total", &st.total)] {
            let _ = writeln!(s, "| {name} | {part} | {} |", fmt_summary(sm));
        }
    }
    let _ = writeln!(s, "\nTotal length histogram (train):\n\n| tokens | rows |\n|---|---|");
    let h = &r.stats_train.total_histogram;
    for (i, c) in h.counts.iter().enumerate() {
        let _ = writeln!(s, "| {}–{} | {} |", h.edges[i], h.edges[i + 1].saturating_sub(1), c);
    }
    let l = &r.length;
    let _ = writeln!(s, "\n## max_length\n");
    let _ = writeln!(
        s,
        "- max_length {} with policy `{}`: {} train and {} eval rows were longer.",
        l.max_length, l.policy, r.stats_train.over_max_length, r.stats_eval.over_max_length
    );
    let _ = writeln!(s, "- Truncated: {}; dropped: {}; dropped because the prompt alone is too long: {}.", l.truncated.len(), l.dropped.len(), l.dropped_prompt_too_long.len());
    if l.policy == "sliding_window" {
        let _ = writeln!(s, "- Cut into sliding windows: {} examples, {} windows in all (each answer token learned in one window).", l.windowed.len(), l.windows_made);
    }
    for x in l.truncated.iter().chain(&l.windowed).chain(&l.dropped).chain(&l.dropped_prompt_too_long).take(20) {
        let _ = writeln!(s, "  - {x}");
    }
    let _ = writeln!(s, "- Suggested max_length: {} holds 99% of rows, {} holds all.", l.suggested_max_length_p99, l.suggested_max_length_all);
    let _ = writeln!(s, "\n## Time\n");
    for (k, v) in &r.seconds {
        let _ = writeln!(s, "- {k}: {v:.3} s");
    }
    s
}

/// `--show N`: the first N train examples token by token, with their labels.
pub fn show_examples(out: &PrepareOutput, n: usize) -> String {
    let mut s = String::new();
    for ex in out.train.iter().take(n) {
        let labelled = ex.enc.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
        let _ = writeln!(s, "── {} [{}] group `{}`: {} input tokens, {} labelled", ex.id, ex.split, ex.group, ex.enc.input_ids.len(), labelled);
        let seq2seq = out.report.model_kind == Some(ModelKind::Seq2Seq);
        let piece = |id: u32| out.tokenizer.tokenizer.id_to_token(id).unwrap_or_else(|| format!("<{id}>"));
        if seq2seq {
            let _ = writeln!(s, "  encoder:");
            for (i, &id) in ex.enc.input_ids.iter().enumerate() {
                let _ = writeln!(s, "  {i:>5} {id:>7} {:<24}", format!("{:?}", piece(id)));
            }
            let _ = writeln!(s, "  decoder targets:");
            // A sliding window's decoder reads its whole span; the part an earlier window learned is context.
            let reads = ex.enc.decoder_reads.as_ref().unwrap_or(&ex.enc.labels);
            for (i, (&id, &l)) in reads.iter().zip(&ex.enc.labels).enumerate() {
                let mark = if l == IGNORE_INDEX { "·" } else { "learn" };
                let _ = writeln!(s, "  {i:>5} {id:>7} {:<24} {mark}", format!("{:?}", piece(id as u32)));
            }
        } else {
            for (i, (&id, &l)) in ex.enc.input_ids.iter().zip(&ex.enc.labels).enumerate() {
                let mark = if l == IGNORE_INDEX { "·" } else { "learn" };
                let _ = writeln!(s, "  {i:>5} {id:>7} {:<24} {mark}", format!("{:?}", piece(id)));
            }
        }
    }
    s
}

/// A one-paragraph summary printed after `prepare`.
pub fn summary_line(r: &PrepareReport) -> String {
    json!({
        "train_rows": r.split.train_rows,
        "eval_rows": r.split.eval_rows,
        "groups": r.split.groups,
        "pii_replaced": r.pii.total(),
        "review_train": {"approved": r.review.train.approved, "rejected": r.review.train.rejected, "pending": r.review.train.pending, "enforced_on": r.review.enforced_on},
        "duplicates_removed": r.dedup.exact.len() + r.dedup.near.len(),
        "suggested_max_length": r.length.suggested_max_length_p99,
        "windows_made": r.length.windows_made,
        "augmented_rows": r.augmented.added,
        "sources": r.sources.iter().map(|s| (s.name.clone(), json!({"train": s.prepared_train, "eval": s.prepared_eval}))).collect::<serde_json::Map<_, _>>(),
        "seconds": r.seconds.get("total"),
    })
    .to_string()
}
