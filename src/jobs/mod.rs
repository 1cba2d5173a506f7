//! Drivers above the stages: the main job (one run, every stage in order), sweeps over a grid of
//! overrides, comparisons of finished runs, and the Slurm script that launches either.
//!
//! They live here, not in main.rs, so a sweep point runs through exactly the functions the main
//! job runs (prepare, train, eval with their provenance and rank handling) instead of a copy.
//! Stages never call up into this module.
pub mod compare;
pub mod slurm;
pub mod sweep;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::data::prepare;
use crate::dist;
use crate::recipe::{LoadedRecipe, Override};
use crate::run::RunDir;
use crate::train;

/// The recipe file (or the embedded quickstart) with `--set` overrides, for a single process.
pub fn load(recipe: Option<&Path>, overrides: &[String]) -> Result<LoadedRecipe> {
    if recipe.is_none() && dist::world().is_main() {
        eprintln!("steptune: no recipe given, running the embedded quickstart recipe");
    }
    LoadedRecipe::load_or_quickstart(recipe, &Override::parse_all(overrides)?)
}

/// The recipe of a stage that may run as one of several ranks (torchrun, srun): joins the job
/// first, then checks every rank loaded the recipe, so a bad one is reported once, by rank 0.
pub fn load_joined(recipe: Option<&Path>, overrides: &[String]) -> Result<LoadedRecipe> {
    let loaded = Override::parse_all(overrides).and_then(|o| LoadedRecipe::load_or_quickstart(recipe, &o));
    let world = dist::init(loaded.as_ref().ok().map(|r| &r.recipe.training))?;
    if recipe.is_none() && world.is_main() {
        eprintln!("steptune: no recipe given, running the embedded quickstart recipe");
    }
    world.agree("loading the recipe", loaded)
}

/// Under several ranks rank 0 prepares and the others wait for it.
pub fn prepare_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, show: usize) -> Result<()> {
    let world = dist::world();
    let prepared = if world.is_main() { prepare_alone(recipe, output_dir, show) } else { Ok(()) };
    world.agree("preparing the data", prepared)
}

fn prepare_alone(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, show: usize) -> Result<()> {
    let run = RunDir::create(output_dir.unwrap_or_else(|| recipe.output_dir()))?;
    run.write_provenance(recipe, "prepare")?;
    let out = prepare::run(recipe, &run)?;
    if show > 0 {
        print!("{}", prepare::show_examples(&out, show));
    }
    eprintln!("prepare: {}", prepare::summary_line(&out.report));
    if let Some(line) = crate::data::review::review_summary(&out.report.review) {
        eprintln!("prepare: {line}");
        if out.report.review.eval.rejected > 0 {
            eprintln!(
                "prepare: warning: {} eval rows were rejected by reviewers but stay in eval (review filters train rows only); fix or remove them in the data",
                out.report.review.eval.rejected
            );
        }
    }
    eprintln!("prepare: wrote {}/prepared/{{train,eval}}.jsonl and prepare_report.md", run.root.display());
    Ok(())
}

/// `steptune augment`: new wordings of the train prompts into `<run>/augmented.jsonl`, which the
/// next `prepare` adds to the train split.
pub fn augment_stage(recipe: &LoadedRecipe) -> Result<()> {
    let run = RunDir::create(recipe.output_dir())?;
    run.write_provenance(recipe, "augment")?;
    let out = crate::data::augment::run(recipe, &run)?;
    let t = &out.report.total;
    eprintln!(
        "augment: {} train prompts, {} wordings asked, {} kept, {} rejected {}",
        t.prompts,
        t.asked,
        t.kept,
        t.rejected_total(),
        serde_json::to_string(&t.rejected).unwrap_or_default()
    );
    eprintln!("augment: wrote {}/augmented.jsonl and augment_report.md; `steptune prepare` adds the rows to the train split", run.root.display());
    Ok(())
}

pub fn train_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, opts: &train::TrainOptions) -> Result<train::TrainOutcome> {
    let world = dist::world();
    let run = RunDir::create(output_dir.unwrap_or_else(|| recipe.output_dir()))?;
    if world.is_main() {
        run.write_provenance(recipe, "train")?;
    }
    let out = train::run(recipe, &run, opts)?;
    if !world.is_main() {
        return Ok(out);
    }
    eprintln!(
        "train: {} steps in {:.1} s ({:.0} tokens/s); eval loss {} → {}; wrote {}",
        out.steps,
        out.seconds,
        out.tokens_per_second,
        out.initial_eval_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        out.final_eval_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
        out.output.display()
    );
    Ok(out)
}

pub fn eval_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>) -> Result<()> {
    let world = dist::world();
    let run = RunDir::create(output_dir.unwrap_or_else(|| recipe.output_dir()))?;
    if world.is_main() {
        run.write_provenance(recipe, "eval")?;
    }
    let report = crate::eval::stage::run(recipe, &run)?;
    if world.is_main() {
        eprintln!("eval: wrote {}, report.json and metrics.png", report.display());
    }
    Ok(())
}

/// The main job: every stage, in order.
pub fn main_job(recipe: &LoadedRecipe) -> Result<()> {
    prepare_stage(recipe, None, 0)?;
    let out = train_stage(recipe, None, &train::TrainOptions::default())?;
    // Asked to stop (on any rank) as training finished: the run is whole; the next attempt only
    // evaluates.
    let asked = train::stop::requested();
    if dist::world().sum_f64(&[asked.map_or(0.0, |_| 1.0)], "agreeing whether to stop before the eval stage")?[0] > 0.0 {
        return Err(train::stop::Stopped { step: out.steps, signal: asked, checkpoint: out.output }.into());
    }
    eval_stage(recipe, None)
}
