//! The command line. Every stage is its own subcommand reading the same recipe; a bare recipe
//! argument (or none: the embedded quickstart) runs the main job.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use steptune::dist;
use steptune::jobs::{self, eval_stage, load, load_joined, main_job, prepare_stage, train_stage};
use steptune::model::generate::TextGenerator;
use steptune::model::tokenizer::TokenizerBundle;
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
    /// Override a recipe value: --set training.learning_rate=1e-4 (repeatable; the value is YAML,
    /// checked exactly like the file).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum HumanEval {
    /// Write a blinded CSV sheet (prompt, reference, base and tuned outputs in random order) and its key.
    Export {
        recipe: Option<PathBuf>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value = "human_eval_sheet.csv")]
        sheet: PathBuf,
        #[arg(long, default_value = "human_eval_key.json")]
        key: PathBuf,
    },
    /// Read filled sheets (one per rater), unblind, report means, CIs and Krippendorff's alpha.
    Import {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        key: PathBuf,
        #[arg(required = true)]
        sheets: Vec<PathBuf>,
    },
}

/// A domain expert's review of the data before it is trained on.
#[derive(Subcommand)]
enum Review {
    /// Write a CSV sheet of rows (id, split, source, prompt, output, approved, comment) to review.
    Export {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// Which rows: the synthetic ones (`source: synthetic`, written by `steptune augment`) or all.
        #[arg(long, default_value = "synthetic", value_parser = ["synthetic", "all"])]
        only: String,
        #[arg(long, default_value = "review_sheet.csv")]
        out: PathBuf,
        /// The run folder whose review.jsonl fills in earlier decisions (default: the recipe's output_dir).
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Record the decisions of filled sheets in <run>/review.jsonl (a later decision wins).
    Import {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        #[arg(required = true)]
        sheets: Vec<PathBuf>,
        /// The run folder to record into (default: the recipe's output_dir).
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
}

/// `steptune ifeval`: generate and score with one or more models, or (`ifeval score`) score given
/// responses. The options belong to the bare command; a subcommand takes none of them.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct IfevalCmd {
    #[command(subcommand)]
    command: Option<IfevalSub>,
    #[command(flatten)]
    run: IfevalArgs,
}

#[derive(clap::Args)]
struct IfevalArgs {
    /// A Hugging Face model folder (required; repeat it for a candidates table, best first).
    #[arg(long)]
    model: Vec<PathBuf>,
    /// A PEFT LoRA adapter applied to the (single) model; its base must be that model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Prompts in the reference's format (default: the 541 embedded prompts).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Only the first N prompts, in the file's order.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// lm-eval's `ifeval` task allows 1280.
    #[arg(long, default_value_t = steptune::eval::ifeval::run::DEFAULT_MAX_NEW_TOKENS)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// auto: bf16 on a GPU, fp32 on the CPU.
    #[arg(long, default_value = "auto", value_parser = ["auto", "fp32", "bf16", "fp16"])]
    dtype: String,
    /// Where to write (one model: here; several: a sub-folder each, and candidates.md/.json here).
    #[arg(long, default_value = "ifeval")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum IfevalSub {
    /// Score responses (`{"prompt", "response"}` per line, the reference's format); no model needed.
    Score {
        /// Prompts in the reference's format (default: the 541 embedded prompts).
        #[arg(long)]
        input: Option<PathBuf>,
        #[arg(long)]
        responses: PathBuf,
        /// Print one JSON object: the four accuracies (0-1), per_type and rows.
        #[arg(long)]
        json: bool,
    },
}

/// The checks scripts/gpu-check.sh runs on a device (`--device cpu` runs them on the CPU).
#[derive(Subcommand)]
enum DeviceCheck {
    /// NF4 dequantization: device vs CPU bit for bit, CPU vs bitsandbytes, and its bandwidth.
    Nf4 {
        #[arg(long, default_value = "cuda")]
        device: String,
        #[arg(long, default_value = "tests/fixtures/nf4")]
        fixtures: PathBuf,
        /// The bandwidth weight, OUTxIN.
        #[arg(long, default_value = "12288x4096")]
        bench_shape: String,
        #[arg(long, default_value_t = 200)]
        iters: usize,
        /// The device's memory bandwidth in GB/s (H200: 4800).
        #[arg(long)]
        peak_gbps: Option<f64>,
    },
    /// Tiny Qwen3 and T5 logits: fp32 on the device vs the CPU and transformers, and bf16.
    Logits {
        #[arg(long, default_value = "cuda")]
        device: String,
        #[arg(long, default_value = "tests/fixtures/models")]
        fixtures: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The main job: every stage of the recipe in order.
    Run {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// Validate a recipe and print it with every default filled in.
    Check {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// A memory plan for one device: weights, trainable state, activations, the loss head, the
    /// eval KV cache, runtime and total; with --budget, the largest micro-batch and sequence that fit.
    Estimate {
        recipe: PathBuf,
        /// Tokens per row (default: data.max_length).
        #[arg(long)]
        seq: Option<i64>,
        /// Rows per micro-batch (default: training.per_device_train_batch_size).
        #[arg(long)]
        batch: Option<i64>,
        /// Memory of the device, e.g. 24GiB, 24GB or 24000MiB.
        #[arg(long)]
        budget: Option<String>,
        /// Print the plan as JSON (bytes per line and total_bytes).
        #[arg(long)]
        json: bool,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// Load, check, clean, split, template and tokenise the data into <run>/prepared/.
    Prepare {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// Print the first N train examples token by token with their label mask.
        #[arg(long, default_value_t = 0)]
        show: usize,
        /// Write into this folder instead of the recipe's output_dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// New wordings of every train prompt by the LLM of `data.augment` into <run>/augmented.jsonl,
    /// filtered and with provenance; the next `prepare` adds them to the train split.
    Augment {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set data.augment.per_prompt=3 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
    },
    /// Train on <run>/prepared/ (run `prepare` first); resumes from the newest checkpoint.
    Train {
        recipe: Option<PathBuf>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
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
    /// Write a model, merged with its LoRA adapter, as one GGUF file that llama.cpp, Ollama and
    /// LM Studio load (what llama.cpp's convert_hf_to_gguf.py writes), and an Ollama Modelfile.
    Export {
        /// A run folder: exports its adapter/ (merged into the base its adapter_config.json names)
        /// or its model/, with the run recipe's system prompt and QLoRA settings.
        #[arg(long, conflicts_with_all = ["model", "adapter"])]
        run: Option<PathBuf>,
        /// A Hugging Face model folder (default with --adapter: the adapter's base model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// A PEFT LoRA adapter merged into the model on the way (W + B·A·alpha/r, float32).
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long, default_value = "gguf")]
        format: String,
        /// f16, bf16, f32 or q8_0 (norms, biases and RoPE factors stay f32).
        #[arg(long, default_value = "f16")]
        outtype: String,
        #[arg(long)]
        out: PathBuf,
        /// Merge into the NF4-dequantized base (QLoRA adapters); read from the run's recipe when
        /// the adapter sits in a run folder.
        #[arg(long)]
        qlora: bool,
        /// The Modelfile's SYSTEM prompt (default: the run recipe's model.system_prompt).
        #[arg(long)]
        system: Option<String>,
        /// tokenizer.ggml.pre for tokenizers llama.cpp does not recognise (e.g. qwen2, llama-bpe).
        #[arg(long)]
        tokenizer_pre: Option<String>,
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
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
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
    /// IFEval (541 prompts with verifiable instructions): generate with each --model's chat template
    /// (greedy, thinking off), score strict and loose, write responses.jsonl, ifeval.json and
    /// ifeval.md; several models also get candidates.md. `ifeval score` scores given responses.
    Ifeval(IfevalCmd),
    /// Review sheets: export rows for a domain expert, import the approvals `prepare` trains on.
    #[command(subcommand)]
    Review(Review),
    /// Human evaluation sheets: export for raters, import their ratings.
    #[command(subcommand)]
    HumanEval(HumanEval),
    /// Benchmark: training throughput and memory on a prepared file, one JSON line
    /// (scripts/bench_train.sh, bench_qlora.sh, bench_t5.sh). Modes: padded (file order, padded
    /// to the file's longest row), ordered (file order, dynamic padding), realistic (length-grouped).
    #[command(hide = true)]
    BenchTrain {
        recipe: PathBuf,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
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
        /// The device's dense peak TFLOPS in the training precision (H200 bf16: 989), for MFU.
        #[arg(long)]
        peak_tflops: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Run one folder per point of a grid of recipe values, one after another (or one point per
    /// Slurm array task); finished points are skipped, unfinished ones resume.
    Sweep {
        /// Recipe YAML (default: the embedded quickstart); its output_dir is the sweep folder.
        recipe: Option<PathBuf>,
        /// A grid axis: --grid training.learning_rate=1e-4,2e-4 (repeatable; every combination runs).
        #[arg(long = "grid", value_name = "KEY.PATH=V1,V2,...", required = true)]
        grid: Vec<String>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// List the points and their state without running anything.
        #[arg(long, alias = "list")]
        dry_run: bool,
    },
    /// Compare runs (run folders, or sweep folders for all their points): compare.md,
    /// compare.json and compare.png (every run's eval-loss curve).
    Compare {
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where to write; default: the one folder given, else the current folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print an sbatch script for the main job of a recipe (or a sweep, as a job array).
    Slurm {
        recipe: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// GPUs per node, one task each (0: a CPU job with one task per node).
        #[arg(long, default_value_t = 1)]
        gpus_per_node: u32,
        #[arg(long, default_value_t = 8)]
        cpus_per_task: u32,
        /// The time limit (Slurm's format: 24:00:00, 2-00:00:00).
        #[arg(long, default_value = "24:00:00")]
        time: String,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        job_name: Option<String>,
        /// Memory per node (Slurm's --mem).
        #[arg(long)]
        mem: Option<String>,
        /// A sweep axis (as `steptune sweep --grid`): the script becomes an array job, one task per point.
        #[arg(long = "grid", alias = "sweep", value_name = "KEY.PATH=V1,V2,...")]
        grid: Vec<String>,
        /// Override a recipe value, e.g. --set training.learning_rate=1e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        set: Vec<String>,
        /// The steptune binary the job runs (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Print the versions steptune was built with and runs against.
    Version,
    /// Device checks for scripts/gpu-check.sh, one JSON line each; exits 1 when a check fails.
    #[command(hide = true, subcommand)]
    DeviceCheck(DeviceCheck),
}

/// Plans every point (checking each as a recipe), then runs the unfinished ones, or under a
/// Slurm array only the task's point.
fn sweep_cmd(recipe: Option<&std::path::Path>, set: &[String], grid: &[String], dry_run: bool) -> Result<()> {
    if dry_run {
        let sweep = jobs::sweep::Sweep::plan(recipe, set, grid)?;
        print!("{}", sweep.listing(&sweep.states()?));
        return Ok(());
    }
    // Joins the data-parallel job first (when launched as several ranks), as `run` does.
    let base = load_joined(recipe, set)?;
    let sweep = jobs::sweep::Sweep::plan(recipe, set, grid)?;
    let only = jobs::sweep::array_task(sweep.points.len())?;
    let ran = jobs::sweep::run(&sweep, only)?;
    if dist::world().is_main() {
        eprintln!(
            "sweep: ran {} of {} points; see {}/sweep.json, and compare them with: steptune compare {}",
            ran.len(),
            sweep.points.len(),
            base.output_dir().display(),
            base.output_dir().display()
        );
    }
    Ok(())
}

fn compare_cmd(runs: &[PathBuf], out: Option<PathBuf>) -> Result<()> {
    let summaries = jobs::compare::collect(runs)?;
    let out = out.unwrap_or_else(|| if runs.len() == 1 { runs[0].clone() } else { PathBuf::from(".") });
    let written = jobs::compare::write(&summaries, &out)?;
    let png = written.iter().find(|p| p.extension().is_some_and(|e| e == "png")).map(|p| p.display().to_string());
    print!("{}", jobs::compare::markdown(&summaries, png.as_deref()));
    eprintln!("compare: wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

fn review_cmd(r: Review) -> Result<()> {
    use steptune::data::review;
    match r {
        Review::Export { recipe, set, only, out, output_dir } => {
            let r = jobs::load(Some(&recipe), &set)?;
            let run_root = output_dir.unwrap_or_else(|| r.output_dir());
            let s = review::export(&r, &run_root, only.parse()?, &out)?;
            eprintln!("review: wrote {} rows to {} ({} already decided); fill `approved` with yes or no, then run `steptune review import`", s.rows, out.display(), s.already_decided);
        }
        Review::Import { recipe, set, sheets, output_dir } => {
            let r = jobs::load(Some(&recipe), &set)?;
            let run_root = output_dir.unwrap_or_else(|| r.output_dir());
            let s = review::import(&r, &run_root, &sheets)?;
            for w in s.conflicts.iter().chain(&s.unknown) {
                eprintln!("review: warning: {w}");
            }
            eprintln!(
                "review: read {} decisions, {} changed; {} now holds {} approved and {} rejected rows",
                s.decisions,
                s.changed,
                s.path.display(),
                s.approved,
                s.rejected
            );
        }
    }
    Ok(())
}

/// Prints the check's JSON line, then fails when the check did.
fn device_check(c: DeviceCheck) -> Result<()> {
    use train::devcheck;
    let (what, v) = match c {
        DeviceCheck::Nf4 { device, fixtures, bench_shape, iters, peak_gbps } => {
            let shape = bench_shape.split_once('x').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            let Some(bench_shape) = shape else { anyhow::bail!("--bench-shape must be OUTxIN, e.g. 12288x4096, not {bench_shape}") };
            let o = devcheck::Nf4Options { device: devcheck::device(&device)?, fixtures, bench_shape, iters, peak_gbps };
            ("nf4", devcheck::nf4_check(&o)?)
        }
        DeviceCheck::Logits { device, fixtures } => ("logits", devcheck::logits_check(&fixtures, devcheck::device(&device)?)?),
    };
    println!("{v}");
    if v["ok"] != serde_json::json!(true) {
        anyhow::bail!("device-check {what}: a check failed (see above)");
    }
    Ok(())
}

fn ifeval_cmd(c: IfevalCmd) -> Result<()> {
    use steptune::eval::ifeval::run;
    if let Some(IfevalSub::Score { input, responses, json }) = c.command {
        print!("{}", run::score_cli(input.as_deref(), &responses, json)?);
        return Ok(());
    }
    let a = c.run;
    let device = train::device_of(&a.device);
    if device.is_cuda() && !tch::Cuda::is_available() {
        anyhow::bail!("--device {}: no CUDA device is visible (or this steptune links a CPU-only libtorch); use --device cpu", a.device);
    }
    let kind = match a.dtype.as_str() {
        "fp32" => tch::Kind::Float,
        "bf16" => tch::Kind::BFloat16,
        "fp16" => tch::Kind::Half,
        _ if device.is_cuda() => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    };
    let o = run::CliOptions {
        models: a.model,
        adapter: a.adapter,
        input: a.input,
        limit: a.limit.map(|n| n as usize),
        gen: run::GenOptions { max_new_tokens: a.max_new_tokens, batch_size: a.batch_size },
        device,
        kind,
        out: a.out,
    };
    run::run_cli(&o).map(|_| ())
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
    let cfg = gen.config(a.max_new_tokens, a.do_sample, a.temperature, a.top_p, a.top_k);
    tch::manual_seed(a.seed);
    let out = gen.generate(&a.prompt, &cfg, 8)?;
    for g in out {
        if a.json {
            let steps = steptune::data::steps::parse_numbered_steps(&g.text);
            println!("{}", serde_json::json!({"prompt": g.prompt, "text": g.text, "token_ids": g.token_ids, "steps": steps}));
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

struct ExportArgs {
    run: Option<PathBuf>,
    model: Option<PathBuf>,
    adapter: Option<PathBuf>,
    format: String,
    outtype: String,
    out: PathBuf,
    qlora: bool,
    system: Option<String>,
    tokenizer_pre: Option<String>,
}

fn export_cmd(a: ExportArgs) -> Result<()> {
    use steptune::export;
    if a.format != "gguf" {
        anyhow::bail!("--format {}: steptune exports gguf (HF folders come from `steptune merge`)", a.format);
    }
    let outtype = export::OutType::parse(&a.outtype)?;
    let (mut model, mut adapter) = (a.model, a.adapter);
    if let Some(run) = &a.run {
        if run.join("adapter/adapter_config.json").is_file() {
            adapter = Some(run.join("adapter"));
        } else if run.join("model/config.json").is_file() {
            model = Some(run.join("model"));
        } else {
            anyhow::bail!("{} holds neither adapter/ nor model/: has the run's train stage finished?", run.display());
        }
    }
    let ctx = export::run_context(adapter.as_deref(), a.run.as_deref())?;
    let model = match model.or(ctx.model) {
        Some(m) => m,
        None => anyhow::bail!("give --model: the adapter's base_model_name_or_path is not a local model folder"),
    };
    let qlora = if a.qlora { Some(ctx.qlora.unwrap_or((64, true))) } else { ctx.qlora.filter(|_| adapter.is_some()) };
    if qlora.is_some() && adapter.is_some() {
        eprintln!("export: merging into the NF4-dequantized base (QLoRA), as the adapter was trained");
    }
    let opts = export::ExportOptions { model, adapter, outtype, out: a.out, qlora, tokenizer_pre: a.tokenizer_pre, system_prompt: a.system.or(ctx.system_prompt) };
    let r = export::export_gguf(&opts)?;
    eprintln!(
        "export: wrote {} ({} tensors, {} parameters, {:.1} MiB{}) and {}",
        opts.out.display(),
        r.tensors,
        r.params,
        r.bytes as f64 / (1 << 20) as f64,
        if r.merged > 0 { format!(", {} LoRA weights merged", r.merged) } else { String::new() },
        r.modelfile.display()
    );
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

/// `steptune estimate`: the plan, and with a budget the largest micro-batch and sequence that fit.
fn estimate_cmd(r: &steptune::recipe::LoadedRecipe, seq: Option<i64>, batch: Option<i64>, budget: Option<&str>, json: bool) -> anyhow::Result<()> {
    use train::memory;
    let budget = budget.map(memory::parse_budget).transpose()?;
    let opts = memory::EstimateOptions { seq, batch };
    let plan = memory::estimate(r, &opts)?;
    let fit = budget.map(|b| memory::fit(r, &opts, b)).transpose()?;
    if json {
        let mut v = plan.to_json();
        if let (Some(b), Some((mb, ms))) = (budget, fit) {
            v["budget_bytes"] = serde_json::json!(b);
            v["fits"] = serde_json::json!(plan.total_bytes <= b);
            v["max_batch"] = serde_json::json!(mb);
            v["max_seq"] = serde_json::json!(ms);
        }
        println!("{v}");
        return Ok(());
    }
    print!("{}", plan.render());
    if let (Some(b), Some((mb, ms))) = (budget, fit) {
        let verdict = if plan.total_bytes <= b { "fits" } else { "does NOT fit" };
        println!("budget {}: this plan {verdict}", memory::human(b));
        match mb {
            Some(n) => println!("  largest micro-batch at sequence {}: {n}", plan.seq),
            None => println!("  no micro-batch fits at sequence {}", plan.seq),
        }
        match ms {
            Some(n) => println!("  longest sequence at micro-batch {}: {n}", plan.batch),
            None => println!("  no sequence fits at micro-batch {}", plan.batch),
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    // The commands that train stop safely on SIGUSR1/SIGTERM/SIGINT (train/stop.rs).
    if matches!(cli.command, None | Some(Command::Run { .. }) | Some(Command::Train { .. }) | Some(Command::Sweep { .. })) {
        if let Err(e) = train::stop::install() {
            eprintln!("steptune: warning: cannot take over SIGUSR1/SIGTERM/SIGINT ({e}); a signal ends the run without a checkpoint");
        }
    }
    let result = match (cli.command, cli.recipe) {
        (Some(Command::Check { recipe, set }), _) => jobs::load(Some(&recipe), &set).map(|r| {
            print!("{}", r.recipe.to_yaml());
            // A YAML comment, so the output stays a valid recipe.
            match train::memory::estimate(&r, &Default::default()) {
                Ok(p) => println!("# memory estimate: {} ({} bytes) on {} for {}; `steptune estimate` shows the lines", train::memory::human(p.total_bytes), p.total_bytes, p.device, p.model),
                Err(e) => println!("# memory estimate: unavailable ({e:#})"),
            }
        }),
        (Some(Command::Estimate { recipe, seq, batch, budget, json, set }), _) => jobs::load(Some(&recipe), &set).and_then(|r| estimate_cmd(&r, seq, batch, budget.as_deref(), json)),
        (Some(Command::Prepare { recipe, set, show, output_dir }), _) => load_joined(recipe.as_deref(), &set).and_then(|r| prepare_stage(&r, output_dir, show)),
        (Some(Command::Augment { recipe, set }), _) => jobs::load(Some(&recipe), &set).and_then(|r| jobs::augment_stage(&r)),
        (Some(Command::Train { recipe, set, restart, stop_after, output_dir }), _) => {
            load_joined(recipe.as_deref(), &set).and_then(|r| train_stage(&r, output_dir, &train::TrainOptions { restart, stop_after }).map(|_| ()))
        }
        (Some(Command::Generate { model, adapter, prompt, system, max_new_tokens, do_sample, temperature, top_p, top_k, seed, device, json }), _) => {
            generate_cmd(GenerateArgs { model, adapter, prompt, system, max_new_tokens, do_sample, temperature, top_p, top_k, seed, device, json })
        }
        (Some(Command::Merge { model, adapter, out }), _) => merge_cmd(&model, &adapter, &out),
        (Some(Command::Export { run, model, adapter, format, outtype, out, qlora, system, tokenizer_pre }), _) => {
            export_cmd(ExportArgs { run, model, adapter, format, outtype, out, qlora, system, tokenizer_pre })
        }
        (Some(Command::Quantize { model, out, no_double_quant, compute_dtype }), _) => quantize_cmd(&model, &out, no_double_quant, compute_dtype),
        (Some(Command::Eval { recipe, set, output_dir }), _) => load_joined(recipe.as_deref(), &set).and_then(|r| eval_stage(&r, output_dir)),
        (Some(Command::Score { pred, reference, json, no_stem }), _) => score_cmd(&pred, &reference, json, no_stem),
        (Some(Command::HumanEval(HumanEval::Export { recipe, set, sheet, key })), _) => load(recipe.as_deref(), &set).and_then(|r| {
            let run = RunDir::create(r.output_dir())?;
            steptune::eval::stage::human_export(&r, &run, &sheet, &key)?;
            eprintln!("human-eval: wrote {} for raters and {} (keep it from them)", sheet.display(), key.display());
            Ok(())
        }),
        (Some(Command::HumanEval(HumanEval::Import { recipe, set, key, sheets })), _) => jobs::load(Some(&recipe), &set).and_then(|r| {
            let run = RunDir::create(r.output_dir())?;
            let p = steptune::eval::stage::human_import(&run, &sheets, &key)?;
            eprintln!("human-eval: wrote {} and added it to report.md", p.display());
            Ok(())
        }),
        (Some(Command::Review(c)), _) => review_cmd(c),
        (Some(Command::Ifeval(c)), _) => ifeval_cmd(c),
        (Some(Command::BenchTrain { recipe, set, prepared, mode, steps, warmup_steps, method, gradient_checkpointing, peak_tflops, json: _ }), _) => jobs::load(Some(&recipe), &set)
            .and_then(|r| {
                let method = match method.as_deref() {
                    None => None,
                    Some("full") => Some(steptune::recipe::Method::Full),
                    Some("lora") => Some(steptune::recipe::Method::Lora),
                    Some("qlora") => Some(steptune::recipe::Method::Qlora),
                    Some(other) => anyhow::bail!("--method must be full, lora or qlora, not {other}"),
                };
                let opts = train::bench::BenchOptions { mode, steps, warmup: warmup_steps, method, gradient_checkpointing, peak_tflops };
                train::bench::run(&r, &prepared, &opts)
            })
            .map(|v| println!("{v}")),
        (Some(Command::Sweep { recipe, grid, set, dry_run }), _) => sweep_cmd(recipe.as_deref(), &set, &grid, dry_run),
        (Some(Command::Compare { runs, out }), _) => compare_cmd(&runs, out),
        (Some(Command::Slurm { recipe, nodes, gpus_per_node, cpus_per_task, time, partition, account, job_name, mem, grid, set, binary }), _) => {
            jobs::slurm::defaults_binary_and_workdir().and_then(|(bin, workdir)| {
                let o = jobs::slurm::SlurmOptions { nodes, gpus_per_node, cpus_per_task, time, partition, account, job_name, mem, binary: binary.unwrap_or(bin), workdir };
                jobs::slurm::script(recipe.as_deref(), &set, &grid, &o).map(|s| print!("{s}"))
            })
        }
        (Some(Command::DeviceCheck(c)), _) => device_check(c),
        (Some(Command::Version), _) => {
            println!("{}", serde_json::to_string_pretty(&steptune::run::versions()).unwrap_or_default());
            Ok(())
        }
        (Some(Command::Run { recipe, set }), _) => load_joined(recipe.as_deref(), &set).and_then(|r| main_job(&r)),
        (None, recipe) => load_joined(recipe.as_deref(), &cli.set).and_then(|r| main_job(&r)),
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
