//! `steptune eval`: generate for every eval prompt with the base and the tuned model, score both
//! against the human reference, and write `report.md`, `report.json` and `metrics.png`.
//!
//! The interpretation bands are the Qwen3 document's: ROUGE-L F1 above 60% very similar, 40-60%
//! fairly similar, below 40% out of order; METEOR above 60% very good, 45-60% good, below 45% poor.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::ifeval;
use super::samples::{generation_config, load_tuned};
use super::score::{score_pairs, CorpusScores, Pair, Scored};
use super::wordnet::WordNet;
use crate::model::generate::{TextGenerator, Generated};
use crate::model::tokenizer::TokenizerBundle;
use crate::recipe::{LoadedRecipe, Metric};
use crate::run::{write_atomic, RunDir};
use crate::train::batches::read_prepared;
use crate::train::{device_of, kind_of, TrainOutcome};

pub fn rouge_band(f1: f64) -> &'static str {
    if f1 > 0.6 {
        "very similar: the steps match"
    } else if f1 >= 0.4 {
        "fairly similar: order somewhat different"
    } else {
        "not in order"
    }
}

pub fn meteor_band(m: f64) -> &'static str {
    if m > 0.6 {
        "very good: substance and meaning match"
    } else if m >= 0.45 {
        "good: fairly close, still relevant"
    } else {
        "poor: many deviations"
    }
}

#[derive(serde::Serialize)]
pub struct SystemResult {
    pub name: String,
    pub scores: Scored,
    pub predictions: Vec<Generated>,
}

/// The run's training outcome, as `train` wrote it.
pub fn read_outcome(run: &RunDir) -> Result<TrainOutcome> {
    let p = run.path("train_result.json");
    let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("cannot read {} ({e}): run `steptune train` first", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Under several ranks each generates for its share of the prompts; rank 0 gathers them, scores
/// and writes, and the others wait until it has.
pub fn run(recipe: &LoadedRecipe, run: &RunDir) -> Result<PathBuf> {
    crate::dist::world().agree_unless_agreed("evaluating", generate_and_report(recipe, run))
}

/// Every rank's generations, in prompt order (ranks hold contiguous shares).
pub(crate) fn gather(mine: Result<Vec<Generated>>, what: &str) -> Result<Vec<Generated>> {
    let world = crate::dist::world();
    let mine = world.agree(what, mine)?;
    if world.size == 1 {
        return Ok(mine);
    }
    let bytes = serde_json::to_vec(&mine)?;
    let mut all = Vec::new();
    for part in world.all_gather_bytes(&bytes, what)? {
        all.extend(serde_json::from_slice::<Vec<Generated>>(&part)?);
    }
    Ok(all)
}

fn generate_and_report(recipe: &LoadedRecipe, run: &RunDir) -> Result<PathBuf> {
    let world = crate::dist::world();
    let r = &recipe.recipe;
    let outcome = read_outcome(run)?;
    let wn = WordNet::shared_default()?;
    let tok = TokenizerBundle::from_dir(&run.path("tokenizer"))?;
    let eval = read_prepared(&run.path("prepared/eval.jsonl"))?;
    let mut seen = std::collections::HashSet::new();
    let mut items: Vec<_> = eval.iter().filter(|e| seen.insert(e.prompt.clone())).collect();
    if let Some(n) = r.eval.max_samples {
        items.truncate(n);
    }
    if items.is_empty() {
        bail!("prepared/eval.jsonl has no rows to evaluate: raise data.split.eval_ratio");
    }
    let prompts: Vec<String> = items.iter().map(|e| e.prompt.clone()).collect();
    let pairs_for = |gens: &[Generated]| -> Vec<Pair> {
        items
            .iter()
            .zip(gens)
            .enumerate()
            .map(|(i, (e, g))| Pair { id: i.to_string(), prediction: g.text.clone(), reference: e.output.clone(), group: Some(e.group.clone()) })
            .collect()
    };
    let mut systems = Vec::new();
    let t = &r.training;
    let mut models = vec![("tuned".to_string(), load_tuned(recipe, &outcome)?)];
    // IFEval compares against the base even when the procedures' report leaves it out.
    if r.eval.compare_base || r.eval.ifeval {
        models.insert(0, ("base".to_string(), crate::model::load_model(&outcome.base, crate::train::quant_spec(recipe), kind_of(t.precision), device_of(&t.device))?));
    }
    let ifeval_prompts = if r.eval.ifeval { ifeval::run::first(ifeval::read_prompts(None)?, r.eval.ifeval_limit) } else { Vec::new() };
    let ifeval_opts = ifeval::run::GenOptions { max_new_tokens: r.eval.ifeval_max_new_tokens, batch_size: r.eval.batch_size };
    let mut ifeval_generated = Vec::new();
    for (name, model) in &models {
        if r.eval.ifeval {
            let started = std::time::Instant::now();
            let responses = ifeval::run::generate(model.as_ref(), &tok, &ifeval_prompts, &ifeval_opts, name)?;
            ifeval_generated.push((name.clone(), responses, started.elapsed().as_secs_f64()));
        }
        if name == "base" && !r.eval.compare_base {
            continue;
        }
        let gen = TextGenerator::new(model.as_ref(), &tok, r.model.system_prompt.clone())?;
        let cfg = generation_config(recipe, &gen);
        tch::manual_seed(r.seed as i64);
        let started = std::time::Instant::now();
        world.doing(&format!("generating with the {name} model"));
        let mine = gen.generate(&prompts[world.my_share(prompts.len())], &cfg, r.eval.batch_size);
        let predictions = gather(mine, &format!("generating with the {name} model"))?;
        if !world.is_main() {
            continue;
        }
        eprintln!("eval: {name}: {} generations in {:.1} s", predictions.len(), started.elapsed().as_secs_f64());
        let scores = score_pairs(&pairs_for(&predictions), wn, true);
        let lines: String = predictions.iter().zip(&items).map(|(g, e)| json!({"prompt": g.prompt, "prediction": g.text, "reference": e.output, "group": e.group}).to_string() + "\n").collect();
        write_atomic(&run.path(&format!("eval/predictions_{name}.jsonl")), lines.as_bytes())?;
        systems.push(SystemResult { name: name.clone(), scores, predictions });
    }
    let path = run.path("report.md");
    if !world.is_main() {
        return Ok(path);
    }
    // The human reference scored against itself: the ceiling every metric is read against.
    let reference = score_pairs(
        &items.iter().enumerate().map(|(i, e)| Pair { id: i.to_string(), prediction: e.output.clone(), reference: e.output.clone(), group: Some(e.group.clone()) }).collect::<Vec<_>>(),
        wn,
        true,
    );
    let mut report = json!({
        "recipe": r.name,
        "eval_prompts": items.len(),
        "train": outcome,
        "systems": systems.iter().map(|s| json!({"name": s.name, "corpus": s.scores.corpus, "per_group": s.scores.per_group})).collect::<Vec<_>>(),
        "human_reference": reference.corpus,
        "bands": {
            "rouge_l_f1": systems.iter().map(|s| (s.name.clone(), rouge_band(s.scores.corpus.rouge_l_f1))).collect::<std::collections::BTreeMap<_, _>>(),
            "meteor": systems.iter().map(|s| (s.name.clone(), meteor_band(s.scores.corpus.meteor))).collect::<std::collections::BTreeMap<_, _>>(),
        },
    });
    // IFEval (eval.ifeval): both systems' pages in ifeval.md/ifeval.json, the comparison in the report.
    let ifeval_runs = ifeval_generated.into_iter().map(|(name, responses, secs)| ifeval_system(recipe, run, &ifeval_prompts, &name, &responses, secs)).collect::<Result<Vec<_>>>()?;
    let ifeval_section = match ifeval_runs.as_slice() {
        [base, .., tuned] => {
            let section = ifeval::run::comparison_markdown(base, tuned);
            let mut page = format!("# {}: IFEval, base vs tuned\n\n{section}", r.name);
            for sys in [base, tuned] {
                // Each system's page, its headings one level down.
                let own = ifeval::run::markdown(sys, r.eval.report_examples);
                page += &format!("\n{}", own.replace("\n## ", "\n### ").replacen("# IFEval: ", "## IFEval: ", 1));
            }
            let both = json!({"comparison": ifeval::run::comparison_json(base, tuned), "base": ifeval::run::run_json(base), "tuned": ifeval::run::run_json(tuned)});
            write_atomic(&run.path("ifeval.json"), serde_json::to_string_pretty(&both)?.as_bytes())?;
            write_atomic(&run.path("ifeval.md"), page.as_bytes())?;
            report["ifeval"] = ifeval::run::comparison_json(base, tuned);
            Some(section)
        }
        _ => None,
    };
    write_atomic(&run.path("report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    if let Some(dir) = crate::train::tensorboard::dir_of(recipe, run) {
        let scores: Vec<(String, serde_json::Value)> = systems.iter().map(|s| (s.name.clone(), json!(s.scores.corpus))).collect();
        crate::train::tensorboard::write_eval(&dir, outcome.steps, &scores)?;
    }
    let _ = chart(run, &systems, &reference.corpus, &r.eval.metrics);
    let items: Vec<(String, String, String)> = items.iter().map(|e| (e.prompt.clone(), e.output.clone(), e.group.clone())).collect();
    let md = markdown(recipe, &outcome, &systems, &reference.corpus, &items, ifeval_section.as_deref());
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// IFEval scores of one system (rank 0, after every rank has generated its share); its responses
/// go to `eval/ifeval_responses_<name>.jsonl` in the reference's input format.
fn ifeval_system(recipe: &LoadedRecipe, run: &RunDir, prompts: &[ifeval::IfevalPrompt], name: &str, responses: &[String], generation_seconds: f64) -> Result<ifeval::run::IfevalRun> {
    let e = &recipe.recipe.eval;
    let path = run.path(&format!("eval/ifeval_responses_{name}.jsonl"));
    write_atomic(&path, ifeval::run::responses_jsonl(prompts, responses).as_bytes())?;
    let scores = ifeval::run::score_responses(prompts, responses).with_context(|| format!("IFEval: scoring {}", path.display()))?;
    eprintln!("eval: IFEval {name}: prompt-level strict {:.1}% ({} prompts, {generation_seconds:.1} s)", scores.strict_prompt * 100.0, prompts.len());
    Ok(ifeval::run::IfevalRun { model: name.to_string(), adapter: None, limit: e.ifeval_limit, max_new_tokens: e.ifeval_max_new_tokens, generation_seconds, scores })
}

/// The rows of the report for the recipe's `eval.metrics`.
fn metric_rows(c: &CorpusScores, metrics: &[Metric]) -> Vec<(&'static str, f64)> {
    let mut rows = Vec::new();
    for m in metrics {
        match m {
            Metric::RougeL => rows.extend([("ROUGE-L F1", c.rouge_l_f1), ("ROUGE-Lsum F1", c.rouge_lsum_f1)]),
            Metric::Meteor => rows.push(("METEOR", c.meteor)),
            Metric::Bleu => rows.push(("BLEU / 100", c.bleu / 100.0)),
            Metric::Steps => rows.extend([("step recall", c.step_recall), ("step precision", c.step_precision), ("well-formed list", c.well_formed_rate)]),
        }
    }
    rows
}

fn chart(run: &RunDir, systems: &[SystemResult], reference: &CorpusScores, metrics: &[Metric]) -> Result<()> {
    use plotters::prelude::*;
    crate::train::plot::register_font();
    let names: Vec<&str> = metric_rows(reference, metrics).iter().map(|m| m.0).collect();
    let mut series: Vec<(String, Vec<f64>)> = systems.iter().map(|s| (s.name.clone(), metric_rows(&s.scores.corpus, metrics).iter().map(|m| m.1).collect())).collect();
    series.push(("human reference".into(), metric_rows(reference, metrics).iter().map(|m| m.1).collect()));
    let out = run.path("metrics.png");
    let root = BitMapBackend::new(&out, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let n = names.len() as f64;
    // Headroom above the bars holds each metric's name and the legend.
    let mut c = ChartBuilder::on(&root)
        .caption("base vs tuned vs human reference", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..1.45)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.configure_mesh().disable_x_mesh().disable_x_axis().y_labels(8).label_style(("sans-serif", 12)).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.draw_series(names.iter().enumerate().map(|(i, name)| {
        Text::new(name.to_string(), (i as f64 + 0.5, 1.1), ("sans-serif", 13).into_font().color(&BLACK).pos(plotters::style::text_anchor::Pos::new(plotters::style::text_anchor::HPos::Center, plotters::style::text_anchor::VPos::Center)))
    }))
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let colors = [RGBColor(150, 150, 150), RGBColor(31, 119, 180), RGBColor(44, 160, 44)];
    let w = 0.8 / series.len() as f64;
    for (k, (name, vals)) in series.iter().enumerate() {
        let color = colors[k % colors.len()];
        c.draw_series(vals.iter().enumerate().map(|(i, &v)| {
            let x0 = i as f64 + 0.1 + k as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v.clamp(0.0, 1.05))], color.filled())
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    c.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.9)).border_style(BLACK).label_font(("sans-serif", 13)).draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

fn markdown(recipe: &LoadedRecipe, outcome: &TrainOutcome, systems: &[SystemResult], reference: &CorpusScores, items: &[(String, String, String)], ifeval: Option<&str>) -> String {
    let mut s = String::new();
    let r = &recipe.recipe;
    let f = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(s, "# {}: evaluation\n", r.name);
    let _ = writeln!(
        s,
        "{} eval prompts (held-out paraphrases). Training: {} steps, eval loss {} → {}{}.\n",
        items.len(),
        outcome.steps,
        f(outcome.initial_eval_loss),
        f(outcome.final_eval_loss),
        if outcome.stopped_early { " (stopped early)" } else { "" }
    );
    let _ = write!(s, "| metric |");
    for sys in systems {
        let _ = write!(s, " {} |", sys.name);
    }
    let _ = writeln!(s, " human reference |\n|---|{}---|", "---|".repeat(systems.len()));
    let rows: Vec<Vec<(&str, f64)>> = systems.iter().map(|x| metric_rows(&x.scores.corpus, &r.eval.metrics)).collect();
    for (i, (name, refv)) in metric_rows(reference, &r.eval.metrics).iter().enumerate() {
        let _ = write!(s, "| {name} |");
        for r in &rows {
            let _ = write!(s, " {:.3} |", r[i].1);
        }
        let _ = writeln!(s, " {refv:.3} |");
    }
    if r.eval.metrics.contains(&Metric::Steps) {
        let _ = write!(s, "| mean abs. step-count error |");
        for sys in systems {
            let _ = write!(s, " {:.2} |", sys.scores.corpus.mean_abs_step_count_error);
        }
        let _ = writeln!(s, " 0.00 |");
        let _ = write!(s, "| step order (Kendall τ) |");
        for sys in systems {
            let _ = write!(s, " {} |", sys.scores.corpus.order_kendall_tau.map(|t| format!("{t:.3}")).unwrap_or_else(|| "-".into()));
        }
        let _ = writeln!(s, " 1.000 |\n");
    } else {
        let _ = writeln!(s);
    }
    for sys in systems {
        let c = &sys.scores.corpus;
        let _ = writeln!(s, "- **{}**: ROUGE-L F1 {:.1}%: {}; METEOR {:.1}%: {}.", sys.name, c.rouge_l_f1 * 100.0, rouge_band(c.rouge_l_f1), c.meteor * 100.0, meteor_band(c.meteor));
    }
    let _ = writeln!(s, "\nBands from the Qwen3 design document. BLEU is sacrebleu's corpus BLEU (13a). Step metrics match each reference step to its best predicted step (ROUGE-L F1 ≥ 0.5).\n\n![metrics](metrics.png)\n");
    if let Some(tuned) = systems.iter().find(|x| x.name == "tuned") {
        let _ = writeln!(s, "## Per intent (tuned)\n\n| intent | n | ROUGE-L F1 | METEOR | step F1 |");
        let base = systems.iter().find(|x| x.name == "base");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (g, c) in &tuned.scores.per_group {
            let b = base.and_then(|b| b.scores.per_group.get(g)).map(|b| format!(" (base {:.3})", b.rouge_l_f1)).unwrap_or_default();
            let _ = writeln!(s, "| {g} | {} | {:.3}{b} | {:.3} | {:.3} |", c.n, c.rouge_l_f1, c.meteor, c.step_f1);
        }
        let mut order: Vec<usize> = (0..tuned.scores.rows.len()).collect();
        order.sort_by(|&a, &b| tuned.scores.rows[b].rouge_l.total_cmp(&tuned.scores.rows[a].rouge_l));
        let k = r.eval.report_examples.min(order.len());
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', "<br>");
        for (title, idx) in [("Best", &order[..k]), ("Worst", &order[order.len() - k..])] {
            let _ = writeln!(s, "\n## {title} examples (tuned, by ROUGE-L F1)\n");
            for &i in idx {
                let (prompt, reference, group) = &items[i];
                let _ = writeln!(s, "**{prompt}** ({group}), ROUGE-L F1 {:.3}\n", tuned.scores.rows[i].rouge_l);
                let _ = write!(s, "| reference |");
                for sys in systems {
                    let _ = write!(s, " {} |", sys.name);
                }
                let _ = writeln!(s, "\n|---|{}", "---|".repeat(systems.len()));
                let _ = write!(s, "| {} |", cell(reference));
                for sys in systems {
                    let _ = write!(s, " {} |", cell(&sys.predictions[i].text));
                }
                let _ = writeln!(s, "\n");
            }
        }
    }
    if let Some(section) = ifeval {
        let _ = writeln!(s, "## IFEval: instruction-following kept or lost\n\n{section}\nBoth systems' tables and failing examples: [ifeval.md](ifeval.md).\n");
    }
    let _ = writeln!(s, "Training curves: ![loss](loss.png)");
    s
}

/// `steptune human-eval export`: a blinded sheet of the eval predictions (base and tuned) for
/// raters, and the key that unblinds it (keep it away from raters).
pub fn human_export(recipe: &LoadedRecipe, run: &RunDir, sheet: &std::path::Path, key: &std::path::Path) -> Result<()> {
    let read = |name: &str| -> Result<Vec<serde_json::Value>> {
        let p = run.path(&format!("eval/predictions_{name}.jsonl"));
        let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("cannot read {} ({e}): run `steptune eval` first", p.display()))?;
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| Ok(serde_json::from_str(l)?)).collect()
    };
    let tuned = read("tuned")?;
    let base = read("base").unwrap_or_default();
    let rows: Vec<super::human::SheetRow> = tuned
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut outputs = vec![("tuned".to_string(), t["prediction"].as_str().unwrap_or("").to_string())];
            if let Some(b) = base.get(i) {
                outputs.push(("base".to_string(), b["prediction"].as_str().unwrap_or("").to_string()));
            }
            super::human::SheetRow {
                id: i.to_string(),
                prompt: t["prompt"].as_str().unwrap_or("").to_string(),
                reference: t["reference"].as_str().unwrap_or("").to_string(),
                outputs,
            }
        })
        .collect();
    super::human::export(&rows, recipe.recipe.seed, sheet, key)
}

/// `steptune human-eval import`: reads filled sheets, writes human_eval.{json,md} into the run and
/// adds the result to report.md and report.json.
pub fn human_import(run: &RunDir, sheets: &[PathBuf], key: &std::path::Path) -> Result<PathBuf> {
    let report = super::human::import(sheets, key)?;
    let md = super::human::report_markdown(&report);
    write_atomic(&run.path("human_eval.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    write_atomic(&run.path("human_eval.md"), md.as_bytes())?;
    if let Ok(text) = std::fs::read_to_string(run.path("report.json")) {
        let mut v: serde_json::Value = serde_json::from_str(&text)?;
        v["human_eval"] = serde_json::to_value(&report)?;
        write_atomic(&run.path("report.json"), serde_json::to_string_pretty(&v)?.as_bytes())?;
    }
    if let Ok(text) = std::fs::read_to_string(run.path("report.md")) {
        let marker = "\n## Human evaluation\n";
        let base = text.split(marker).next().unwrap_or(&text).to_string();
        write_atomic(&run.path("report.md"), format!("{base}{marker}\n{md}").as_bytes())?;
    }
    Ok(run.path("human_eval.md"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_rows_follow_the_recipes_metrics() {
        let c = CorpusScores {
            n: 1,
            rouge_l_f1: 0.5,
            rouge_l_precision: 0.5,
            rouge_l_recall: 0.5,
            rouge_lsum_f1: 0.6,
            meteor: 0.7,
            bleu: 40.0,
            step_recall: 0.1,
            step_precision: 0.2,
            step_f1: 0.15,
            mean_abs_step_count_error: 1.0,
            order_kendall_tau: None,
            well_formed_rate: 1.0,
        };
        let names = |m: &[Metric]| metric_rows(&c, m).into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(names(&[Metric::Meteor]), vec!["METEOR"]);
        assert_eq!(names(&[Metric::Bleu, Metric::RougeL]), vec!["BLEU / 100", "ROUGE-L F1", "ROUGE-Lsum F1"]);
        assert_eq!(metric_rows(&c, &[Metric::Bleu])[0].1, 0.4);
        assert_eq!(names(&[Metric::Steps]).len(), 3);
        assert_eq!(rouge_band(0.61), "very similar: the steps match");
        assert_eq!(rouge_band(0.4), "fairly similar: order somewhat different");
        assert_eq!(rouge_band(0.39), "not in order");
        assert_eq!(meteor_band(0.45), "good: fairly close, still relevant");
        assert_eq!(meteor_band(0.449), "poor: many deviations");
    }
}
