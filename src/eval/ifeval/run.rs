//! `steptune ifeval`: a response to every prompt from a model's chat template (user turn only, no
//! system prompt, thinking off, greedy, as lm-eval's `ifeval` task runs it), scored by `score`, and
//! the files a user reads: `responses.jsonl` (the reference's input format, so the Python scorer
//! can rescore it), `ifeval.json`, `ifeval.md`, and for several models a candidates table.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{IfevalPrompt, IfevalScores, PromptOutcome};
use crate::model::generate::{Generated, TextGenerator};
use crate::model::tokenizer::TokenizerBundle;
use crate::model::Model;
use crate::run::write_atomic;

/// lm-eval's `ifeval` task generates up to 1280 tokens.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1280;

/// The Qwen3 document's candidate table (prompt-level strict accuracy, percent), matched by the
/// model folder's name so a user sees the published figure beside their own.
pub const DOCUMENT_SCORES: [(&str, f64); 6] =
    [("llama-3.1-8b", 75.0), ("gemma-3-12b", 80.2), ("qwen2.5-7b", 71.2), ("qwen2.5-14b", 81.0), ("qwen3-4b", 81.2), ("qwen3-8b", 83.0)];

/// How responses are generated.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub max_new_tokens: usize,
    pub batch_size: usize,
}

/// One model's IFEval result with what produced it.
#[derive(Debug, Clone)]
pub struct IfevalRun {
    /// The model folder (or the run's system name: `base`, `tuned`).
    pub model: String,
    pub adapter: Option<String>,
    pub limit: Option<usize>,
    pub max_new_tokens: usize,
    pub generation_seconds: f64,
    pub scores: IfevalScores,
}

/// The first `limit` prompts, in the file's order.
pub fn first(mut prompts: Vec<IfevalPrompt>, limit: Option<usize>) -> Vec<IfevalPrompt> {
    if let Some(n) = limit {
        prompts.truncate(n);
    }
    prompts
}

/// A response per prompt, in the prompts' order. Under several ranks each generates a contiguous
/// share and every rank gets all responses back (the eval stage's sharing).
pub fn generate(model: &dyn Model, tok: &TokenizerBundle, prompts: &[IfevalPrompt], opts: &GenOptions, label: &str) -> Result<Vec<String>> {
    let world = crate::dist::world();
    let what = format!("IFEval: generating with the {label} model");
    world.doing(&what);
    let share = world.my_share(prompts.len());
    let mine = generate_share(model, tok, &prompts[share], opts, label);
    let all = crate::eval::stage::gather(mine, &what)?;
    Ok(all.into_iter().map(|g| g.text).collect())
}

/// Greedy, batch by batch (prompts sorted by length so a batch pads little), with a progress line
/// per batch: 541 prompts of up to 1280 tokens take a while.
fn generate_share(model: &dyn Model, tok: &TokenizerBundle, prompts: &[IfevalPrompt], opts: &GenOptions, label: &str) -> Result<Vec<Generated>> {
    let gen = TextGenerator::new(model, tok, None)?;
    let cfg = gen.config(opts.max_new_tokens, false, 1.0, 1.0, 0);
    let texts: Vec<String> = prompts.iter().map(|p| p.prompt.clone()).collect();
    let lens = texts.iter().map(|t| gen.encode(t).map(|ids| ids.len())).collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let main = crate::dist::world().is_main();
    let started = std::time::Instant::now();
    let mut out: Vec<Option<Generated>> = vec![None; texts.len()];
    let mut done = 0;
    for chunk in order.chunks(opts.batch_size.max(1)) {
        let batch: Vec<String> = chunk.iter().map(|&i| texts[i].clone()).collect();
        for (&i, g) in chunk.iter().zip(gen.generate(&batch, &cfg, batch.len())?) {
            out[i] = Some(g);
        }
        done += chunk.len();
        if main {
            eprintln!("ifeval: {label}: {done}/{} prompts, {:.1} s", texts.len(), started.elapsed().as_secs_f64());
        }
    }
    Ok(out.into_iter().map(|g| g.expect("every prompt generated")).collect())
}

/// Scores generated responses (one per prompt, in order).
pub fn score_responses(prompts: &[IfevalPrompt], responses: &[String]) -> Result<IfevalScores> {
    let rows = prompts.iter().zip(responses).map(|(p, r)| super::score_one(p, r)).collect::<Result<Vec<PromptOutcome>>>()?;
    Ok(super::aggregate(rows))
}

/// `responses.jsonl` in the reference's input format: `{"prompt", "response"}` per line.
pub fn responses_jsonl(prompts: &[IfevalPrompt], responses: &[String]) -> String {
    prompts.iter().zip(responses).map(|(p, r)| json!({"prompt": p.prompt, "response": r}).to_string() + "\n").collect()
}

/// Keeps the responses before scoring them, so hours of generation survive a scoring error
/// (`steptune ifeval score` rescores the file); a stale result beside them is removed first.
pub fn write_responses(dir: &Path, prompts: &[IfevalPrompt], responses: &[String]) -> Result<PathBuf> {
    for stale in ["ifeval.json", "ifeval.md"] {
        let p = dir.join(stale);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove the earlier {}", p.display()))?;
        }
    }
    let path = dir.join("responses.jsonl");
    write_atomic(&path, responses_jsonl(prompts, responses).as_bytes())?;
    Ok(path)
}

/// The four accuracies (fractions), the per-type table and each row's booleans: what
/// `ifeval score --json` prints and `ifeval.json` carries.
pub fn scores_json(s: &IfevalScores) -> Value {
    json!({
        "strict_prompt": s.strict_prompt,
        "strict_instruction": s.strict_instruction,
        "loose_prompt": s.loose_prompt,
        "loose_instruction": s.loose_instruction,
        "prompts": s.rows.len(),
        "instructions": s.rows.iter().map(|r| r.strict.len()).sum::<usize>(),
        "per_type": s.per_type,
        "rows": s.rows.iter().map(|r| json!({"key": r.key, "instruction_id_list": r.instruction_id_list, "strict": r.strict, "loose": r.loose})).collect::<Vec<_>>(),
    })
}

/// `ifeval.json`: the scores with the model, settings, time and version that produced them.
pub fn run_json(run: &IfevalRun) -> Value {
    let mut v = scores_json(&run.scores);
    v["model"] = json!(run.model);
    v["adapter"] = json!(run.adapter);
    v["limit"] = json!(run.limit);
    v["max_new_tokens"] = json!(run.max_new_tokens);
    v["generation_seconds"] = json!(run.generation_seconds);
    v["steptune_version"] = json!(env!("CARGO_PKG_VERSION"));
    v
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// The four accuracies as a markdown table, in percent.
pub fn accuracy_table(s: &IfevalScores) -> String {
    let mut out = String::new();
    let n_instr: usize = s.rows.iter().map(|r| r.strict.len()).sum();
    let _ = writeln!(out, "| accuracy | strict | loose |\n|---|---|---|");
    let _ = writeln!(out, "| prompt-level ({} prompts) | {}% | {}% |", s.rows.len(), pct(s.strict_prompt), pct(s.loose_prompt));
    let _ = writeln!(out, "| instruction-level ({n_instr} instructions) | {}% | {}% |", pct(s.strict_instruction), pct(s.loose_instruction));
    out
}

/// The per-type table, sorted by instruction id.
pub fn per_type_table(s: &IfevalScores) -> String {
    let mut out = String::from("| instruction | count | strict | loose |\n|---|---|---|---|\n");
    for (id, t) in &s.per_type {
        let _ = writeln!(out, "| {id} | {} | {}% | {}% |", t.count, pct(t.strict), pct(t.loose));
    }
    out
}

/// `text` cut to `max` characters, saying how much was cut.
fn cut(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    format!("{}… ({} more characters)", text.chars().take(max).collect::<String>(), n - max)
}

/// A markdown block quote of `text` (every line quoted, so a response's own markup stays inside).
fn quote(text: &str) -> String {
    if text.trim().is_empty() {
        return "> (empty response)\n".into();
    }
    text.lines().map(|l| format!("> {l}\n")).collect()
}

/// `ifeval.md`: the four accuracies, the per-type table and a few failing examples.
pub fn markdown(run: &IfevalRun, examples: usize) -> String {
    let s = &run.scores;
    let mut out = String::new();
    let _ = writeln!(out, "# IFEval: {}\n", run.model);
    if let Some(a) = &run.adapter {
        let _ = writeln!(out, "Adapter: {a}\n");
    }
    let limit = run.limit.map(|n| format!(" (the first {n}, `--limit`)")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{} prompts{limit}; greedy, chat template with thinking off, no system prompt, at most {} new tokens; generation took {:.1} s.\n",
        s.rows.len(),
        run.max_new_tokens,
        run.generation_seconds
    );
    out += &accuracy_table(s);
    let _ = writeln!(out, "\nPublished IFEval figures (model cards, the Qwen3 document's table) are prompt-level strict.\n\n## Per instruction type\n");
    out += &per_type_table(s);
    let failing: Vec<&PromptOutcome> = s.rows.iter().filter(|r| r.strict.iter().any(|&b| !b)).collect();
    let _ = writeln!(out, "\n## Failing examples ({} of {} prompts fail a strict check)\n", failing.len(), s.rows.len());
    for r in failing.iter().take(examples) {
        let failed: Vec<&str> = r.instruction_id_list.iter().zip(&r.strict).filter(|(_, &ok)| !ok).map(|(id, _)| id.as_str()).collect();
        let _ = writeln!(out, "**key {}**: failed `{}`\n\nPrompt:\n\n{}\nResponse:\n\n{}", r.key, failed.join("`, `"), quote(&cut(&r.prompt, 400)), quote(&cut(&r.response, 800)));
    }
    out
}

/// Writes `ifeval.json` and `ifeval.md` into `dir` (each atomically), beside `responses.jsonl`.
pub fn write_run(dir: &Path, run: &IfevalRun) -> Result<()> {
    write_atomic(&dir.join("ifeval.json"), serde_json::to_string_pretty(&run_json(run))?.as_bytes())?;
    write_atomic(&dir.join("ifeval.md"), markdown(run, 5).as_bytes())
}

/// The Qwen3 document's figure for a model folder whose name matches one of its candidates.
pub fn document_score(model: &str) -> Option<f64> {
    let name = Path::new(model).file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    DOCUMENT_SCORES.iter().find(|(k, _)| name.contains(k)).map(|&(_, v)| v)
}

/// The runs best first (prompt-level strict, then instruction-level strict).
fn ranked(runs: &[IfevalRun]) -> Vec<&IfevalRun> {
    let mut v: Vec<&IfevalRun> = runs.iter().collect();
    v.sort_by(|a, b| {
        b.scores.strict_prompt.total_cmp(&a.scores.strict_prompt).then(b.scores.strict_instruction.total_cmp(&a.scores.strict_instruction))
    });
    v
}

/// `candidates.md`: one row per model, best first, like the Qwen3 document's table.
pub fn candidates_markdown(runs: &[IfevalRun]) -> String {
    let mut out = String::from("# IFEval candidates\n\n");
    let n = runs.first().map(|r| r.scores.rows.len()).unwrap_or(0);
    let _ = writeln!(out, "{n} prompts per model, best first. Accuracies in percent.\n");
    let _ = writeln!(out, "| model | prompt-level strict | instruction-level strict | prompt-level loose | instruction-level loose | Qwen3 document (prompt-level strict) |\n|---|---|---|---|---|---|");
    for r in ranked(runs) {
        let s = &r.scores;
        let doc = document_score(&r.model).map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let name = match &r.adapter {
            Some(a) => format!("{} + {a}", r.model),
            None => r.model.clone(),
        };
        let _ = writeln!(out, "| {name} | {} | {} | {} | {} | {doc} |", pct(s.strict_prompt), pct(s.strict_instruction), pct(s.loose_prompt), pct(s.loose_instruction));
    }
    let _ = writeln!(
        out,
        "\nThe Qwen3 document's figures (Llama-3.1-8B 75.0, Gemma-3-12B 80.2, Qwen2.5-7B 71.2, Qwen2.5-14B 81.0, Qwen3-4B 81.2, Qwen3-8B 83.0) are prompt-level strict accuracy, as most model cards report IFEval; compare them with that column, on all 541 prompts{}.",
        if n < 541 { " (this table used fewer)" } else { "" }
    );
    out
}

pub fn candidates_json(runs: &[IfevalRun]) -> Value {
    json!({
        "sorted_by": "strict_prompt",
        "document_metric": "strict_prompt",
        "candidates": ranked(runs).iter().map(|r| json!({
            "model": r.model,
            "adapter": r.adapter,
            "prompts": r.scores.rows.len(),
            "strict_prompt": r.scores.strict_prompt,
            "strict_instruction": r.scores.strict_instruction,
            "loose_prompt": r.scores.loose_prompt,
            "loose_instruction": r.scores.loose_instruction,
            "document_strict_prompt": document_score(&r.model),
        })).collect::<Vec<_>>(),
    })
}

/// The instruction types whose strict accuracy moved most from `base` to `tuned`: (id, count,
/// base, tuned), largest change first.
pub fn movers(base: &IfevalScores, tuned: &IfevalScores, k: usize) -> Vec<(String, usize, f64, f64)> {
    let mut v: Vec<(String, usize, f64, f64)> =
        tuned.per_type.iter().filter_map(|(id, t)| base.per_type.get(id).map(|b| (id.clone(), t.count, b.strict, t.strict))).collect();
    v.sort_by(|a, b| (b.3 - b.2).abs().total_cmp(&(a.3 - a.2).abs()).then(a.0.cmp(&b.0)));
    v.retain(|m| m.3 != m.2);
    v.truncate(k);
    v
}

/// Base vs tuned: the four accuracies with the change in points and the types that moved most,
/// i.e. which instruction-following the tuning kept or lost.
pub fn comparison_markdown(base: &IfevalRun, tuned: &IfevalRun) -> String {
    let (b, t) = (&base.scores, &tuned.scores);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "IFEval on the first {} prompts (greedy, thinking off, no system prompt, at most {} new tokens): what instruction-following the tuning kept or lost. Accuracies in percent; published figures are prompt-level strict.\n",
        t.rows.len(),
        tuned.max_new_tokens
    );
    let _ = writeln!(out, "| accuracy | base | tuned | change (points) |\n|---|---|---|---|");
    for (name, x, y) in [
        ("prompt-level strict", b.strict_prompt, t.strict_prompt),
        ("instruction-level strict", b.strict_instruction, t.strict_instruction),
        ("prompt-level loose", b.loose_prompt, t.loose_prompt),
        ("instruction-level loose", b.loose_instruction, t.loose_instruction),
    ] {
        let _ = writeln!(out, "| {name} | {} | {} | {:+.1} |", pct(x), pct(y), (y - x) * 100.0);
    }
    let m = movers(b, t, 8);
    if m.is_empty() {
        let _ = writeln!(out, "\nNo instruction type changed (strict).");
    } else {
        let _ = writeln!(out, "\nInstruction types that moved most (strict):\n\n| instruction | count | base | tuned | change (points) |\n|---|---|---|---|---|");
        for (id, n, x, y) in &m {
            let _ = writeln!(out, "| {id} | {n} | {} | {} | {:+.1} |", pct(*x), pct(*y), (y - x) * 100.0);
        }
    }
    let lost = t.per_type.iter().filter(|(id, s)| b.per_type.get(*id).is_some_and(|x| s.strict < x.strict)).count();
    let gained = t.per_type.iter().filter(|(id, s)| b.per_type.get(*id).is_some_and(|x| s.strict > x.strict)).count();
    let _ = writeln!(out, "\n{lost} of {} instruction types lost ground, {gained} gained; per-row results in ifeval.json.", t.per_type.len());
    out
}

pub fn comparison_json(base: &IfevalRun, tuned: &IfevalRun) -> Value {
    let (b, t) = (&base.scores, &tuned.scores);
    let acc = |s: &IfevalScores| json!({"strict_prompt": s.strict_prompt, "strict_instruction": s.strict_instruction, "loose_prompt": s.loose_prompt, "loose_instruction": s.loose_instruction});
    json!({
        "prompts": t.rows.len(),
        "max_new_tokens": tuned.max_new_tokens,
        "base": acc(b),
        "tuned": acc(t),
        "change_points": {
            "strict_prompt": (t.strict_prompt - b.strict_prompt) * 100.0,
            "strict_instruction": (t.strict_instruction - b.strict_instruction) * 100.0,
            "loose_prompt": (t.loose_prompt - b.loose_prompt) * 100.0,
            "loose_instruction": (t.loose_instruction - b.loose_instruction) * 100.0,
        },
        "movers": movers(b, t, 8).iter().map(|(id, n, x, y)| json!({"instruction": id, "count": n, "base_strict": x, "tuned_strict": y})).collect::<Vec<_>>(),
    })
}

/// Settings of `steptune ifeval` (one or more models).
#[derive(Debug, Clone)]
pub struct CliOptions {
    pub models: Vec<PathBuf>,
    pub adapter: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub limit: Option<usize>,
    pub gen: GenOptions,
    pub device: tch::Device,
    pub kind: tch::Kind,
    pub out: PathBuf,
}

/// Where each model's files go: `out` itself for one model, else a sub-folder named after the
/// model folder (`-2`, `-3` when two folders share a name).
pub fn model_dirs(models: &[PathBuf], out: &Path) -> Vec<PathBuf> {
    if models.len() == 1 {
        return vec![out.to_path_buf()];
    }
    let mut used: Vec<String> = Vec::new();
    models
        .iter()
        .map(|m| {
            let stem = m.canonicalize().unwrap_or_else(|_| m.clone()).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
            let mut name = stem.clone();
            let mut i = 2;
            while used.contains(&name) {
                name = format!("{stem}-{i}");
                i += 1;
            }
            used.push(name.clone());
            out.join(name)
        })
        .collect()
}

/// Fails early, naming the path, for a folder that is not a model.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("--model {}: no such folder (give a Hugging Face model folder: config.json, weights, tokenizer files)", dir.display());
    }
    if !dir.join("config.json").is_file() {
        bail!("--model {}: no config.json, not a Hugging Face model folder", dir.display());
    }
    Ok(())
}

/// An adapter trained on another base gives meaningless scores: its `base_model_name_or_path`
/// must be `model` (the same folder, or one with the same config.json) when it names a local folder.
pub fn check_adapter_base(adapter: &Path, model: &Path) -> Result<()> {
    let cfg_path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("--adapter {}: cannot read {}", adapter.display(), cfg_path.display()))?;
    let cfg: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
    let Some(base) = cfg.get("base_model_name_or_path").and_then(Value::as_str).filter(|b| !b.is_empty()) else { return Ok(()) };
    let base_dir = Path::new(base);
    if !base_dir.join("config.json").is_file() {
        // A Hub id: the shapes are checked when the adapter is applied.
        return Ok(());
    }
    let same_dir = matches!((base_dir.canonicalize(), model.canonicalize()), (Ok(a), Ok(b)) if a == b);
    let config = |d: &Path| std::fs::read_to_string(d.join("config.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    if !same_dir && config(base_dir) != config(model) {
        bail!(
            "--adapter {} was trained on {} (its adapter_config.json's base_model_name_or_path), not on --model {}: give --model {base}",
            adapter.display(),
            base,
            model.display()
        );
    }
    Ok(())
}

/// `steptune ifeval`: every model in turn, its files written as soon as it is scored; with
/// several models, the candidates table last.
pub fn run_cli(o: &CliOptions) -> Result<Vec<IfevalRun>> {
    if o.models.is_empty() {
        bail!("give --model DIR (repeat it to compare candidates)");
    }
    if o.gen.max_new_tokens == 0 {
        bail!("--max-new-tokens 0 leaves every response empty: give at least 1 (lm-eval uses 1280)");
    }
    if o.adapter.is_some() && o.models.len() > 1 {
        bail!("--adapter applies to one --model; to compare a tuned model with its base, run `steptune ifeval` once per system or use `eval.ifeval` in the recipe");
    }
    let prompts = first(super::read_prompts(o.input.as_deref())?, o.limit);
    for m in &o.models {
        check_model_dir(m)?;
    }
    if let (Some(a), Some(m)) = (&o.adapter, o.models.first()) {
        check_adapter_base(a, m)?;
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("--out {}: cannot create the folder", o.out.display()))?;
    let dirs = model_dirs(&o.models, &o.out);
    let mut runs = Vec::new();
    for (m, dir) in o.models.iter().zip(&dirs) {
        let mut model = crate::model::load_model(m, None, o.kind, o.device).with_context(|| format!("--model {}", m.display()))?;
        if let Some(a) = &o.adapter {
            crate::adapt::peft::load_adapter(model.as_mut(), a).with_context(|| format!("--adapter {} on --model {}", a.display(), m.display()))?;
        }
        let tok = TokenizerBundle::from_dir(m).with_context(|| format!("--model {}: its tokenizer", m.display()))?;
        let label = m.display().to_string();
        let started = std::time::Instant::now();
        let responses = generate(model.as_ref(), &tok, &prompts, &o.gen, &label)?;
        let generation_seconds = started.elapsed().as_secs_f64();
        drop(model);
        let written = write_responses(dir, &prompts, &responses)?;
        let scores = score_responses(&prompts, &responses).with_context(|| {
            format!("scoring {} (the responses are kept: rescore with `steptune ifeval score --responses {}`)", written.display(), written.display())
        })?;
        let run = IfevalRun {
            model: label,
            adapter: o.adapter.as_ref().map(|a| a.display().to_string()),
            limit: o.limit,
            max_new_tokens: o.gen.max_new_tokens,
            generation_seconds,
            scores,
        };
        write_run(dir, &run)?;
        eprintln!(
            "ifeval: {}: prompt-level strict {}%, instruction-level strict {}%, loose {}% / {}%; wrote {}",
            run.model,
            pct(run.scores.strict_prompt),
            pct(run.scores.strict_instruction),
            pct(run.scores.loose_prompt),
            pct(run.scores.loose_instruction),
            dir.join("ifeval.md").display()
        );
        runs.push(run);
    }
    if runs.len() > 1 {
        write_atomic(&o.out.join("candidates.json"), serde_json::to_string_pretty(&candidates_json(&runs))?.as_bytes())?;
        write_atomic(&o.out.join("candidates.md"), candidates_markdown(&runs).as_bytes())?;
        eprintln!("ifeval: wrote {}", o.out.join("candidates.md").display());
    }
    Ok(runs)
}

/// `steptune ifeval score`: given responses, no model. JSON, or the readable tables.
pub fn score_cli(input: Option<&Path>, responses: &Path, as_json: bool) -> Result<String> {
    let prompts = super::read_prompts(input)?;
    let given = super::read_responses(responses)?;
    let scores = super::score(&prompts, &given).with_context(|| {
        let from = input.map(|p| p.display().to_string()).unwrap_or_else(|| "the 541 embedded prompts".into());
        format!("{} answers {} of the {} prompts of {from}: give --input with just the prompts it answers", responses.display(), given.len(), prompts.len())
    })?;
    if as_json {
        return Ok(scores_json(&scores).to_string() + "\n");
    }
    Ok(format!("{}\n{}", accuracy_table(&scores), per_type_table(&scores)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn outcome(key: i64, ids: &[&str], strict: &[bool], loose: &[bool]) -> PromptOutcome {
        PromptOutcome {
            key,
            prompt: format!("p{key}"),
            response: "r".repeat(2000),
            instruction_id_list: ids.iter().map(|s| s.to_string()).collect(),
            strict: strict.to_vec(),
            loose: loose.to_vec(),
        }
    }

    fn run(name: &str, rows: Vec<PromptOutcome>) -> IfevalRun {
        IfevalRun { model: name.into(), adapter: None, limit: Some(2), max_new_tokens: 16, generation_seconds: 1.0, scores: super::super::aggregate(rows) }
    }

    #[test]
    fn tables_rank_best_first_and_name_the_documents_metric() {
        let a = run("/m/Qwen3-8B", vec![outcome(1, &["punctuation:no_comma"], &[false], &[true]), outcome(2, &["keywords:existence"], &[true], &[true])]);
        let b = run("/m/other", vec![outcome(1, &["punctuation:no_comma"], &[true], &[true]), outcome(2, &["keywords:existence"], &[true], &[true])]);
        let md = candidates_markdown(&[a.clone(), b.clone()]);
        let other = md.find("| /m/other |").unwrap();
        let qwen = md.find("| /m/Qwen3-8B |").unwrap();
        assert!(other < qwen, "best first:\n{md}");
        assert!(md.contains("| 50.0 | 50.0 | 100.0 | 100.0 | 83.0 |"), "{md}");
        assert!(md.contains("prompt-level strict"));
        let m = movers(&a.scores, &b.scores, 5);
        assert_eq!(m, vec![("punctuation:no_comma".to_string(), 1, 0.0, 1.0)]);
        let cmp = comparison_markdown(&a, &b);
        assert!(cmp.contains("| prompt-level strict | 50.0 | 100.0 | +50.0 |"), "{cmp}");
        let page = markdown(&a, 3);
        assert!(page.contains("**key 1**: failed `punctuation:no_comma`") && page.contains("more characters"), "{page}");
        assert_eq!(model_dirs(&[PathBuf::from("/x/m"), PathBuf::from("/y/m")], Path::new("o")), vec![PathBuf::from("o/m"), PathBuf::from("o/m-2")]);
        let per: BTreeMap<String, Value> = serde_json::from_value(scores_json(&a.scores)["per_type"].clone()).unwrap();
        assert_eq!(per.len(), 2);
    }
}
