//! `steptune compare`: finished (or unfinished) runs side by side.
//!
//! It reads only what the stages wrote (recipe.yaml, train_result.json, report.json,
//! metrics.jsonl), so it compares runs made by any version, by hand or by a sweep. A file a run
//! lacks is reported as missing, never read as zero: a run that has not been evaluated must not
//! look like one that scored nothing.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::style::RGBColor;
use serde_json::{json, Value};

use super::sweep::flatten;
use crate::run::write_atomic;

/// What one run folder holds.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub name: String,
    pub dir: PathBuf,
    /// The resolved recipe, flattened to dotted keys; empty when recipe.yaml is missing.
    pub settings: BTreeMap<String, String>,
    pub steps: Option<u64>,
    /// False when train_result.json is missing (steps then come from metrics.jsonl).
    pub finished: bool,
    pub initial_eval_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    /// `system.metric` → value, from report.json's corpus scores, in the report's order.
    pub metrics: Vec<(String, Option<f64>)>,
    /// (step, eval loss) from metrics.jsonl.
    pub curve: Vec<(f64, f64)>,
    /// The files this run lacks, by name.
    pub missing: Vec<String>,
}

/// The runs named: run folders, or sweep folders (their points, in grid order).
pub fn collect(paths: &[PathBuf]) -> Result<Vec<RunSummary>> {
    let mut runs = Vec::new();
    for p in paths {
        let index = p.join("sweep.json");
        if index.exists() {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&index).with_context(|| format!("cannot read {}", index.display()))?)
                .with_context(|| format!("{} is not valid JSON", index.display()))?;
            for point in v["points"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = point["name"].as_str().context("sweep.json: a point without a name")?;
                runs.push(read_run(&p.join(name), name.to_string()));
            }
        } else if p.join("recipe.yaml").exists() {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
            runs.push(read_run(p, name));
        } else {
            bail!("{} is neither a run folder (no recipe.yaml) nor a sweep folder (no sweep.json)", p.display());
        }
    }
    if runs.is_empty() {
        bail!("nothing to compare: name run folders or sweep folders");
    }
    // Two runs of one name (folders of the same name in different places) go by their paths.
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for r in runs.iter_mut() {
        if names.iter().filter(|n| **n == r.name).count() > 1 {
            r.name = r.dir.display().to_string();
        }
    }
    Ok(runs)
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

pub fn read_run(dir: &Path, name: String) -> RunSummary {
    let mut missing = Vec::new();
    let settings = match std::fs::read_to_string(dir.join("recipe.yaml")).ok().and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok()) {
        Some(v) => flatten(&v),
        None => {
            missing.push("recipe.yaml".to_string());
            BTreeMap::new()
        }
    };
    let mut curve = Vec::new();
    let mut last_step = None;
    match std::fs::read_to_string(dir.join("metrics.jsonl")) {
        Ok(text) => {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
                let Some(step) = v["step"].as_u64() else { continue };
                last_step = Some(last_step.unwrap_or(0).max(step));
                if let Some(l) = v["eval_loss"].as_f64() {
                    curve.push((step as f64, l));
                }
            }
        }
        Err(_) => missing.push("metrics.jsonl".to_string()),
    }
    let train = read_json(&dir.join("train_result.json"));
    if train.is_none() {
        missing.push("train_result.json".to_string());
    }
    let t = train.clone().unwrap_or(Value::Null);
    let finite = |v: &Value| v.as_f64().filter(|x| x.is_finite());
    let mut metrics = Vec::new();
    match read_json(&dir.join("report.json")) {
        Some(report) => {
            for s in report["systems"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let system = s["name"].as_str().unwrap_or("?");
                if let Some(corpus) = s["corpus"].as_object() {
                    for (k, v) in corpus {
                        if k != "n" {
                            metrics.push((format!("{system}.{k}"), v.as_f64()));
                        }
                    }
                }
            }
        }
        None => missing.push("report.json".to_string()),
    }
    RunSummary {
        name,
        dir: dir.to_path_buf(),
        settings,
        steps: t["steps"].as_u64().or(last_step),
        finished: train.is_some(),
        initial_eval_loss: finite(&t["initial_eval_loss"]).or_else(|| curve.first().filter(|p| p.0 == 0.0).map(|p| p.1)),
        best_eval_loss: finite(&t["best_eval_loss"]).or_else(|| curve.iter().map(|p| p.1).filter(|l| l.is_finite()).reduce(f64::min)),
        final_eval_loss: finite(&t["final_eval_loss"]),
        metrics,
        curve,
        missing,
    }
}

/// The settings whose values are not the same in every run (the run folder itself aside).
pub fn differing_settings(runs: &[RunSummary]) -> Vec<String> {
    // A run without recipe.yaml has no settings to differ in.
    let known: Vec<&RunSummary> = runs.iter().filter(|r| !r.settings.is_empty()).collect();
    let keys: std::collections::BTreeSet<&String> = known.iter().flat_map(|r| r.settings.keys()).collect();
    keys.into_iter()
        .filter(|k| k.as_str() != "output_dir")
        .filter(|k| known.iter().any(|r| r.settings.get(*k) != known[0].settings.get(*k)))
        .cloned()
        .collect()
}

fn fmt_loss(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "missing".into())
}

/// Column headers: the last key segment, or the whole key when two share it.
fn short_names(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let last = k.rsplit('.').next().unwrap_or(k);
            if keys.iter().filter(|o| o.rsplit('.').next() == Some(last)).count() > 1 { k.clone() } else { last.to_string() }
        })
        .collect()
}

/// Every metric name of any run, in first-seen order.
fn metric_names(runs: &[RunSummary]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for (m, _) in &r.metrics {
            if !names.contains(m) {
                names.push(m.clone());
            }
        }
    }
    names
}

pub fn markdown(runs: &[RunSummary], png: Option<&str>) -> String {
    let diff = differing_settings(runs);
    let heads = short_names(&diff);
    let mut s = String::new();
    let _ = writeln!(s, "# Comparison of {} runs\n", runs.len());
    if diff.is_empty() {
        let _ = writeln!(s, "No setting differs between these runs.\n");
    } else {
        let _ = writeln!(s, "Settings that differ: {}.\n", diff.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "));
    }
    let _ = write!(s, "| run |");
    for h in &heads {
        let _ = write!(s, " {h} |");
    }
    let _ = writeln!(s, " steps | eval loss at start | best eval loss | final eval loss |");
    let _ = writeln!(s, "|---|{}---|---|---|---|", "---|".repeat(heads.len()));
    for r in runs {
        let _ = write!(s, "| {} |", r.name);
        for k in &diff {
            let v = r.settings.get(k).map(String::as_str).unwrap_or(if r.settings.is_empty() { "missing" } else { "unset" });
            let _ = write!(s, " {v} |");
        }
        let steps = match (r.steps, r.finished) {
            (Some(n), true) => n.to_string(),
            (Some(n), false) => format!("{n} (unfinished)"),
            (None, _) => "missing".into(),
        };
        let _ = writeln!(s, " {steps} | {} | {} | {} |", fmt_loss(r.initial_eval_loss), fmt_loss(r.best_eval_loss), fmt_loss(r.final_eval_loss));
    }
    let names = metric_names(runs);
    if !names.is_empty() {
        let _ = writeln!(s, "\n## Metrics from each run's report.json\n");
        let _ = write!(s, "| metric |");
        for r in runs {
            let _ = write!(s, " {} |", r.name);
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(runs.len()));
        for m in &names {
            let _ = write!(s, "| {m} |");
            for r in runs {
                let cell = match r.metrics.iter().find(|(n, _)| n == m) {
                    Some((_, Some(v))) => format!("{v:.4}"),
                    Some((_, None)) => "n/a".into(),
                    None if r.missing.iter().any(|f| f == "report.json") => "missing".into(),
                    None => "n/a".into(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
    }
    let lacking: Vec<String> = runs.iter().filter(|r| !r.missing.is_empty()).map(|r| format!("- {}: no {}", r.name, r.missing.join(", "))).collect();
    if !lacking.is_empty() {
        let _ = writeln!(s, "\n## Missing files\n\n{}", lacking.join("\n"));
    }
    match png {
        Some(p) => {
            let _ = writeln!(s, "\n![eval loss of every run]({p})");
        }
        None => {
            let _ = writeln!(s, "\nNo run has an eval loss curve to plot.");
        }
    }
    s
}

pub fn to_json(runs: &[RunSummary]) -> Value {
    let diff = differing_settings(runs);
    json!({
        "differing_settings": diff,
        "metrics": metric_names(runs),
        "runs": runs.iter().map(|r| json!({
            "name": r.name,
            "dir": r.dir.display().to_string(),
            "settings": diff.iter().map(|k| (k.clone(), json!(r.settings.get(k)))).collect::<serde_json::Map<_, _>>(),
            "steps": r.steps,
            "finished": r.finished,
            "initial_eval_loss": r.initial_eval_loss,
            "best_eval_loss": r.best_eval_loss,
            "final_eval_loss": r.final_eval_loss,
            "metrics": r.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "eval_loss_curve": r.curve,
            "missing": r.missing,
        })).collect::<Vec<_>>(),
    })
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// compare.md, compare.json and compare.png (every run's eval-loss curve) in `out`.
pub fn write(runs: &[RunSummary], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let png = out.join("compare.png");
    let series: Vec<(&str, &Vec<(f64, f64)>, RGBColor)> = runs.iter().enumerate().filter(|(_, r)| !r.curve.is_empty()).map(|(i, r)| (r.name.as_str(), &r.curve, PALETTE[i % PALETTE.len()])).collect();
    let plotted = !series.is_empty() && crate::train::plot::draw_lines(&png, "eval loss", "step", &series).is_ok();
    let md = out.join("compare.md");
    write_atomic(&md, markdown(runs, plotted.then_some("compare.png")).as_bytes())?;
    let js = out.join("compare.json");
    write_atomic(&js, serde_json::to_string_pretty(&to_json(runs))?.as_bytes())?;
    let mut written = vec![md, js];
    if plotted {
        written.push(png);
    }
    Ok(written)
}
