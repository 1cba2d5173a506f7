//! IFEval (Zhou et al. 2023): 541 prompts whose instructions a program can verify ("answer in
//! fewer than 300 words", "wrap the whole answer in JSON"). The Qwen3 document picks its base model
//! by this score. Scoring is the reference's (google-research `instruction_following_eval`, the same
//! checkers as lm-eval's `ifeval` task) made deterministic in its two random places: langdetect is
//! seeded with 0, and a `letter_frequency` letter outside a-z is counted as given.
//!
//! - `checkers`: the 25 instruction checkers, one function each, and Python's text semantics.
//! - `punkt`, `words`: NLTK's Punkt sentence splitter and `word_tokenize`, which two checkers use.
//! - `run`: generation with a model's chat template, the reports and the candidate table.
pub mod checkers;
pub mod punkt;
pub mod run;
pub mod words;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The 541 prompts as google-research ships them (data/ifeval/README.md).
pub const INPUT_DATA: &str = include_str!("../../../data/ifeval/input_data.jsonl");

/// One prompt and its verifiable instructions (`kwargs[i]` parameterises `instruction_id_list[i]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IfevalPrompt {
    pub key: i64,
    pub prompt: String,
    pub instruction_id_list: Vec<String>,
    pub kwargs: Vec<Map<String, Value>>,
}

/// One prompt's outcome: per instruction, followed under the strict and the loose reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptOutcome {
    pub key: i64,
    pub prompt: String,
    pub response: String,
    pub instruction_id_list: Vec<String>,
    pub strict: Vec<bool>,
    pub loose: Vec<bool>,
}

/// How often one instruction type was followed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TypeScore {
    pub count: usize,
    pub strict: f64,
    pub loose: f64,
}

/// The four accuracies of the paper (fractions, 0-1), per instruction type, and every row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IfevalScores {
    pub strict_prompt: f64,
    pub strict_instruction: f64,
    pub loose_prompt: f64,
    pub loose_instruction: f64,
    /// Keyed by the full instruction id (`detectable_format:json_format`).
    pub per_type: BTreeMap<String, TypeScore>,
    pub rows: Vec<PromptOutcome>,
}

/// Parses prompts in the reference's format; `source` names the file in errors.
pub fn parse_prompts(text: &str, source: &str) -> Result<Vec<IfevalPrompt>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: IfevalPrompt = serde_json::from_str(line).with_context(|| {
            format!("{source} line {}: not an IFEval prompt (want key, prompt, instruction_id_list, kwargs)", i + 1)
        })?;
        if p.kwargs.len() != p.instruction_id_list.len() {
            bail!(
                "{source} line {} (key {}): {} instructions but {} kwargs objects",
                i + 1,
                p.key,
                p.instruction_id_list.len(),
                p.kwargs.len()
            );
        }
        for id in &p.instruction_id_list {
            if !checkers::INSTRUCTION_IDS.contains(&id.as_str()) {
                bail!("{source} line {} (key {}): unknown instruction {id:?}", i + 1, p.key);
            }
        }
        out.push(p);
    }
    if out.is_empty() {
        bail!("{source}: no prompts");
    }
    Ok(out)
}

/// The embedded prompts, or those of `path`.
pub fn read_prompts(path: Option<&Path>) -> Result<Vec<IfevalPrompt>> {
    match path {
        None => parse_prompts(INPUT_DATA, "data/ifeval/input_data.jsonl"),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            parse_prompts(&text, &p.display().to_string())
        }
    }
}

/// Responses in the reference's format, one `{"prompt": ..., "response": ...}` per line, by prompt.
pub fn read_responses(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let field = |name: &str| {
            v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                anyhow!("{} line {}: want a string {name:?} (one {{\"prompt\", \"response\"}} per line)", path.display(), i + 1)
            })
        };
        out.insert(field("prompt")?, field("response")?);
    }
    Ok(out)
}

/// Which instructions one response follows: strictly, and loosely (the reference's eight variants:
/// as is, without `*`, without its first and/or last line).
pub fn score_one(p: &IfevalPrompt, response: &str) -> Result<PromptOutcome> {
    let lines: Vec<&str> = response.split('\n').collect();
    let join = |ls: &[&str]| ls.join("\n").trim_matches(checkers::is_py_space).to_string();
    let (first_off, last_off, both_off) = if lines.len() >= 2 {
        (join(&lines[1..]), join(&lines[..lines.len() - 1]), join(&lines[1..lines.len() - 1]))
    } else {
        // Python: "\n".join([]) is "", so a one-line response loses everything either way.
        (String::new(), String::new(), String::new())
    };
    let variants = [
        response.to_string(),
        response.replace('*', ""),
        first_off.clone(),
        last_off.clone(),
        both_off.clone(),
        first_off.replace('*', ""),
        last_off.replace('*', ""),
        both_off.replace('*', ""),
    ];
    let mut strict = Vec::new();
    let mut loose = Vec::new();
    for (id, kwargs) in p.instruction_id_list.iter().zip(&p.kwargs) {
        let check = checkers::Instruction::new(id, kwargs)
            .with_context(|| format!("prompt key {}: instruction {id}", p.key))?;
        let follows = |r: &str| !checkers::py_strip(r).is_empty() && check.follows(r);
        strict.push(follows(response));
        loose.push(variants.iter().any(|r| follows(r)));
    }
    Ok(PromptOutcome {
        key: p.key,
        prompt: p.prompt.clone(),
        response: response.to_string(),
        instruction_id_list: p.instruction_id_list.clone(),
        strict,
        loose,
    })
}

/// Scores every prompt; a prompt without a response is an error that names it.
pub fn score(prompts: &[IfevalPrompt], responses: &HashMap<String, String>) -> Result<IfevalScores> {
    let mut rows = Vec::with_capacity(prompts.len());
    for p in prompts {
        let response = responses.get(&p.prompt).ok_or_else(|| {
            anyhow!("no response for prompt key {} ({:?}...)", p.key, p.prompt.chars().take(60).collect::<String>())
        })?;
        rows.push(score_one(p, response)?);
    }
    Ok(aggregate(rows))
}

/// The four accuracies and the per-type table of scored rows.
pub fn aggregate(rows: Vec<PromptOutcome>) -> IfevalScores {
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let n_prompts = rows.len();
    let n_instr: usize = rows.iter().map(|r| r.strict.len()).sum();
    let strict_p = rows.iter().filter(|r| r.strict.iter().all(|&b| b)).count();
    let loose_p = rows.iter().filter(|r| r.loose.iter().all(|&b| b)).count();
    let strict_i: usize = rows.iter().map(|r| r.strict.iter().filter(|&&b| b).count()).sum();
    let loose_i: usize = rows.iter().map(|r| r.loose.iter().filter(|&&b| b).count()).sum();
    let mut counts: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for r in &rows {
        for (i, id) in r.instruction_id_list.iter().enumerate() {
            let c = counts.entry(id.clone()).or_default();
            c.0 += 1;
            c.1 += r.strict[i] as usize;
            c.2 += r.loose[i] as usize;
        }
    }
    let per_type = counts
        .into_iter()
        .map(|(id, (n, s, l))| (id, TypeScore { count: n, strict: frac(s, n), loose: frac(l, n) }))
        .collect();
    IfevalScores {
        strict_prompt: frac(strict_p, n_prompts),
        strict_instruction: frac(strict_i, n_instr),
        loose_prompt: frac(loose_p, n_prompts),
        loose_instruction: frac(loose_i, n_instr),
        per_type,
        rows,
    }
}
