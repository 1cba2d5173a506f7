//! The YAML recipe: every key, its default and its check.
//!
//! Recipes are data. Names follow the ones most frameworks use (transformers' TrainingArguments,
//! peft's LoraConfig, bitsandbytes' BitsAndBytesConfig), so a researcher can carry values over
//! from a paper's hyperparameter table unchanged. Parsing is strict: an unknown key is an error
//! that names it and the nearest valid key; an out-of-range value names the key and the range.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;


/// The quickstart recipe, embedded so `steptune` with no arguments runs without any file.
pub const QUICKSTART_YAML: &str = include_str!("../recipes/quickstart.yaml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Names the run; the default output folder is `runs/<name>`.
    pub name: String,
    /// Seeds every random choice: split, oversampling, initialisation, dropout, data order.
    pub seed: u64,
    /// The run folder (relative to the current directory). Default: `runs/<name>`.
    pub output_dir: Option<PathBuf>,
    pub model: ModelSection,
    pub finetune: FinetuneSection,
    pub training: TrainingSection,
    pub data: DataSection,
    pub eval: EvalSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A Hub id (`Qwen/Qwen3-8B`), a local HF folder, or `random` (then `config` is required).
    pub source: String,
    /// Hub revision (branch, tag or commit) when `source` is a Hub id.
    pub revision: String,
    /// Architecture: `auto` reads `model_type` from config.json.
    pub architecture: Architecture,
    /// For `source: random`: a config.json path, or an inline mapping of config keys.
    pub config: Option<Value>,
    /// Folder with tokenizer.json and tokenizer_config.json. Default: the model folder.
    pub tokenizer: Option<PathBuf>,
    /// Train a byte-level BPE tokenizer on the data instead (tiny models, no downloads).
    pub train_tokenizer: Option<TrainTokenizer>,
    /// Replaces the tokenizer's chat template (a Jinja string).
    pub chat_template: Option<String>,
    /// Qwen3's thinking mode. Procedures are trained with thinking off.
    pub enable_thinking: bool,
    /// A system message put before every user turn (chat models only).
    pub system_prompt: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainTokenizer {
    pub vocab_size: usize,
    pub min_frequency: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    Auto,
    Qwen3,
    Qwen2,
    Llama,
    Gemma3,
    T5,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Full,
    Lora,
    Qlora,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneSection {
    pub method: Method,
    pub lora_r: i64,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub lora_target_modules: Vec<String>,
    /// 4-bit base weights (QLoRA), with bitsandbytes' names.
    pub quantization: QuantSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuantSection {
    pub bnb_4bit_quant_type: QuantType,
    pub bnb_4bit_use_double_quant: bool,
    pub bnb_4bit_compute_dtype: Precision,
    /// Quantization block size (bitsandbytes uses 64).
    pub blocksize: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QuantType {
    Nf4,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    Bf16,
    Fp16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    Linear,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    No,
    Steps,
    Epoch,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub learning_rate: f64,
    pub num_train_epochs: f64,
    /// Stops after this many optimizer steps, overriding `num_train_epochs`.
    pub max_steps: Option<u64>,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    /// Fraction of the optimizer steps spent warming up. Exclusive with `warmup_steps`; with
    /// neither, no warmup.
    pub warmup_ratio: Option<f64>,
    pub warmup_steps: Option<u64>,
    pub lr_scheduler_type: Scheduler,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub max_grad_norm: f64,
    pub precision: Precision,
    pub gradient_checkpointing: bool,
    /// Labelled tokens per chunk of the language-model head and its cross-entropy (training and
    /// eval loss): the [tokens, vocab] logits exist one chunk at a time. 0: all at once.
    pub loss_chunk_tokens: usize,
    /// Batches hold examples of similar length so padding waste is small.
    pub group_by_length: bool,
    pub logging_steps: u64,
    pub eval_strategy: Cadence,
    pub eval_steps: u64,
    pub save_strategy: Cadence,
    pub save_steps: u64,
    /// Stop when eval loss has not improved for this many evaluations (0: never).
    pub early_stopping_patience: u64,
    /// An improvement must exceed this to reset the patience counter.
    pub early_stopping_threshold: f64,
    /// `auto` (CUDA if present), `cpu`, `cuda` or `cuda:N`. Under torchrun or srun, `auto` and
    /// `cuda` mean this rank's GPU (`cuda:LOCAL_RANK`).
    pub device: String,
    /// The collective backend of a multi-process run: `auto` (NCCL on GPUs, Gloo on CPUs),
    /// `gloo` or `nccl`.
    pub ddp_backend: DdpBackend,
    /// Seconds a rank waits for the others (joining, or in any collective) before the job stops
    /// with an error naming the rank that did not answer.
    pub ddp_timeout: f64,
    /// Loggers fed beside metrics.jsonl: `tensorboard` writes event files into `<run>/tensorboard/`.
    pub report_to: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DdpBackend {
    Auto,
    Gloo,
    Nccl,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    #[default]
    Auto,
    Json,
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OverLength {
    Truncate,
    Drop,
    Error,
    /// Several windows of at most `max_length` tokens, each with the whole prompt and a span of
    /// the answer; every answer token is learned in exactly one window.
    SlidingWindow,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BadRows {
    Error,
    Skip,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoSteps {
    Keep,
    Drop,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The `group` column when one is mapped or found, else the normalised output.
    Auto,
    Column,
    Output,
}

/// Whether the prose around a list survives normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStyle {
    StepsOnly,
    KeepProse,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// JSON arrays, JSONL or CSV files.
    pub files: Vec<PathBuf>,
    pub format: DataFormat,
    pub columns: Columns,
    /// What to do with a row that fails validation: stop with every error listed, or skip it and
    /// report it.
    pub on_bad_row: BadRows,
    /// Keep only the first N rows after loading (quick experiments).
    pub limit: Option<usize>,
    /// Renumber outputs as `1. ...\n2. ...` from lists, bullets or existing numbering.
    pub normalize_steps: bool,
    /// `steps_only` drops the prose around the list; `keep_prose` keeps it.
    pub step_style: StepStyle,
    /// Outputs in which no list of 2+ steps was found.
    pub on_no_steps: NoSteps,
    pub pii: PiiSection,
    pub dedup: DedupSection,
    pub group_by: GroupBy,
    /// Oversample every train group with fewer rows up to this many (0: off).
    pub oversample_min_rows: usize,
    pub split: SplitSection,
    /// Also learn the prompt's tokens (axolotl's train_on_inputs). Off: the loss covers only the
    /// answer and its end-of-turn token. Useful for models trained from scratch.
    pub train_on_prompt: bool,
    /// Tokens per example, prompt and answer together.
    pub max_length: usize,
    pub over_length: OverLength,
    /// `sliding_window` only: answer tokens from one window's first answer token to the next
    /// window's. Below the room a window has for the answer, windows overlap by (room - stride)
    /// tokens of context; at or above it they do not overlap. Unset: half the room (rounded up).
    pub window_stride: Option<usize>,
    /// Several sources mixed into one data set (against forgetting: the task's data beside
    /// general data). Exclusive with `files`; each source has its own files and columns.
    pub mix: Vec<MixSource>,
    /// Which train rows need a reviewer's approval (`steptune review`) before they are trained on.
    pub require_review: RequireReview,
    /// `steptune augment`: new wordings of every train prompt, written by an LLM.
    pub augment: AugmentSection,
}

/// `data.augment`: the model that rewrites train prompts, how it samples, and the filters a new
/// wording must pass.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSection {
    /// A model folder or Hub id with a chat template (for example Qwen/Qwen3-8B). Empty: not
    /// configured (`steptune augment` then says so).
    pub model: String,
    /// New wordings asked for per train prompt (at most this many are kept).
    pub per_prompt: usize,
    /// The user message sent to the model; `{prompt}` is the train prompt, `{n}` is per_prompt.
    pub instruction: String,
    /// Seeds the sampling. Unset: the recipe's `seed`.
    pub seed: Option<u64>,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_p: f64,
    /// 0: off.
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Instructions generated together.
    pub batch_size: usize,
    /// Length bounds of a kept wording, in characters.
    pub min_chars: usize,
    pub max_chars: usize,
    /// A wording may be at most this many times as long as its source prompt (sources under 20
    /// characters count as 20). 0: off.
    pub max_length_ratio: f64,
    /// `prepare` adds `<run>/augmented.jsonl` to the train split when the file exists.
    pub add_to_train: bool,
}

pub const DEFAULT_AUGMENT_INSTRUCTION: &str = "Rewrite the following customer question in {n} different ways that keep exactly the same meaning and intent. Answer with a numbered list only.\n\nQuestion: {prompt}";

impl Default for AugmentSection {
    fn default() -> Self {
        AugmentSection {
            model: String::new(),
            per_prompt: 4,
            instruction: DEFAULT_AUGMENT_INSTRUCTION.into(),
            seed: None,
            do_sample: true,
            temperature: 0.8,
            top_p: 0.95,
            top_k: 0,
            max_new_tokens: 256,
            batch_size: 8,
            min_chars: 8,
            max_chars: 400,
            max_length_ratio: 4.0,
            add_to_train: true,
        }
    }
}

/// One source of `data.mix`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MixSource {
    /// Names the source in the report and in the prepared rows' `source`; it also namespaces
    /// the source's groups (`name/group`), so equal group names of two sources stay apart.
    pub name: String,
    pub files: Vec<PathBuf>,
    /// `auto` takes `data.format`.
    pub format: DataFormat,
    /// Each unset column takes `data.columns`'s, then the usual names.
    pub columns: Columns,
    /// This source's fraction of the mixed train set, in (0, 1]; its rows are sampled down
    /// (never repeated) with the recipe seed. Exclusive with `max_rows`.
    pub weight: Option<f64>,
    /// Keep at most this many of the source's cleaned rows (a seeded sample, before the split).
    pub max_rows: Option<usize>,
}

/// `data.require_review`: `auto` (synthetic rows, once `<run>/review.jsonl` exists), `synthetic`
/// (synthetic rows, always), `true` (every row) or `false` (decisions are only counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequireReview {
    Auto,
    Synthetic,
    All,
    Off,
}

impl Serialize for RequireReview {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RequireReview::Auto => s.serialize_str("auto"),
            RequireReview::Synthetic => s.serialize_str("synthetic"),
            RequireReview::All => s.serialize_bool(true),
            RequireReview::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for RequireReview {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bad = || serde::de::Error::custom("data.require_review must be auto, synthetic, true or false");
        match Value::deserialize(d)? {
            Value::Bool(true) => Ok(RequireReview::All),
            Value::Bool(false) => Ok(RequireReview::Off),
            Value::String(s) => match s.as_str() {
                "auto" => Ok(RequireReview::Auto),
                "synthetic" => Ok(RequireReview::Synthetic),
                "true" | "all" => Ok(RequireReview::All),
                "false" | "off" => Ok(RequireReview::Off),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

/// Which source field feeds each example field; `null` means "try the usual names".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    pub prompt: Option<String>,
    pub output: Option<String>,
    pub group: Option<String>,
    pub id: Option<String>,
    /// Where a row came from; `synthetic` marks rows written by `steptune augment`, which
    /// `data.require_review` holds back until a reviewer approves them.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PiiSection {
    pub enabled: bool,
    pub email: bool,
    pub phone: bool,
    pub card: bool,
    pub ip: bool,
    /// Indonesian identity numbers (16 digits with the NIK's region and birth-date structure).
    pub nik: bool,
    /// Indonesian tax numbers (99.999.999.9-999.999; plain 15 or 16 digits where the text says NPWP).
    pub npwp: bool,
    /// Account numbers where the text says so ("rekening", "no. rek", "account number", "acc no").
    pub bank_account: bool,
    /// Names the text marks as names: "nama saya Budi", "atas nama", "a.n.", "my name is",
    /// "this is Sarah from", "Halo Budi,", "Terima kasih, Rina".
    pub name_markers: bool,
    /// A text file with one personal name per line, replaced by [NAME].
    pub names_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSection {
    pub exact: bool,
    /// Rows whose prompts reach this word-level Jaccard similarity, and whose outputs reach it
    /// too, are near-duplicates; the first is kept. 1.0 turns near-duplicate removal off.
    pub near_threshold: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSection {
    /// Share of each group's paraphrases that go to eval (1 of 3 by default).
    pub eval_ratio: f64,
    /// Groups with at least 2 rows give at least this many to eval.
    pub min_eval_per_group: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    RougeL,
    Meteor,
    Bleu,
    Steps,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    pub metrics: Vec<Metric>,
    /// Also generate with the untuned base model and report it beside the tuned one.
    pub compare_base: bool,
    /// Evaluate on at most this many eval prompts (all when unset).
    pub max_samples: Option<usize>,
    pub max_new_tokens: usize,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub batch_size: usize,
    /// Rows shown side by side in the report (best and worst each).
    pub report_examples: usize,
    /// Also run IFEval (541 prompts with verifiable instructions) on the base and the tuned model:
    /// what instruction-following the tuning kept or lost.
    pub ifeval: bool,
    /// IFEval on the first N prompts only (all 541 when unset).
    pub ifeval_limit: Option<usize>,
    /// IFEval's generation budget; 1280 as lm-eval's `ifeval` task (eval.max_new_tokens is for the
    /// procedures).
    pub ifeval_max_new_tokens: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Recipe {
            name: "steptune".into(),
            seed: 42,
            output_dir: None,
            model: ModelSection::default(),
            finetune: FinetuneSection::default(),
            training: TrainingSection::default(),
            data: DataSection::default(),
            eval: EvalSection::default(),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            source: String::new(),
            revision: "main".into(),
            architecture: Architecture::Auto,
            config: None,
            tokenizer: None,
            train_tokenizer: None,
            chat_template: None,
            enable_thinking: false,
            system_prompt: None,
        }
    }
}

impl Default for TrainTokenizer {
    fn default() -> Self {
        TrainTokenizer { vocab_size: 2048, min_frequency: 2 }
    }
}

pub const ALL_TARGET_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
/// The loggers `training.report_to` accepts.
pub const REPORT_TO: [&str; 1] = ["tensorboard"];
/// T5's projection names, so LoRA on T5 goes through the same adapter code.
pub const T5_TARGET_MODULES: [&str; 8] = ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"];

impl Default for FinetuneSection {
    fn default() -> Self {
        FinetuneSection {
            method: Method::Lora,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: ALL_TARGET_MODULES.iter().map(|s| s.to_string()).collect(),
            quantization: QuantSection::default(),
        }
    }
}

impl Default for QuantSection {
    fn default() -> Self {
        QuantSection {
            bnb_4bit_quant_type: QuantType::Nf4,
            bnb_4bit_use_double_quant: true,
            bnb_4bit_compute_dtype: Precision::Bf16,
            blocksize: 64,
        }
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            learning_rate: 2e-4,
            num_train_epochs: 3.0,
            max_steps: None,
            per_device_train_batch_size: 4,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            warmup_ratio: None,
            warmup_steps: None,
            lr_scheduler_type: Scheduler::Linear,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            precision: Precision::Fp32,
            gradient_checkpointing: false,
            loss_chunk_tokens: 1024,
            group_by_length: true,
            logging_steps: 10,
            eval_strategy: Cadence::Epoch,
            eval_steps: 100,
            save_strategy: Cadence::Epoch,
            save_steps: 100,
            early_stopping_patience: 0,
            early_stopping_threshold: 0.0,
            device: "auto".into(),
            ddp_backend: DdpBackend::Auto,
            ddp_timeout: 1800.0,
            report_to: Vec::new(),
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            files: Vec::new(),
            format: DataFormat::Auto,
            columns: Columns::default(),
            on_bad_row: BadRows::Error,
            limit: None,
            normalize_steps: true,
            step_style: StepStyle::StepsOnly,
            on_no_steps: NoSteps::Keep,
            pii: PiiSection::default(),
            dedup: DedupSection::default(),
            group_by: GroupBy::Auto,
            oversample_min_rows: 0,
            split: SplitSection::default(),
            train_on_prompt: false,
            max_length: 1024,
            over_length: OverLength::Error,
            window_stride: None,
            mix: Vec::new(),
            require_review: RequireReview::Auto,
            augment: AugmentSection::default(),
        }
    }
}

impl Default for PiiSection {
    fn default() -> Self {
        PiiSection { enabled: true, email: true, phone: true, card: true, ip: true, nik: true, npwp: true, bank_account: true, name_markers: true, names_file: None }
    }
}

impl Default for DedupSection {
    fn default() -> Self {
        DedupSection { exact: true, near_threshold: 0.9 }
    }
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection { eval_ratio: 1.0 / 3.0, min_eval_per_group: 1 }
    }
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            metrics: vec![Metric::RougeL, Metric::Meteor, Metric::Bleu, Metric::Steps],
            compare_base: true,
            max_samples: None,
            max_new_tokens: 256,
            do_sample: false,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 50,
            batch_size: 8,
            report_examples: 3,
            ifeval: false,
            ifeval_limit: None,
            ifeval_max_new_tokens: 1280,
        }
    }
}

/// A recipe with the file it came from, so relative data paths resolve next to it as a fallback.
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    pub recipe: Recipe,
    /// `None` for the embedded quickstart.
    pub path: Option<PathBuf>,
}

impl LoadedRecipe {
    pub fn load(path: &Path) -> Result<LoadedRecipe> {
        LoadedRecipe::load_with(path, &[])
    }

    /// The recipe file with `--set` overrides applied before any check, so an override is held
    /// to exactly the rules of the file.
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<LoadedRecipe> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        let recipe = parse_with(&text, &path.display().to_string(), overrides)?;
        Ok(LoadedRecipe { recipe, path: Some(path.to_path_buf()) })
    }

    pub fn quickstart() -> LoadedRecipe {
        let recipe = parse(QUICKSTART_YAML, "embedded quickstart.yaml").expect("the embedded quickstart recipe is valid");
        LoadedRecipe { recipe, path: None }
    }

    /// The embedded quickstart with `--set` overrides.
    pub fn quickstart_with(overrides: &[Override]) -> Result<LoadedRecipe> {
        let recipe = parse_with(QUICKSTART_YAML, "embedded quickstart.yaml", overrides)?;
        Ok(LoadedRecipe { recipe, path: None })
    }

    /// A recipe file, or the embedded quickstart without one, with overrides.
    pub fn load_or_quickstart(path: Option<&Path>, overrides: &[Override]) -> Result<LoadedRecipe> {
        match path {
            Some(p) => LoadedRecipe::load_with(p, overrides),
            None => LoadedRecipe::quickstart_with(overrides),
        }
    }

    /// Where a data or side file named in the recipe lives: relative to the current directory,
    /// else relative to the recipe's folder.
    pub fn resolve(&self, p: &Path) -> Result<PathBuf> {
        if p.is_absolute() || p.exists() {
            return Ok(p.to_path_buf());
        }
        if let Some(dir) = self.path.as_ref().and_then(|r| r.parent()) {
            let alt = dir.join(p);
            if alt.exists() {
                return Ok(alt);
            }
            bail!("file {} not found (looked in the current directory and in {})", p.display(), dir.display());
        }
        bail!("file {} not found in the current directory", p.display())
    }

    pub fn output_dir(&self) -> PathBuf {
        self.recipe.output_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&self.recipe.name))
    }
}

/// One `--set key.path=value`. Overrides are applied to the YAML tree before it is deserialised,
/// so the type, range and unknown-key checks are the file's own; errors name the argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The argument as given (`training.learning_rate=1e-4`), for error messages.
    pub arg: String,
    /// The dotted key (`training.learning_rate`).
    pub key: String,
    pub value: Value,
}

impl Override {
    /// Parses `key.path=value`; the value is YAML (`1e-4`, `true`, `[q_proj, v_proj]`, `null`).
    pub fn parse(arg: &str) -> Result<Override> {
        let Some((key, text)) = arg.split_once('=') else {
            bail!("--set {arg}: expected KEY.PATH=VALUE, for example training.learning_rate=1e-4");
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|s| s.trim().is_empty()) {
            bail!("--set {arg}: the key `{key}` is not a dotted path like training.learning_rate");
        }
        let value: Value = serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("--set {arg}: the value is not valid YAML: {e}"))?;
        Ok(Override { arg: arg.to_string(), key: key.to_string(), value })
    }

    /// Every argument of a repeated `--set`.
    pub fn parse_all(args: &[String]) -> Result<Vec<Override>> {
        args.iter().map(|a| Override::parse(a)).collect()
    }

    /// An override made by a program (a sweep point's value, its output folder).
    pub fn new(key: &str, value: Value) -> Override {
        let text = serde_yaml::to_string(&value).map(|t| t.trim_end().to_string()).unwrap_or_default();
        Override { arg: format!("{key}={text}"), key: key.to_string(), value }
    }

    /// The key is checked against the schema as far as the schema knows it (an optional section
    /// that is unset by default is left to serde's `deny_unknown_fields`, as in a file).
    fn check_key(&self, schema: &Value) -> Result<()> {
        let mut node = schema;
        let mut path = String::new();
        for seg in self.key.split('.') {
            if path == "model.config" {
                return Ok(());
            }
            let full = if path.is_empty() { seg.to_string() } else { format!("{path}.{seg}") };
            match node {
                Value::Mapping(m) => match m.get(seg) {
                    Some(sub) => node = sub,
                    None => {
                        let siblings: Vec<String> = m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
                        bail!("--set {}: {}", self.arg, unknown_key(seg, &full, &path, &siblings, schema));
                    }
                },
                Value::Null => return Ok(()),
                _ => bail!("--set {}: `{path}` is a value, not a section with keys", self.arg),
            }
            path = full;
        }
        Ok(())
    }

    /// Sets the value in the user's tree, making the sections on the way.
    fn apply(&self, tree: &mut Value) -> Result<()> {
        if tree.is_null() {
            *tree = Value::Mapping(Default::default());
        }
        let segs: Vec<&str> = self.key.split('.').collect();
        let mut node = tree;
        for (i, seg) in segs.iter().enumerate() {
            let Value::Mapping(m) = node else {
                bail!("--set {}: `{}` is not a section in the recipe", self.arg, segs[..i].join("."));
            };
            let k = Value::String(seg.to_string());
            if i + 1 == segs.len() {
                m.insert(k, self.value.clone());
                return Ok(());
            }
            let entry = m.entry(k).or_insert(Value::Null);
            if entry.is_null() {
                *entry = Value::Mapping(Default::default());
            }
            node = entry;
        }
        Ok(())
    }
}

/// Parses and checks a recipe; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Recipe> {
    parse_with(text, origin, &[])
}

/// As `parse`, with `--set` overrides applied to the tree first. A problem an override brings
/// (unknown key, wrong type, out of range) is reported with that `--set` argument.
pub fn parse_with(text: &str, origin: &str, overrides: &[Override]) -> Result<Recipe> {
    if overrides.is_empty() {
        return parse_text(text, origin);
    }
    let file: Value = serde_yaml::from_str(text).with_context(|| format!("{origin}: not valid YAML"))?;
    if !matches!(file, Value::Mapping(_) | Value::Null) {
        bail!("{origin}: a recipe is a mapping of keys (name:, model:, training:, ...)");
    }
    let schema = serde_yaml::to_value(Recipe::default()).expect("default recipe serialises");
    let mut errors = Vec::new();
    check_keys(&file, &schema, &schema, "", &mut errors);
    if !errors.is_empty() {
        bail!("{origin}: {}", errors.join("\n"));
    }
    let mut tree = file.clone();
    for o in overrides {
        o.check_key(&schema).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        o.apply(&mut tree).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        // Keys inside a mapping value (`--set finetune.quantization={blocksize: 64}`).
        let mut errors = Vec::new();
        check_keys(&tree, &schema, &schema, "", &mut errors);
        if !errors.is_empty() {
            bail!("{origin}: --set {}: {}", o.arg, errors.join("\n"));
        }
    }
    let recipe: Recipe = match serde_yaml::from_value(tree) {
        Ok(r) => r,
        Err(e) => {
            // The file alone is checked with its line numbers; else the first override that
            // breaks it alone is named.
            parse_text(text, origin)?;
            for o in overrides {
                let mut alone = file.clone();
                o.apply(&mut alone)?;
                if let Err(e) = serde_yaml::from_value::<Recipe>(alone) {
                    bail!("{origin}: --set {}: {e}", o.arg);
                }
            }
            let args: Vec<&str> = overrides.iter().map(|o| o.arg.as_str()).collect();
            bail!("{origin} with --set {}: {e}", args.join(" --set "));
        }
    };
    if let Err(e) = recipe.validate() {
        let lines: Vec<String> = e
            .to_string()
            .lines()
            .map(|line| match overrides.iter().rev().find(|o| line.contains(&format!("`{}`", o.key)) || line.contains(&format!("`{}:", o.key))) {
                Some(o) => format!("--set {}: {line}", o.arg),
                None => line.to_string(),
            })
            .collect();
        bail!("{origin}: {}", lines.join("\n"));
    }
    Ok(recipe)
}

fn parse_text(text: &str, origin: &str) -> Result<Recipe> {
    let user: Value = serde_yaml::from_str(text).with_context(|| format!("{origin}: not valid YAML"))?;
    if !matches!(user, Value::Mapping(_) | Value::Null) {
        bail!("{origin}: a recipe is a mapping of keys (name:, model:, training:, ...)");
    }
    let schema = serde_yaml::to_value(Recipe::default()).expect("default recipe serialises");
    let mut errors = Vec::new();
    check_keys(&user, &schema, &schema, "", &mut errors);
    if !errors.is_empty() {
        bail!("{origin}: {}", errors.join("\n"));
    }
    // From the text, not the Value: serde_yaml's errors then carry the key path and the line.
    let recipe: Recipe = if user.is_null() { Recipe::default() } else { serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))? };
    recipe.validate().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(recipe)
}

/// Walks the user's mapping beside the default recipe's; every key the default lacks is an error
/// with the nearest valid key at that level, or the place where that exact key does exist.
fn check_keys(user: &Value, schema: &Value, root: &Value, path: &str, errors: &mut Vec<String>) {
    let (Value::Mapping(u), Value::Mapping(s)) = (user, schema) else { return };
    // Mappings whose keys are free (inline model config) are not checked.
    if path == "model.config" {
        return;
    }
    for (k, v) in u {
        if path == "data" && k.as_str() == Some("mix") {
            check_mix_keys(v, errors);
            continue;
        }
        let key = match k {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match s.get(k) {
            Some(sv) => check_keys(v, sv, root, &full, errors),
            None => {
                let siblings: Vec<String> = s.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
                errors.push(unknown_key(&key, &full, path, &siblings, root));
            }
        }
    }
}

/// Each source of `data.mix` is checked against `MixSource`'s keys, as `data.mix[i].key`.
fn check_mix_keys(mix: &Value, errors: &mut Vec<String>) {
    let Value::Sequence(items) = mix else { return };
    let schema = serde_yaml::to_value(MixSource::default()).expect("a mix source serialises");
    for (i, item) in items.iter().enumerate() {
        let at = format!("data.mix[{i}]");
        // A misplaced key is looked for inside the source first (`group` → `data.mix[0].columns.group`).
        let mut inside = serde_yaml::Mapping::new();
        inside.insert(Value::String(at.clone()), schema.clone());
        check_keys(item, &schema, &Value::Mapping(inside), &at, errors);
    }
}

/// "unknown key `x.y`" with where that key does exist, or the nearest valid key at its level.
fn unknown_key(key: &str, full: &str, path: &str, siblings: &[String], root: &Value) -> String {
    let mut msg = format!("unknown key `{full}`");
    let elsewhere: Vec<String> = all_paths(root, "").into_iter().filter(|p| p.rsplit('.').next() == Some(key)).collect();
    if let Some(p) = elsewhere.first() {
        let _ = write!(msg, ": it belongs at `{p}`");
    } else if let Some(best) = nearest(key, siblings) {
        let at = if path.is_empty() { best } else { format!("{path}.{best}") };
        let _ = write!(msg, ": did you mean `{at}`?");
    } else {
        let _ = write!(msg, ": valid keys here are {}", siblings.join(", "));
    }
    msg
}

fn all_paths(v: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Mapping(m) = v {
        for (k, sub) in m {
            if let Some(k) = k.as_str() {
                let p = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
                out.extend(all_paths(sub, &p));
                out.push(p);
            }
        }
    }
    out
}

fn nearest(key: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(key, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

/// The checks of `data.mix`: names, files, weight or cap, and weights that can hold together.
fn validate_mix(mix: &[MixSource], e: &mut Vec<String>) {
    let mut names = BTreeSet::new();
    for (i, src) in mix.iter().enumerate() {
        let at = format!("data.mix[{i}]");
        let named = if src.name.is_empty() { at.clone() } else { format!("{at} (`{}`)", src.name) };
        if src.name.trim().is_empty() || src.name.contains('/') {
            e.push(format!("`{at}.name` must be a non-empty name without '/': it names the source in the report and prefixes its groups"));
        } else if !names.insert(src.name.as_str()) {
            e.push(format!("`{at}.name` `{}` is used by an earlier source: give each source its own name", src.name));
        }
        if src.files.is_empty() {
            e.push(format!("`{at}.files` is empty: list the JSON, JSONL or CSV files of source {named}"));
        }
        match (src.weight, src.max_rows) {
            (Some(_), Some(_)) => e.push(format!("`{at}.weight` and `{at}.max_rows` are both set for source {named}: keep one (a fraction of the mixed train set, or a cap on rows)")),
            (Some(w), None) => in_range(e, &format!("{at}.weight"), w, 0.0, 1.0, true),
            (None, Some(0)) => e.push(format!("`{at}.max_rows` is 0 for source {named}: leave it unset or give a positive number")),
            _ => {}
        }
    }
    let weights: Vec<f64> = mix.iter().filter_map(|s| s.weight).filter(|w| w.is_finite()).collect();
    if weights.is_empty() {
        return;
    }
    let sum: f64 = weights.iter().sum();
    let unweighted: Vec<&str> = mix.iter().filter(|s| s.weight.is_none()).map(|s| s.name.as_str()).collect();
    if sum > 1.0 + 1e-9 {
        e.push(format!("`data.mix` weights sum to {sum}: they are fractions of one train set and must sum to at most 1"));
    } else if unweighted.is_empty() && sum < 1.0 - 1e-9 {
        e.push(format!("`data.mix` weights sum to {sum} and every source has one: they must sum to 1, or leave one source without a weight to fill the rest"));
    } else if !unweighted.is_empty() && sum > 1.0 - 1e-9 {
        e.push(format!("`data.mix` weights sum to 1, which leaves no room for the sources without one ({}): lower the weights", unweighted.join(", ")));
    }
}

fn in_range(errors: &mut Vec<String>, key: &str, v: f64, lo: f64, hi: f64, lo_open: bool) {
    let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v <= hi;
    if !ok {
        let open = if lo_open { "(" } else { "[" };
        errors.push(format!("`{key}` is {v}, must be in {open}{lo}, {hi}]"));
    }
}

impl Recipe {
    /// Range and consistency checks that types alone cannot express.
    pub fn validate(&self) -> Result<()> {
        let mut e = Vec::new();
        if self.name.trim().is_empty() || self.name.contains('/') {
            e.push("`name` must be a non-empty name without '/'".to_string());
        }
        let m = &self.model;
        if m.source.trim().is_empty() {
            e.push("`model.source` is required: a Hub id (Qwen/Qwen3-8B), a local HF folder, or `random`".into());
        }
        if m.source == "random" && m.config.is_none() {
            e.push("`model.source: random` needs `model.config` (a config.json path or an inline mapping)".into());
        }
        if let Some(t) = &m.train_tokenizer {
            if !(256..=1_000_000).contains(&t.vocab_size) {
                e.push(format!("`model.train_tokenizer.vocab_size` is {}, must be in [256, 1000000]", t.vocab_size));
            }
        }
        let f = &self.finetune;
        if !(1..=4096).contains(&f.lora_r) {
            e.push(format!("`finetune.lora_r` is {}, must be in [1, 4096]", f.lora_r));
        }
        in_range(&mut e, "finetune.lora_alpha", f.lora_alpha, 0.0, 1e6, true);
        if !(0.0..1.0).contains(&f.lora_dropout) {
            e.push(format!("`finetune.lora_dropout` is {}, must be in [0, 1)", f.lora_dropout));
        }
        if f.method != Method::Full && f.lora_target_modules.is_empty() {
            e.push("`finetune.lora_target_modules` is empty: name at least one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj".into());
        }
        let known: BTreeSet<&str> = ALL_TARGET_MODULES.iter().chain(T5_TARGET_MODULES.iter()).copied().collect();
        for t in &f.lora_target_modules {
            if !known.contains(t.as_str()) {
                let names: Vec<String> = known.iter().map(|s| s.to_string()).collect();
                let hint = nearest(t, &names).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
                e.push(format!("`finetune.lora_target_modules` has unknown module `{t}`{hint}; valid: {}", names.join(", ")));
            }
        }
        let q = &f.quantization;
        if q.blocksize == 0 || !q.blocksize.is_power_of_two() || !(32..=4096).contains(&q.blocksize) {
            e.push(format!("`finetune.quantization.blocksize` is {}, must be a power of two in [32, 4096]", q.blocksize));
        }
        let t = &self.training;
        in_range(&mut e, "training.learning_rate", t.learning_rate, 0.0, 1.0, true);
        in_range(&mut e, "training.num_train_epochs", t.num_train_epochs, 0.0, 100_000.0, true);
        if t.max_steps == Some(0) {
            e.push("`training.max_steps` is 0: leave it unset or give a positive number".into());
        }
        for (k, v) in [
            ("training.per_device_train_batch_size", t.per_device_train_batch_size),
            ("training.per_device_eval_batch_size", t.per_device_eval_batch_size),
            ("training.gradient_accumulation_steps", t.gradient_accumulation_steps),
        ] {
            if !(1..=65536).contains(&v) {
                e.push(format!("`{k}` is {v}, must be in [1, 65536]"));
            }
        }
        match (t.warmup_ratio, t.warmup_steps) {
            (Some(_), Some(_)) => e.push("`training.warmup_ratio` and `training.warmup_steps` are both set: keep one".into()),
            (Some(r), None) => in_range(&mut e, "training.warmup_ratio", r, 0.0, 1.0, false),
            _ => {}
        }
        in_range(&mut e, "training.weight_decay", t.weight_decay, 0.0, 1.0, false);
        in_range(&mut e, "training.adam_beta1", t.adam_beta1, 0.0, 1.0, false);
        in_range(&mut e, "training.adam_beta2", t.adam_beta2, 0.0, 1.0, false);
        in_range(&mut e, "training.adam_epsilon", t.adam_epsilon, 0.0, 1.0, true);
        in_range(&mut e, "training.max_grad_norm", t.max_grad_norm, 0.0, 1e6, false);
        in_range(&mut e, "training.early_stopping_threshold", t.early_stopping_threshold, 0.0, 1e6, false);
        in_range(&mut e, "training.ddp_timeout", t.ddp_timeout, 0.0, 1e7, true);
        if t.logging_steps == 0 {
            e.push("`training.logging_steps` is 0, must be at least 1".into());
        }
        if t.eval_strategy == Cadence::Steps && t.eval_steps == 0 {
            e.push("`training.eval_steps` is 0 with eval_strategy: steps, must be at least 1".into());
        }
        if t.save_strategy == Cadence::Steps && t.save_steps == 0 {
            e.push("`training.save_steps` is 0 with save_strategy: steps, must be at least 1".into());
        }
        if t.early_stopping_patience > 0 && t.eval_strategy == Cadence::No {
            e.push("`training.early_stopping_patience` needs eval loss: set `training.eval_strategy` to steps or epoch".into());
        }
        for r in &t.report_to {
            if !REPORT_TO.contains(&r.as_str()) {
                let names: Vec<String> = REPORT_TO.iter().map(|s| s.to_string()).collect();
                let hint = nearest(r, &names).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
                e.push(format!("`training.report_to` has unknown logger `{r}`{hint}; valid: {}", names.join(", ")));
            }
        }
        let dev_ok = t.device == "auto" || t.device == "cpu" || t.device == "cuda" || t.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if !dev_ok {
            e.push(format!("`training.device` is `{}`, must be auto, cpu, cuda or cuda:N", t.device));
        }
        let d = &self.data;
        if d.mix.is_empty() && d.files.is_empty() {
            e.push("`data.files` is empty: list at least one JSON, JSONL or CSV file (or several sources under `data.mix`)".into());
        }
        if !d.mix.is_empty() && !d.files.is_empty() {
            e.push("`data.mix` and `data.files` are both set: put the files under a `data.mix` source, or drop `data.mix` for one source".into());
        }
        validate_mix(&d.mix, &mut e);
        match (d.window_stride, d.over_length) {
            (Some(0), _) => e.push("`data.window_stride` is 0, must be at least 1 (answer tokens from one window to the next)".into()),
            (Some(_), policy) if policy != OverLength::SlidingWindow => e.push(format!(
                "`data.window_stride` is set but `data.over_length` is {}: the stride only applies to `over_length: sliding_window`",
                serde_yaml::to_string(&policy).unwrap_or_default().trim()
            )),
            _ => {}
        }
        if d.limit == Some(0) {
            e.push("`data.limit` is 0: leave it unset or give a positive number".into());
        }
        in_range(&mut e, "data.dedup.near_threshold", d.dedup.near_threshold, 0.0, 1.0, true);
        in_range(&mut e, "data.split.eval_ratio", d.split.eval_ratio, 0.0, 1.0, false);
        if d.split.eval_ratio >= 1.0 {
            e.push("`data.split.eval_ratio` is 1: nothing would be left to train on; use a value below 1".into());
        }
        if !(8..=1_048_576).contains(&d.max_length) {
            e.push(format!("`data.max_length` is {}, must be in [8, 1048576]", d.max_length));
        }
        let a = &d.augment;
        if !(1..=50).contains(&a.per_prompt) {
            e.push(format!("`data.augment.per_prompt` is {}, must be in [1, 50]", a.per_prompt));
        }
        if !a.instruction.contains("{prompt}") {
            e.push("`data.augment.instruction` has no `{prompt}`: the model would not see the prompt to rewrite".into());
        }
        in_range(&mut e, "data.augment.temperature", a.temperature, 0.0, 100.0, true);
        in_range(&mut e, "data.augment.top_p", a.top_p, 0.0, 1.0, true);
        if !(1..=65536).contains(&a.max_new_tokens) {
            e.push(format!("`data.augment.max_new_tokens` is {}, must be in [1, 65536]", a.max_new_tokens));
        }
        if a.batch_size == 0 {
            e.push("`data.augment.batch_size` is 0, must be at least 1".into());
        }
        if a.max_chars == 0 || a.min_chars > a.max_chars {
            e.push(format!("`data.augment.min_chars` ({}) and `data.augment.max_chars` ({}) must satisfy 0 <= min_chars <= max_chars, max_chars >= 1", a.min_chars, a.max_chars));
        }
        in_range(&mut e, "data.augment.max_length_ratio", a.max_length_ratio, 0.0, 1e6, false);
        let v = &self.eval;
        if !(1..=65536).contains(&v.max_new_tokens) {
            e.push(format!("`eval.max_new_tokens` is {}, must be in [1, 65536]", v.max_new_tokens));
        }
        if !(1..=65536).contains(&v.ifeval_max_new_tokens) {
            e.push(format!("`eval.ifeval_max_new_tokens` is {}, must be in [1, 65536]", v.ifeval_max_new_tokens));
        }
        if v.ifeval_limit == Some(0) {
            e.push("`eval.ifeval_limit` is 0: unset it for all 541 prompts, or give at least 1".into());
        }
        in_range(&mut e, "eval.temperature", v.temperature, 0.0, 100.0, true);
        in_range(&mut e, "eval.top_p", v.top_p, 0.0, 1.0, true);
        if v.batch_size == 0 {
            e.push("`eval.batch_size` is 0, must be at least 1".into());
        }
        if e.is_empty() {
            Ok(())
        } else {
            bail!("{}", e.join("\n"))
        }
    }

    /// The resolved recipe, every default filled in, as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("recipe serialises")
    }
}
