//! The short report a run ends with: eval loss before and after training, the loss plot, and
//! generations for held-out paraphrases beside their reference procedures.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::model::generate::{ChatGenerator, GenerateConfig, Generated};
use crate::model::qwen3::Qwen3;
use crate::model::tokenizer::TokenizerBundle;
use crate::recipe::{LoadedRecipe, Method};
use crate::run::{write_atomic, RunDir};
use crate::train::batches::{read_prepared, TrainExample};
use crate::train::{device_of, kind_of, TrainOutcome};

/// The tuned model: the trained folder (full fine-tuning) or the base with the adapter.
pub fn load_tuned(recipe: &LoadedRecipe, out: &TrainOutcome) -> Result<Qwen3> {
    let t = &recipe.recipe.training;
    let (kind, device) = (kind_of(t.precision), device_of(&t.device));
    match recipe.recipe.finetune.method {
        Method::Full => crate::model::load_decoder(&out.output, kind, device),
        _ => {
            let mut m = crate::model::load_decoder(&out.base, kind, device)?;
            crate::adapt::peft::load_adapter(&mut m, &out.output)?;
            Ok(m)
        }
    }
}

/// One eval example per group, up to `n`, in a stable order.
pub fn sample_eval(eval: &[TrainExample], n: usize) -> Vec<&TrainExample> {
    let mut seen = std::collections::BTreeSet::new();
    eval.iter().filter(|e| seen.insert(e.group.clone())).take(n).collect()
}

pub fn generation_config(recipe: &LoadedRecipe, gen: &ChatGenerator) -> GenerateConfig {
    let e = &recipe.recipe.eval;
    GenerateConfig {
        max_new_tokens: e.max_new_tokens,
        do_sample: e.do_sample,
        temperature: e.temperature,
        top_p: e.top_p,
        top_k: e.top_k,
        eos_ids: gen.stop_ids(),
        pad_id: gen.pad_id(),
    }
}

pub fn write_report(recipe: &LoadedRecipe, run: &RunDir, out: &TrainOutcome) -> Result<PathBuf> {
    let tok = TokenizerBundle::from_dir(&run.path("tokenizer"))?;
    let model = load_tuned(recipe, out)?;
    let eval = read_prepared(&run.path("prepared/eval.jsonl"))?;
    let picked = sample_eval(&eval, recipe.recipe.eval.report_examples.max(5));
    let gen = ChatGenerator::new(&model, &tok, recipe.recipe.model.system_prompt.clone())?;
    let cfg = generation_config(recipe, &gen);
    let prompts: Vec<String> = picked.iter().map(|e| e.prompt.clone()).collect();
    tch::manual_seed(recipe.recipe.seed as i64);
    let generated: Vec<Generated> = gen.generate(&prompts, &cfg, recipe.recipe.eval.batch_size)?;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", recipe.recipe.name);
    let loss = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "Eval loss before training **{}**, after **{}** (best {}), over {} optimizer steps in {:.1} s ({:.0} tokens/s){}.\n",
        loss(out.initial_eval_loss),
        loss(out.final_eval_loss),
        loss(out.best_eval_loss),
        out.steps,
        out.seconds,
        out.tokens_per_second,
        if out.stopped_early { ", stopped early" } else { "" }
    );
    let _ = writeln!(s, "![loss](loss.png)\n\n## Held-out paraphrases\n");
    for (e, g) in picked.iter().zip(&generated) {
        let _ = writeln!(s, "**Prompt** ({}): {}\n", e.group, e.prompt);
        let _ = writeln!(s, "| generated | reference |\n|---|---|");
        let cell = |t: &str| t.replace('|', "\\|").replace('\n', "<br>");
        let _ = writeln!(s, "| {} | {} |\n", cell(&g.text), cell(&e.output));
    }
    let path = run.path("report.md");
    write_atomic(&path, s.as_bytes())?;
    write_atomic(&run.path("samples.jsonl"), generated.iter().map(|g| serde_json::to_string(g).unwrap_or_default() + "\n").collect::<String>().as_bytes())?;
    Ok(path)
}
