//! The command line. Every stage is its own subcommand reading the same recipe; a bare recipe
//! argument (or none: the embedded quickstart) runs the main job.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use steptune::data::prepare;
use steptune::dist;
use steptune::model::generate::{TextGenerator, GenerateConfig};
use steptune::model::tokenizer::TokenizerBundle;
use steptune::recipe::LoadedRecipe;
use steptune::run::RunDir;
use steptune::train;

#[derive(Parser)]
#[command(name = "steptune", version, about = "Fine-tune open LLMs to turn a user's intent into a numbered step-by-step procedure.")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Recipe for the main job; without one, the embedded quickstart recipe runs.
    recipe: Option<PathBuf>,
}

#[derive(Subcommand)]
enum HumanEval {
    /// Write a blinded CSV sheet (prompt, reference, base and tuned outputs in random order) and its key.
    Export {
        recipe: Option<PathBuf>,
        #[arg(long, default_value = "human_eval_sheet.csv")]
        sheet: PathBuf,
        #[arg(long, default_value = "human_eval_key.json")]
        key: PathBuf,
    },
    /// Read filled sheets (one per rater), unblind, report means, CIs and Krippendorff's alpha.
    Import {
        recipe: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(required = true)]
        sheets: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The main job: every stage of the recipe in order.
    Run {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
    },
    /// Validate a recipe and print it with every default filled in.
    Check { recipe: PathBuf },
    /// Load, check, clean, split, template and tokenise the data into <run>/prepared/.
    Prepare {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
        /// Print the first N train examples token by token with their label mask.
        #[arg(long, default_value_t = 0)]
        show: usize,
        /// Write into this folder instead of the recipe's output_dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Train on <run>/prepared/ (run `prepare` first); resumes from the newest checkpoint.
    Train {
        recipe: Option<PathBuf>,
        /// Discard existing checkpoints and train from the start.
        #[arg(long)]
        restart: bool,
        /// Stop right after the checkpoint at this step, as if killed (for resume tests).
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Generate a procedure for a prompt with a model folder (and optionally a LoRA adapter).
    Generate {
        /// A Hugging Face model folder (config.json, model.safetensors, tokenizer files).
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder to apply on top.
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long, required = true)]
        prompt: Vec<String>,
        #[arg(long)]
        system: Option<String>,
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// Sample instead of greedy decoding.
        #[arg(long)]
        do_sample: bool,
        #[arg(long, default_value_t = 0.7)]
        temperature: f64,
        #[arg(long, default_value_t = 0.9)]
        top_p: f64,
        #[arg(long, default_value_t = 50)]
        top_k: usize,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON: the text, the generated token ids and the parsed steps.
        #[arg(long)]
        json: bool,
    },
    /// Merge a LoRA adapter into its base model and write an HF folder.
    Merge {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Quantize a decoder's linear projections to NF4 (bitsandbytes / transformers 4-bit layout).
    Quantize {
        /// A Hugging Face model folder.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Keep the per-block scales in float32 instead of quantizing them again.
        #[arg(long)]
        no_double_quant: bool,
        /// The compute dtype recorded for loaders: bf16, f16 or f32.
        #[arg(long, default_value = "bf16")]
        compute_dtype: String,
    },
    /// Generate with the base and the tuned model for every eval prompt, score both against the
    /// reference, and write report.md, report.json and metrics.png.
    Eval {
        recipe: Option<PathBuf>,
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Score predictions against references, no model needed (JSONL with `id` and `text`).
    Score {
        #[arg(long)]
        pred: PathBuf,
        #[arg(long = "ref")]
        reference: PathBuf,
        /// Print per-row and corpus figures as JSON.
        #[arg(long)]
        json: bool,
        /// ROUGE without Porter stemming.
        #[arg(long)]
        no_stem: bool,
    },
    /// Human evaluation sheets: export for raters, import their ratings.
    #[command(subcommand)]
    HumanEval(HumanEval),
    /// Benchmark: training throughput and memory on a prepared file, one JSON line
    /// (scripts/bench_train.sh, bench_qlora.sh, bench_t5.sh). Modes: padded (file order, padded
    /// to the file's longest row), ordered (file order, dynamic padding), realistic (length-grouped).
    #[command(hide = true)]
    BenchTrain {
        recipe: PathBuf,
        #[arg(long)]
        prepared: PathBuf,
        #[arg(long, default_value = "realistic")]
        mode: String,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value_t = 3)]
        warmup_steps: usize,
        /// Override finetune.method: full, lora or qlora.
        #[arg(long)]
        method: Option<String>,
        /// Override training.gradient_checkpointing: true or false.
        #[arg(long)]
        gradient_checkpointing: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Print the versions steptune was built with and runs against.
    Version,
}

fn load(recipe: Option<PathBuf>) -> Result<LoadedRecipe> {
    match recipe {
        Some(p) => LoadedRecipe::load(&p),
        None => {
            if dist::world().is_main() {
                eprintln!("steptune: no recipe given, running the embedded quickstart recipe");
            }
            Ok(LoadedRecipe::quickstart())
        }
    }
}

/// The recipe of a stage that may run as one of several ranks (torchrun, srun): joins the job
/// first, then checks every rank loaded the recipe, so a bad one is reported once, by rank 0.
fn load_joined(recipe: Option<PathBuf>) -> Result<LoadedRecipe> {
    let quickstart = recipe.is_none();
    let loaded = match recipe {
        Some(p) => LoadedRecipe::load(&p),
        None => Ok(LoadedRecipe::quickstart()),
    };
    let world = dist::init(loaded.as_ref().ok().map(|r| &r.recipe.training))?;
    if quickstart && world.is_main() {
        eprintln!("steptune: no recipe given, running the embedded quickstart recipe");
    }
    world.agree("loading the recipe", loaded)
}

/// Under several ranks rank 0 prepares and the others wait for it.
fn prepare_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, show: usize) -> Result<()> {
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
    eprintln!("prepare: wrote {}/prepared/{{train,eval}}.jsonl and prepare_report.md", run.root.display());
    Ok(())
}

fn train_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, opts: &train::TrainOptions) -> Result<train::TrainOutcome> {
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

fn eval_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>) -> Result<()> {
    let world = dist::world();
    let run = RunDir::create(output_dir.unwrap_or_else(|| recipe.output_dir()))?;
    if world.is_main() {
        run.write_provenance(recipe, "eval")?;
    }
    let report = steptune::eval::stage::run(recipe, &run)?;
    if world.is_main() {
        eprintln!("eval: wrote {}, report.json and metrics.png", report.display());
    }
    Ok(())
}

/// The main job: every stage, in order.
fn main_job(recipe: &LoadedRecipe) -> Result<()> {
    prepare_stage(recipe, None, 0)?;
    let out = train_stage(recipe, None, &train::TrainOptions::default())?;
    if let Some(sig) = train::stop::requested() {
        // Asked to stop as training finished: the run is whole; the next attempt only evaluates.
        let checkpoint = out.output.clone();
        return Err(train::stop::Stopped { step: out.steps, signal: Some(sig), checkpoint }.into());
    }
    eval_stage(recipe, None)
}

fn score_cmd(pred: &std::path::Path, reference: &std::path::Path, json: bool, no_stem: bool) -> Result<()> {
    let pairs = steptune::eval::score::read_pairs(pred, reference)?;
    let wn = steptune::eval::wordnet::WordNet::shared_default()?;
    let scored = steptune::eval::score::score_pairs(&pairs, wn, !no_stem);
    if json {
        println!("{}", serde_json::to_string(&scored)?);
    } else {
        print!("{}", steptune::eval::score::to_markdown(&scored));
    }
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let device = train::device_of(&a.device);
    let mut model = steptune::model::load_model(&a.model, None, tch::Kind::Float, device)?;
    if let Some(ad) = &a.adapter {
        steptune::adapt::peft::load_adapter(model.as_mut(), ad)?;
    }
    let tok = TokenizerBundle::from_dir(&a.model)?;
    let gen = TextGenerator::new(model.as_ref(), &tok, a.system.clone())?;
    let cfg = GenerateConfig {
        max_new_tokens: a.max_new_tokens,
        do_sample: a.do_sample,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        eos_ids: gen.stop_ids(),
        pad_id: gen.pad_id(),
    };
    tch::manual_seed(a.seed);
    let out = gen.generate(&a.prompt, &cfg, 8)?;
    for g in out {
        if a.json {
            println!("{}", serde_json::to_string(&g)?);
        } else {
            println!("{}\n", g.text);
        }
    }
    Ok(())
}

struct GenerateArgs {
    model: PathBuf,
    adapter: Option<PathBuf>,
    prompt: Vec<String>,
    system: Option<String>,
    max_new_tokens: usize,
    do_sample: bool,
    temperature: f64,
    top_p: f64,
    top_k: usize,
    seed: i64,
    device: String,
    json: bool,
}

fn merge_cmd(model_dir: &std::path::Path, adapter: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let mut model = steptune::model::load_model(model_dir, None, tch::Kind::Float, tch::Device::Cpu)?;
    steptune::adapt::peft::load_adapter(model.as_mut(), adapter)?;
    steptune::adapt::peft::merge(model.as_mut());
    let tok = TokenizerBundle::from_dir(model_dir).ok();
    model.save(out, tok.as_ref())?;
    eprintln!("merge: wrote {}", out.display());
    Ok(())
}

fn quantize_cmd(model: &std::path::Path, out: &std::path::Path, no_double_quant: bool, compute_dtype: String) -> Result<()> {
    let opts = steptune::adapt::quantize::QuantizeOptions { double_quant: !no_double_quant, compute_dtype };
    let r = steptune::adapt::quantize::quantize_model_dir(model, out, &opts)?;
    eprintln!(
        "quantize: {} weights to NF4 ({:.4} bytes/param), {} tensors kept; wrote {}",
        r.quantized,
        r.quantized_bytes as f64 / r.quantized_params.max(1) as f64,
        r.kept,
        out.display()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // The commands that train stop safely on SIGUSR1/SIGTERM/SIGINT (train/stop.rs).
    if matches!(cli.command, None | Some(Command::Run { .. }) | Some(Command::Train { .. })) {
        if let Err(e) = train::stop::install() {
            eprintln!("steptune: warning: cannot take over SIGUSR1/SIGTERM/SIGINT ({e}); a signal ends the run without a checkpoint");
        }
    }
    let result = match (cli.command, cli.recipe) {
        (Some(Command::Check { recipe }), _) => LoadedRecipe::load(&recipe).map(|r| print!("{}", r.recipe.to_yaml())),
        (Some(Command::Prepare { recipe, show, output_dir }), _) => load_joined(recipe).and_then(|r| prepare_stage(&r, output_dir, show)),
        (Some(Command::Train { recipe, restart, stop_after, output_dir }), _) => {
            load_joined(recipe).and_then(|r| train_stage(&r, output_dir, &train::TrainOptions { restart, stop_after }).map(|_| ()))
        }
        (Some(Command::Generate { model, adapter, prompt, system, max_new_tokens, do_sample, temperature, top_p, top_k, seed, device, json }), _) => {
            generate_cmd(GenerateArgs { model, adapter, prompt, system, max_new_tokens, do_sample, temperature, top_p, top_k, seed, device, json })
        }
        (Some(Command::Merge { model, adapter, out }), _) => merge_cmd(&model, &adapter, &out),
        (Some(Command::Quantize { model, out, no_double_quant, compute_dtype }), _) => quantize_cmd(&model, &out, no_double_quant, compute_dtype),
        (Some(Command::Eval { recipe, output_dir }), _) => load_joined(recipe).and_then(|r| eval_stage(&r, output_dir)),
        (Some(Command::Score { pred, reference, json, no_stem }), _) => score_cmd(&pred, &reference, json, no_stem),
        (Some(Command::HumanEval(HumanEval::Export { recipe, sheet, key })), _) => load(recipe).and_then(|r| {
            let run = RunDir::create(r.output_dir())?;
            steptune::eval::stage::human_export(&r, &run, &sheet, &key)?;
            eprintln!("human-eval: wrote {} for raters and {} (keep it from them)", sheet.display(), key.display());
            Ok(())
        }),
        (Some(Command::HumanEval(HumanEval::Import { recipe, key, sheets })), _) => LoadedRecipe::load(&recipe).and_then(|r| {
            let run = RunDir::create(r.output_dir())?;
            let p = steptune::eval::stage::human_import(&run, &sheets, &key)?;
            eprintln!("human-eval: wrote {} and added it to report.md", p.display());
            Ok(())
        }),
        (Some(Command::BenchTrain { recipe, prepared, mode, steps, warmup_steps, method, gradient_checkpointing, json: _ }), _) => LoadedRecipe::load(&recipe)
            .and_then(|r| {
                let method = match method.as_deref() {
                    None => None,
                    Some("full") => Some(steptune::recipe::Method::Full),
                    Some("lora") => Some(steptune::recipe::Method::Lora),
                    Some("qlora") => Some(steptune::recipe::Method::Qlora),
                    Some(other) => anyhow::bail!("--method must be full, lora or qlora, not {other}"),
                };
                let opts = train::bench::BenchOptions { mode, steps, warmup: warmup_steps, method, gradient_checkpointing };
                train::bench::run(&r, &prepared, &opts)
            })
            .map(|v| println!("{v}")),
        (Some(Command::Version), _) => {
            println!("{}", serde_json::to_string_pretty(&steptune::run::versions()).unwrap_or_default());
            Ok(())
        }
        (Some(Command::Run { recipe }), _) | (None, recipe) => load_joined(recipe).and_then(|r| main_job(&r)),
    };
    let world = dist::world();
    if let Some(stopped) = result.as_ref().err().and_then(|e| e.downcast_ref::<train::stop::Stopped>()) {
        if world.is_main() {
            eprintln!("steptune: {stopped}");
        }
        dist::shutdown(None);
        std::process::exit(train::stop::EXIT_CODE);
    }
    if let Err(e) = result {
        // An error rank 0 reported for every rank is not printed again by each.
        if !dist::is_reported(&e) {
            if world.size > 1 {
                eprintln!("steptune: error (rank {} of {}): {e:#}", world.rank, world.size);
            } else {
                eprintln!("steptune: error: {e:#}");
            }
        }
        dist::shutdown(Some(&e));
        std::process::exit(1);
    }
    dist::shutdown(None);
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand and argument.
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
