//! `steptune augment`: new wordings of every train prompt, written by an LLM (the Qwen3
//! document's prompt enrichment), kept only when they pass every filter, with provenance.
//!
//! The parts are separate so tests can drive each without a model: `parse_wordings` reads a
//! model's answer into candidate wordings, `check_wording` is the filter chain, `PromptIndex`
//! answers "is this an exact or near duplicate of a prompt", and `augment_rows` is the driver,
//! which asks its questions through a closure (the model in `run`, fixed texts in tests).
//! `add_to_train` is the one call `prepare` makes: it adds `<run>/augmented.jsonl` to the train
//! split after the split decision, so a wording never reaches eval and never moves a row.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::dedup::{text_key, words};
use super::load::RowRef;
use super::pii::PiiScrubber;
use super::Example;
use crate::model::generate::TextGenerator;
use crate::model::source;
use crate::model::tokenizer::TokenizerBundle;
use crate::recipe::{AugmentSection, LoadedRecipe, ModelSection};
use crate::run::{write_atomic, RunDir};

/// The file `augment` writes and `prepare` reads, in the run folder.
pub const FILE: &str = "augmented.jsonl";

/// Every reason a candidate wording is rejected, in the order the filters run.
pub const REASONS: [&str; 9] = ["no_items", "empty", "too_short", "too_long", "pii", "copy_of_answer", "duplicate_of_prompt", "near_duplicate", "surplus"];

// ---------------------------------------------------------------------------------------------
// Parsing a model's answer.

/// Removes `<think>...</think>` blocks; an unclosed `<think>` drops the rest, and a `</think>`
/// without its opening tag (the template opened it) drops everything before it.
pub fn strip_thinking(text: &str) -> String {
    let mut s = text.to_string();
    if let (Some(close), open) = (s.find("</think>"), s.find("<think>")) {
        if open.is_none_or(|o| o > close) {
            s = s[close + "</think>".len()..].to_string();
        }
    }
    loop {
        let Some(open) = s.find("<think>") else { break };
        match s[open..].find("</think>") {
            Some(rel) => s.replace_range(open..open + rel + "</think>".len(), ""),
            None => s.truncate(open),
        }
    }
    s
}

/// The text after a list marker (`1.`, `1)`, `(1)`, `1:`, `-`, `*`, `•`), or None.
pub fn after_marker(line: &str) -> Option<&str> {
    let t = line.trim_start();
    for b in ["- ", "* ", "• ", "– ", "· "] {
        if let Some(rest) = t.strip_prefix(b) {
            return Some(rest);
        }
    }
    if t == "-" || t == "*" || t == "•" {
        return Some("");
    }
    let inner = t.strip_prefix('(').unwrap_or(t);
    let digits = inner.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = &inner[digits..];
    for m in [".", ")", ":"] {
        if let Some(r) = rest.strip_prefix(m) {
            // "1.5 GB" is not a marker.
            if r.is_empty() || r.starts_with(char::is_whitespace) {
                return Some(r);
            }
        }
    }
    None
}

/// Strips quotes and Markdown emphasis around a wording, repeatedly, and trims it.
pub fn strip_quotes(s: &str) -> String {
    let mut t = s.trim().to_string();
    let pairs = [("\"", "\""), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("**", "**"), ("*", "*"), ("_", "_"), ("`", "`")];
    loop {
        let before = t.clone();
        for (a, b) in pairs {
            if t.len() >= a.len() + b.len() && t.starts_with(a) && t.ends_with(b) {
                t = t[a.len()..t.len() - b.len()].trim().to_string();
            }
        }
        if t == before {
            return t;
        }
    }
}

/// The candidate wordings of one answer: numbered or bulleted items when the answer has any
/// (unmarked lines, such as a preamble "Here are 3 rewrites:" or a closing remark, are then
/// dropped), else every non-empty line except ones ending in ':' (a preamble). Thinking blocks are
/// dropped first; quotes around an item are stripped. An item may be empty (a bare "2.").
pub fn parse_wordings(answer: &str) -> Vec<String> {
    let text = strip_thinking(answer);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let marked: Vec<&str> = lines.iter().filter_map(|l| after_marker(l)).collect();
    if !marked.is_empty() {
        return marked.into_iter().map(strip_quotes).collect();
    }
    lines.into_iter().filter(|l| !l.ends_with(':')).map(strip_quotes).collect()
}

// ---------------------------------------------------------------------------------------------
// Duplicates.

/// Prompts to compare new wordings with: exact (normalised text) and near (word-set Jaccard ≥
/// threshold, the recipe's `data.dedup.near_threshold`). Near lookups use prefix filtering (two
/// sets that reach the threshold share a word among their rarest few), so a wording is compared
/// with a handful of prompts, not all of them.
pub struct PromptIndex {
    threshold: f64,
    /// How many indexed prompts held each word when the index was made: the rarity order.
    freq: HashMap<String, u32>,
    exact: HashSet<String>,
    sets: Vec<Vec<(u32, String)>>,
    postings: HashMap<String, Vec<usize>>,
}

impl PromptIndex {
    pub fn new<'a>(prompts: impl IntoIterator<Item = &'a str> + Clone, threshold: f64) -> PromptIndex {
        let mut freq: HashMap<String, u32> = HashMap::new();
        for p in prompts.clone() {
            let set: HashSet<String> = words(p).into_iter().collect();
            for w in set {
                *freq.entry(w).or_default() += 1;
            }
        }
        let mut index = PromptIndex { threshold, freq, exact: HashSet::new(), sets: Vec::new(), postings: HashMap::new() };
        for p in prompts {
            index.add(p);
        }
        index
    }

    /// The word set, rarest first (ties by the word), so every set shares one order.
    fn set(&self, text: &str) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = words(text).into_iter().map(|w| (self.freq.get(&w).copied().unwrap_or(0), w)).collect();
        v.sort();
        v.dedup();
        v
    }

    fn prefix_len(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let need = (self.threshold * n as f64 - 1e-9).ceil().max(1.0) as usize;
        (n + 1).saturating_sub(need).clamp(1, n)
    }

    pub fn add(&mut self, text: &str) {
        self.exact.insert(text_key(text));
        if self.threshold >= 1.0 {
            return;
        }
        let set = self.set(text);
        let id = self.sets.len();
        for (_, w) in set.iter().take(self.prefix_len(set.len())) {
            self.postings.entry(w.clone()).or_default().push(id);
        }
        self.sets.push(set);
    }

    pub fn contains_exact(&self, text: &str) -> bool {
        self.exact.contains(&text_key(text))
    }

    /// The highest similarity ≥ threshold with an indexed prompt, if any (None when near
    /// duplicates are off: threshold 1).
    pub fn near(&self, text: &str) -> Option<f64> {
        if self.threshold >= 1.0 {
            return None;
        }
        let q = self.set(text);
        if q.is_empty() {
            return None;
        }
        let mut seen = HashSet::new();
        let mut best: Option<f64> = None;
        for (_, w) in q.iter().take(self.prefix_len(q.len())) {
            for &id in self.postings.get(w).map(Vec::as_slice).unwrap_or(&[]) {
                if !seen.insert(id) {
                    continue;
                }
                let s = &self.sets[id];
                let (lo, hi) = (q.len().min(s.len()) as f64, q.len().max(s.len()) as f64);
                if lo / hi < self.threshold {
                    continue;
                }
                let j = super::dedup::jaccard(&q, s);
                if j >= self.threshold && best.is_none_or(|b| j > b) {
                    best = Some(j);
                }
            }
        }
        best
    }
}

fn word_set(text: &str) -> Vec<String> {
    let mut v = words(text);
    v.sort();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// The filters.

/// What the filters need besides the wording.
pub struct Filters<'a> {
    pub min_chars: usize,
    pub max_chars: usize,
    pub max_length_ratio: f64,
    /// The recipe's `data.dedup.near_threshold`.
    pub near_threshold: f64,
    /// None: PII is not checked (`data.pii.enabled: false`).
    pub scrubber: Option<&'a PiiScrubber>,
}

impl<'a> Filters<'a> {
    pub fn from_section(a: &AugmentSection, near_threshold: f64, scrubber: Option<&'a PiiScrubber>) -> Filters<'a> {
        Filters { min_chars: a.min_chars, max_chars: a.max_chars, max_length_ratio: a.max_length_ratio, near_threshold, scrubber }
    }
}

/// The first filter a wording fails (a name of `REASONS`), or Ok with the wording as kept.
/// `index` holds every prompt of both splits and the wordings kept so far.
pub fn check_wording(wording: &str, source_prompt: &str, answer: &str, f: &Filters, index: &PromptIndex) -> std::result::Result<String, &'static str> {
    let w = wording.trim();
    if words(w).is_empty() {
        return Err("empty");
    }
    let chars = w.chars().count();
    if chars < f.min_chars {
        return Err("too_short");
    }
    let relative = if f.max_length_ratio > 0.0 { (f.max_length_ratio * source_prompt.chars().count().max(20) as f64).floor() as usize } else { usize::MAX };
    if chars > f.max_chars || chars > relative {
        return Err("too_long");
    }
    if let Some(s) = f.scrubber {
        if s.scrub(w).1.total() > 0 {
            return Err("pii");
        }
    }
    let (wk, ak) = (text_key(w), text_key(answer));
    let within = wk.split(' ').count() >= 3 && format!(" {ak} ").contains(&format!(" {wk} "));
    let near_answer = f.near_threshold < 1.0 && super::dedup::jaccard(&word_set(w), &word_set(answer)) >= f.near_threshold;
    if wk == ak || within || near_answer {
        return Err("copy_of_answer");
    }
    if index.contains_exact(w) || text_key(source_prompt) == wk {
        return Err("duplicate_of_prompt");
    }
    if index.near(w).is_some() {
        return Err("near_duplicate");
    }
    Ok(w.to_string())
}

// ---------------------------------------------------------------------------------------------
// The driver.

/// A train row to rewrite.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub id: String,
    pub group: String,
    pub prompt: String,
    pub output: String,
}

/// Where a wording came from; `source: "synthetic"` marks it as machine-written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub source: String,
    /// The id of the train row it rewrites.
    pub row: String,
    pub model: String,
    pub seed: u64,
    pub settings: serde_json::Value,
}

/// One line of `augmented.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentedRow {
    /// `<source row id>#aug<k>`, k from 1.
    pub id: String,
    pub group: String,
    pub prompt: String,
    /// The source row's output: a new wording of a request has the same procedure.
    pub output: String,
    pub source: Provenance,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub prompts: usize,
    /// prompts × per_prompt.
    pub asked: usize,
    /// Every outcome: each parsed item, plus one `no_items` per answer without any.
    /// kept + the rejected counts = candidates.
    pub candidates: usize,
    pub kept: usize,
    pub rejected: BTreeMap<String, usize>,
}

impl Counts {
    fn reject(&mut self, reason: &str) {
        self.candidates += 1;
        *self.rejected.entry(reason.to_string()).or_default() += 1;
    }
    pub fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub row: String,
    pub wording: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AugmentReport {
    pub model: String,
    pub seed: u64,
    pub settings: serde_json::Value,
    pub near_threshold: f64,
    pub total: Counts,
    pub groups: BTreeMap<String, Counts>,
    /// The first rejected wordings of each reason, to see what a filter catches.
    pub rejected_examples: Vec<Rejection>,
    pub seconds: BTreeMap<String, f64>,
}

/// The sampling and filter settings recorded in every row's provenance.
pub fn settings_of(a: &AugmentSection) -> serde_json::Value {
    serde_json::json!({
        "per_prompt": a.per_prompt,
        "instruction": a.instruction,
        "do_sample": a.do_sample,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "top_k": a.top_k,
        "max_new_tokens": a.max_new_tokens,
        "min_chars": a.min_chars,
        "max_chars": a.max_chars,
        "max_length_ratio": a.max_length_ratio,
    })
}

/// The user message for one prompt.
pub fn instruction_for(template: &str, prompt: &str, n: usize) -> String {
    template.replace("{n}", &n.to_string()).replace("{prompt}", prompt)
}

/// Asks for new wordings of every source row, `batch_size` instructions at a time in the rows'
/// order, and filters them. `ask(batch_index, instructions)` returns one answer per instruction.
/// `other_prompts` are the prompts that are not sources (the eval split): wordings must not
/// duplicate them either.
pub fn augment_rows(
    sources: &[SourceRow],
    other_prompts: &[String],
    a: &AugmentSection,
    model: &str,
    seed: u64,
    filters: &Filters,
    ask: &mut dyn FnMut(usize, &[String]) -> Result<Vec<String>>,
) -> Result<(Vec<AugmentedRow>, AugmentReport)> {
    let settings = settings_of(a);
    let mut report = AugmentReport { model: model.to_string(), seed, settings: settings.clone(), near_threshold: filters.near_threshold, ..Default::default() };
    let mut index = PromptIndex::new(sources.iter().map(|s| s.prompt.as_str()).chain(other_prompts.iter().map(String::as_str)), filters.near_threshold);
    let mut rows = Vec::new();
    let mut shown: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (bi, batch) in sources.chunks(a.batch_size.max(1)).enumerate() {
        let instructions: Vec<String> = batch.iter().map(|s| instruction_for(&a.instruction, &s.prompt, a.per_prompt)).collect();
        let answers = ask(bi, &instructions)?;
        if answers.len() != batch.len() {
            bail!("the model gave {} answers for {} instructions", answers.len(), batch.len());
        }
        for (src, answer) in batch.iter().zip(answers) {
            let mut counts = Counts { prompts: 1, asked: a.per_prompt, ..Default::default() };
            let mut note = |reason: &'static str, wording: &str, counts: &mut Counts| {
                counts.reject(reason);
                let n = shown.entry(reason).or_default();
                if *n < 5 {
                    *n += 1;
                    report.rejected_examples.push(Rejection { row: src.id.clone(), wording: wording.to_string(), reason: reason.to_string() });
                }
            };
            let items = parse_wordings(&answer);
            if items.is_empty() {
                note("no_items", &answer, &mut counts);
            }
            for item in items {
                if counts.kept >= a.per_prompt {
                    note("surplus", &item, &mut counts);
                    continue;
                }
                match check_wording(&item, &src.prompt, &src.output, filters, &index) {
                    Err(reason) => note(reason, &item, &mut counts),
                    Ok(w) => {
                        index.add(&w);
                        counts.candidates += 1;
                        counts.kept += 1;
                        rows.push(AugmentedRow {
                            id: format!("{}#aug{}", src.id, counts.kept),
                            group: src.group.clone(),
                            prompt: w,
                            output: src.output.clone(),
                            source: Provenance { source: "synthetic".into(), row: src.id.clone(), model: model.to_string(), seed, settings: settings.clone() },
                        });
                    }
                }
            }
            add_counts(&mut report.total, &counts);
            add_counts(report.groups.entry(src.group.clone()).or_default(), &counts);
        }
    }
    Ok((rows, report))
}

fn add_counts(into: &mut Counts, c: &Counts) {
    into.prompts += c.prompts;
    into.asked += c.asked;
    into.candidates += c.candidates;
    into.kept += c.kept;
    for (k, v) in &c.rejected {
        *into.rejected.entry(k.clone()).or_default() += v;
    }
}

pub fn jsonl(rows: &[AugmentedRow]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

pub fn report_markdown(r: &AugmentReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Augmentation report\n");
    let _ = writeln!(s, "Model `{}`, seed {}, near-duplicate threshold {}.\n", r.model, r.seed, r.near_threshold);
    let _ = writeln!(s, "Settings: `{}`\n", r.settings);
    let t = &r.total;
    let _ = writeln!(s, "{} train prompts, {} wordings asked, {} candidates, {} kept, {} rejected.\n", t.prompts, t.asked, t.candidates, t.kept, t.rejected_total());
    let header: Vec<&str> = REASONS.to_vec();
    let _ = writeln!(s, "| group | prompts | asked | candidates | kept | {} |", header.join(" | "));
    let _ = writeln!(s, "|---|---|---|---|---|{}", "---|".repeat(header.len()));
    let row = |name: &str, c: &Counts| {
        let cells: Vec<String> = REASONS.iter().map(|r| c.rejected.get(*r).copied().unwrap_or(0).to_string()).collect();
        format!("| {name} | {} | {} | {} | {} | {} |", c.prompts, c.asked, c.candidates, c.kept, cells.join(" | "))
    };
    for (g, c) in &r.groups {
        let _ = writeln!(s, "{}", row(g, c));
    }
    let _ = writeln!(s, "{}", row("**all**", t));
    if !r.rejected_examples.is_empty() {
        let _ = writeln!(s, "\n## Rejected examples\n");
        for x in &r.rejected_examples {
            let w: String = x.wording.chars().take(160).collect();
            let _ = writeln!(s, "- {} ({}): {:?}", x.reason, x.row, w);
        }
    }
    let _ = writeln!(s, "\n## Time\n");
    for (k, v) in &r.seconds {
        let _ = writeln!(s, "- {k}: {v:.3} s");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The stage.


/// The train rows to rewrite (originals only: no oversampled copy, one row per windowed
/// example) and the eval prompts, as `prepare` splits them without augmentation.
pub fn split_for_augment(recipe: &LoadedRecipe) -> Result<(Vec<SourceRow>, Vec<String>)> {
    let mut base = recipe.clone();
    base.recipe.data.augment.add_to_train = false;
    let out = super::prepare::prepare(&base)?;
    let mut seen = HashSet::new();
    let sources = out
        .train
        .iter()
        .filter(|p| p.copy == 0 && seen.insert(p.id.clone()))
        .map(|p| SourceRow { id: p.id.clone(), group: p.group.clone(), prompt: p.prompt.clone(), output: p.output.clone() })
        .collect();
    let mut seen = HashSet::new();
    let eval = out.eval.iter().filter(|p| seen.insert(p.id.clone())).map(|p| p.prompt.clone()).collect();
    Ok((sources, eval))
}

fn device_of(spec: &str) -> tch::Device {
    match spec {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        s if s.starts_with("cuda:") => tch::Device::Cuda(s[5..].parse().unwrap_or(0)),
        _ => tch::Device::cuda_if_available(),
    }
}

pub struct AugmentOutput {
    pub rows: Vec<AugmentedRow>,
    pub report: AugmentReport,
}

/// `steptune augment`: splits the data as `prepare` does, loads `data.augment.model` on
/// `training.device` (bf16 on a GPU, fp32 on the CPU), asks it for new wordings of every train
/// prompt and writes `augmented.jsonl` and `augment_report.{json,md}` into the run folder.
pub fn run(recipe: &LoadedRecipe, run: &RunDir) -> Result<AugmentOutput> {
    let a = &recipe.recipe.data.augment;
    if a.model.trim().is_empty() {
        bail!("`data.augment.model` is not set: name the model that writes the new wordings (a model folder or a Hub id such as Qwen/Qwen3-8B)");
    }
    let t0 = Instant::now();
    let mut seconds = BTreeMap::new();
    let (sources, eval_prompts) = split_for_augment(recipe)?;
    seconds.insert("split".to_string(), t0.elapsed().as_secs_f64());

    let t1 = Instant::now();
    let mut as_model = recipe.clone();
    as_model.recipe.model = ModelSection { source: a.model.clone(), ..Default::default() };
    let files = source::resolve(&as_model, true).context("data.augment.model")?;
    let dir = files.dir.with_context(|| format!("data.augment.model `{}`: no model folder", a.model))?;
    let device = device_of(&recipe.recipe.training.device);
    let kind = if device.is_cuda() { tch::Kind::BFloat16 } else { tch::Kind::Float };
    let model = crate::model::load_model(&dir, None, kind, device)?;
    let tok = TokenizerBundle::from_dir(&dir)?;
    let gen = TextGenerator::new(model.as_ref(), &tok, None)?;
    let cfg = gen.config(a.max_new_tokens, a.do_sample, a.temperature, a.top_p, a.top_k);
    seconds.insert("load_model".to_string(), t1.elapsed().as_secs_f64());

    let t2 = Instant::now();
    let seed = a.seed.unwrap_or(recipe.recipe.seed);
    let scrubber = super::pii::scrubber_of(recipe)?;
    let filters = Filters::from_section(a, recipe.recipe.data.dedup.near_threshold, scrubber.as_ref());
    let specials: Vec<String> = tok.added_tokens().into_iter().filter(|t| t != "<think>" && t != "</think>").collect();
    let mut ask = |batch: usize, instructions: &[String]| -> Result<Vec<String>> {
        // Each batch has its own seed, so its answers depend on the seed and its prompts only.
        tch::manual_seed((seed ^ (batch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as i64);
        let out = gen.generate(instructions, &cfg, instructions.len())?;
        // Decoded with special tokens kept, so a thinking block is seen (and dropped) whole.
        out.into_iter()
            .map(|g| {
                let ids: Vec<u32> = g.token_ids.iter().filter(|t| !cfg.eos_ids.contains(t)).map(|&t| t as u32).collect();
                let mut text = tok.tokenizer.decode(&ids, false).map_err(|e| anyhow::anyhow!("decoding failed: {e}"))?;
                // Other special tokens (`<|im_start|>`, ...) would forge a turn in training data.
                for t in &specials {
                    text = text.replace(t.as_str(), "\n");
                }
                Ok(text)
            })
            .collect()
    };
    let (rows, mut report) = augment_rows(&sources, &eval_prompts, a, &a.model, seed, &filters, &mut ask)?;
    seconds.insert("generate_and_filter".to_string(), t2.elapsed().as_secs_f64());
    seconds.insert("total".to_string(), t0.elapsed().as_secs_f64());
    report.seconds = seconds;
    write_atomic(&run.path(FILE), &jsonl(&rows)?)?;
    write_atomic(&run.path("augment_report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&run.path("augment_report.md"), report_markdown(&report).as_bytes())?;
    Ok(AugmentOutput { rows, report })
}

// ---------------------------------------------------------------------------------------------
// prepare's side.

/// What `prepare` did with `augmented.jsonl`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AugmentAdded {
    /// The file read; empty when there was none (or `data.augment.add_to_train` is false).
    pub file: String,
    pub rows_in_file: usize,
    pub added: usize,
    /// source_not_in_train (its row is gone or in eval now), stale (its row's answer changed),
    /// empty, duplicate_of_prompt, near_duplicate (of an eval prompt).
    pub rejected: BTreeMap<String, usize>,
}

/// Adds the rows of `<run>/augmented.jsonl` to `train` (after the split: none goes to eval, no
/// row moves). Each must rewrite a row that is in this train split with the same answer, and is
/// checked again against every prompt (exact) and every eval prompt (near duplicates).
pub fn add_to_train(recipe: &LoadedRecipe, train: Vec<Example>, eval: &[Example], report: &mut AugmentAdded) -> Result<Vec<Example>> {
    let r = &recipe.recipe;
    let path = recipe.output_dir().join(FILE);
    if !r.data.augment.add_to_train || !path.exists() {
        return Ok(train);
    }
    let rows = read_augmented(&path)?;
    report.file = path.display().to_string();
    report.rows_in_file = rows.len();
    let by_id: HashMap<&str, usize> = train.iter().enumerate().filter(|(_, e)| e.copy == 0).rev().map(|(i, e)| (e.id.as_str(), i)).collect();
    let mut exact: HashSet<String> = train.iter().chain(eval).map(|e| text_key(&e.prompt)).collect();
    let eval_index = PromptIndex::new(eval.iter().map(|e| e.prompt.as_str()), r.data.dedup.near_threshold);
    let mut added = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let mut reject = |reason: &str| *report.rejected.entry(reason.to_string()).or_default() += 1;
        let Some(&si) = by_id.get(row.source.row.as_str()) else {
            reject("source_not_in_train");
            continue;
        };
        let src = &train[si];
        if text_key(&src.output) != text_key(&row.output) {
            reject("stale");
            continue;
        }
        let prompt = row.prompt.trim().to_string();
        if words(&prompt).is_empty() {
            reject("empty");
            continue;
        }
        if !exact.insert(text_key(&prompt)) {
            reject("duplicate_of_prompt");
            continue;
        }
        if eval_index.near(&prompt).is_some() {
            reject("near_duplicate");
            continue;
        }
        let review_id = super::review::row_id(&prompt, &src.output);
        added.push(Example {
            id: row.id,
            prompt,
            output: src.output.clone(),
            group: src.group.clone(),
            at: RowRef { file: path.display().to_string(), row: i + 1, line: Some(i as u64 + 1) },
            copy: 0,
            source: src.source.clone(),
            // Synthetic for review (`data.require_review`), with the id its sheet row gets.
            provenance: Some("synthetic".into()),
            review_id,
        });
    }
    report.added = added.len();
    let mut train = train;
    train.extend(added);
    Ok(train)
}

pub fn read_augmented(path: &Path) -> Result<Vec<AugmentedRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not an augmented row", path.display(), i + 1)))
        .collect()
}
