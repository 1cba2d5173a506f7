//! Models: where their files come from, their tokenizers, the networks, and generation.
pub mod causal;
pub mod chat_template;
pub mod gemma3;
pub mod generate;
pub mod qwen3;
pub mod source;
pub mod t5;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::nn::linear::Linear;
use crate::nn::{nf4, weights};
use crate::recipe::Architecture;
use source::ModelKind;
use gemma3::{Gemma3, Gemma3Config};
use qwen3::{DecoderConfig, Qwen3};
use t5::{T5Config, T5};

/// One micro-batch as the training loop hands it to a model. Decoder-only: `input_ids` and
/// `labels` are the same right-padded sequence, [b, t]. Encoder-decoder: `input_ids` [b, s] is
/// the source with its `attention_mask`, `labels` [b, t] the target; -100 marks unlabelled places.
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub labels: Tensor,
    /// Encoder-decoder only, when some example is a sliding window: the targets the decoder reads
    /// (shifted right), [b, t], where `labels` masks the context an earlier window learned.
    /// `None`: the decoder reads `labels`.
    pub decoder_reads: Option<Tensor>,
    /// Labels the loss counts (decoder-only: after the first position, which predicts nothing).
    pub n_targets: i64,
    pub n_tokens: i64,
}

/// What the pipeline needs from a network, whatever its architecture: the training loop, LoRA
/// and checkpoint writing go through this, so none of them forks per model.
pub trait Model {
    fn kind(&self) -> Kind;
    fn device(&self) -> Device;
    /// Decoder-only (chat) or encoder-decoder: how prompts are encoded and batches collated.
    fn model_kind(&self) -> ModelKind;
    /// Every base tensor under its checkpoint name (4-bit ones dequantized), for saving.
    fn named_weights(&self) -> Vec<(String, Tensor)>;
    /// The base tensors held dense (what trains in full fine-tuning, what LoRA freezes).
    fn dense_weights(&self) -> Vec<(String, Tensor)>;
    /// Every projection LoRA can adapt, under its checkpoint module name
    /// (`model.layers.0.self_attn.q_proj`, `encoder.block.0.layer.0.SelfAttention.q`).
    fn projections(&self) -> Vec<(String, &Linear)>;
    fn projections_mut(&mut self) -> Vec<(String, &mut Linear)>;
    /// peft's `task_type` for adapters of this model.
    fn peft_task_type(&self) -> &'static str;
    /// The loss summed over labelled tokens, and their count.
    fn loss_sum(&self, batch: &Batch, train: bool) -> Result<(Tensor, i64)>;
    /// Labelled tokens per chunk of the LM head's loss (`training.loss_chunk_tokens`; 0: all at once).
    fn set_loss_chunk(&mut self, tokens: usize);
    /// Gradient checkpointing: `loss_sum` in training mode with the gradient of `loss · scale`
    /// already accumulated; returns the summed loss and the count.
    fn loss_sum_backward_checkpointed(&self, batch: &Batch, scale: f64) -> Result<(f64, i64)>;
    /// Writes an HF folder (config, weights, tokenizer) that transformers loads.
    fn save(&self, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()>;
    /// Generates for each prompt (token ids, unpadded) with a KV cache; returns only the new
    /// tokens of each row, cut after its first eos (kept).
    fn generate(&self, prompts: &[Vec<i64>], cfg: &generate::GenerateConfig) -> Vec<Vec<i64>>;
}

impl Model for Qwen3 {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn device(&self) -> Device {
        self.device
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        Qwen3::named_weights(self)
    }
    fn dense_weights(&self) -> Vec<(String, Tensor)> {
        Qwen3::dense_weights(self)
    }
    fn projections(&self) -> Vec<(String, &Linear)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| self.linears_of(l).map(|(n, lin)| (format!("model.layers.{i}.{n}"), lin))).collect()
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, l)| Qwen3::linears_of_mut(l).map(|(n, lin)| (format!("model.layers.{i}.{n}"), lin))).collect()
    }
    fn peft_task_type(&self) -> &'static str {
        "CAUSAL_LM"
    }
    fn model_kind(&self) -> ModelKind {
        ModelKind::Causal
    }
    fn loss_sum(&self, batch: &Batch, train: bool) -> Result<(Tensor, i64)> {
        Qwen3::loss_sum(self, &batch.input_ids, &batch.labels, train)
    }
    fn set_loss_chunk(&mut self, tokens: usize) {
        self.loss_chunk = tokens;
    }
    fn loss_sum_backward_checkpointed(&self, batch: &Batch, scale: f64) -> Result<(f64, i64)> {
        Qwen3::loss_sum_backward_checkpointed(self, &batch.input_ids, &batch.labels, scale)
    }
    fn save(&self, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
        save_decoder(self, dir, tok)
    }
    fn generate(&self, prompts: &[Vec<i64>], cfg: &generate::GenerateConfig) -> Vec<Vec<i64>> {
        generate::generate(self, prompts, cfg)
    }
}

impl Model for T5 {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn device(&self) -> Device {
        self.device
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        T5::named_weights(self)
    }
    fn dense_weights(&self) -> Vec<(String, Tensor)> {
        // T5 is never stored in 4 bits here: every base tensor is dense.
        T5::named_weights(self)
    }
    fn projections(&self) -> Vec<(String, &Linear)> {
        self.linears()
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        self.linears_mut()
    }
    fn peft_task_type(&self) -> &'static str {
        "SEQ_2_SEQ_LM"
    }
    fn model_kind(&self) -> ModelKind {
        ModelKind::Seq2Seq
    }
    fn loss_sum(&self, batch: &Batch, train: bool) -> Result<(Tensor, i64)> {
        let reads = batch.decoder_reads.as_ref().unwrap_or(&batch.labels);
        T5::loss_sum_reading(self, &batch.input_ids, &batch.attention_mask, reads, &batch.labels, train)
    }
    fn set_loss_chunk(&mut self, tokens: usize) {
        self.loss_chunk = tokens;
    }
    fn loss_sum_backward_checkpointed(&self, _batch: &Batch, _scale: f64) -> Result<(f64, i64)> {
        bail!("training.gradient_checkpointing is implemented for decoder-only models (Qwen3, Qwen2, Llama), not T5; set it to false")
    }
    fn save(&self, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
        save_t5(self, dir, tok)
    }
    fn generate(&self, prompts: &[Vec<i64>], cfg: &generate::GenerateConfig) -> Vec<Vec<i64>> {
        T5::generate(self, prompts, cfg)
    }
}

/// The linear projections of the decoder layers that QLoRA quantizes; embeddings, norms and
/// lm_head stay 16-bit.
pub fn is_decoder_projection(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("model.layers.") else { return false };
    let Some((layer, rest)) = rest.split_once('.') else { return false };
    !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && matches!(
            rest,
            "self_attn.q_proj.weight"
                | "self_attn.k_proj.weight"
                | "self_attn.v_proj.weight"
                | "self_attn.o_proj.weight"
                | "mlp.gate_proj.weight"
                | "mlp.up_proj.weight"
                | "mlp.down_proj.weight"
        )
}

pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Loads a decoder-only model from an HF folder, weights converted to `kind` on `device`.
pub fn load_decoder(dir: &Path, kind: Kind, device: Device) -> Result<Qwen3> {
    let config = read_config(dir)?;
    let t = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let arch = Architecture::from_model_type(t).with_context(|| format!("{}: model_type `{t}` is not a supported decoder", dir.display()))?;
    if arch == Architecture::Gemma3 {
        bail!("{}: a Gemma 3 checkpoint: load it with load_gemma3 (or load_model)", dir.display());
    }
    let cfg = DecoderConfig::from_json(&config, arch)?;
    let mut w = read_dense(dir, &config, kind, device)?;
    let model = Qwen3::from_weights(cfg, &mut w, kind, device)?;
    all_used(dir, &w)?;
    Ok(model)
}

/// Loads Gemma 3's text decoder from a `gemma3_text` or multimodal `gemma3` folder.
pub fn load_gemma3(dir: &Path, kind: Kind, device: Device) -> Result<Gemma3> {
    let config = read_config(dir)?;
    let cfg = Gemma3Config::from_json(&config).with_context(|| dir.display().to_string())?;
    let mut w = read_dense(dir, &config, kind, device)?;
    let model = Gemma3::from_parts(cfg, &mut w, &mut HashMap::new(), kind, kind, device)?;
    all_used(dir, &w)?;
    Ok(model)
}

fn all_used(dir: &Path, w: &weights::Weights) -> Result<()> {
    if !w.is_empty() {
        let names: Vec<&String> = w.keys().take(5).collect();
        bail!("{}: {} checkpoint tensors were not used (for example {names:?}): is this the right architecture?", dir.display(), w.len());
    }
    Ok(())
}

/// Which checkpoint tensors a decoder reads, under which name: a multimodal Gemma 3's language
/// model under the text model's names, its vision tower and projector not at all (counted, and
/// said once by `note_skipped`); every other checkpoint's tensors as they are.
struct Names {
    multimodal: bool,
    skipped: std::cell::Cell<usize>,
}

impl Names {
    fn of(config: &serde_json::Value) -> Names {
        Names { multimodal: config.get("model_type").and_then(|v| v.as_str()) == Some("gemma3"), skipped: std::cell::Cell::new(0) }
    }
    fn keep(&self, name: &str) -> bool {
        let keep = !self.multimodal || gemma3::text_weight_name(name).is_some();
        if !keep {
            self.skipped.set(self.skipped.get() + 1);
        }
        keep
    }
    fn rename(&self, name: String) -> String {
        if self.multimodal {
            gemma3::text_weight_name(&name).unwrap_or(name)
        } else {
            name
        }
    }
    fn note_skipped(&self, dir: &Path) {
        if self.skipped.get() > 0 {
            eprintln!("note: {}: a multimodal Gemma 3; its vision tower and projector ({} tensors) are not loaded: steptune trains the text model only", dir.display(), self.skipped.get());
        }
    }
}

/// A decoder's tensors in `kind` (a bitsandbytes 4-bit checkpoint's projections dequantized).
fn read_dense(dir: &Path, config: &serde_json::Value, kind: Kind, device: Device) -> Result<weights::Weights> {
    let names = Names::of(config);
    let w = if is_bnb_4bit(config) {
        // A `*-bnb-4bit` checkpoint loads in 16 bits by dequantizing its projections.
        let mut w: weights::Weights = weights::read_model_dir(dir, None, device, &|n| names.keep(n))?.into_iter().map(|(n, t)| (names.rename(n), t)).collect();
        let projs: Vec<String> = w.keys().filter(|n| is_decoder_projection(n)).cloned().collect();
        for name in projs {
            if let Some(q) = nf4::from_checkpoint_tensors(&name, &mut w).with_context(|| format!("{}: reading the 4-bit `{name}`", dir.display()))? {
                w.insert(name, nf4::dequantize(&q));
            }
        }
        w.into_iter().map(|(n, t)| (n, weights::convert(t, Some(kind), device))).collect()
    } else {
        weights::read_model_dir(dir, Some(kind), device, &|n| names.keep(n))?.into_iter().map(|(n, t)| (names.rename(n), t)).collect()
    };
    names.note_skipped(dir);
    Ok(w)
}

/// How QLoRA stores a base model's projections (the recipe's `finetune.quantization`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantSpec {
    pub blocksize: i64,
    pub double_quant: bool,
    /// The dtype the 4-bit products run in (bnb_4bit_compute_dtype).
    pub compute: Kind,
}

/// Whether config.json says the checkpoint is already stored in bitsandbytes 4-bit (`*-bnb-4bit`).
pub fn is_bnb_4bit(config: &serde_json::Value) -> bool {
    let q = &config["quantization_config"];
    q["load_in_4bit"].as_bool() == Some(true) || (q["quant_method"].as_str() == Some("bitsandbytes") && q["_load_in_4bit"].as_bool() == Some(true))
}

/// Loads a decoder for QLoRA: the decoder layers' projections in NF4, everything else in `kind`.
/// A 16-bit checkpoint is quantized tensor by tensor as it is read, so peak memory stays near the
/// 4-bit size plus one 16-bit tensor; a bitsandbytes 4-bit checkpoint is read as stored.
pub fn load_decoder_4bit(dir: &Path, spec: QuantSpec, kind: Kind, device: Device) -> Result<Qwen3> {
    let config = read_config(dir)?;
    let t = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let arch = Architecture::from_model_type(t).with_context(|| format!("{}: model_type `{t}` is not a supported decoder", dir.display()))?;
    if arch == Architecture::Gemma3 {
        bail!("{}: a Gemma 3 checkpoint: load it with load_gemma3_4bit (or load_model)", dir.display());
    }
    let cfg = DecoderConfig::from_json(&config, arch)?;
    let (mut w, mut quantized) = read_4bit(dir, &config, spec, kind, device)?;
    let model = Qwen3::from_parts(cfg, &mut w, &mut quantized, spec.compute, kind, device)?;
    all_used_4bit(dir, &w, &quantized)?;
    release_freed_memory();
    Ok(model)
}

/// Gemma 3's text decoder for QLoRA: as `load_decoder_4bit`.
pub fn load_gemma3_4bit(dir: &Path, spec: QuantSpec, kind: Kind, device: Device) -> Result<Gemma3> {
    let config = read_config(dir)?;
    let cfg = Gemma3Config::from_json(&config).with_context(|| dir.display().to_string())?;
    let (mut w, mut quantized) = read_4bit(dir, &config, spec, kind, device)?;
    let model = Gemma3::from_parts(cfg, &mut w, &mut quantized, spec.compute, kind, device)?;
    all_used_4bit(dir, &w, &quantized)?;
    release_freed_memory();
    Ok(model)
}

fn all_used_4bit(dir: &Path, w: &weights::Weights, quantized: &HashMap<String, nf4::Nf4Tensor>) -> Result<()> {
    let left: Vec<&String> = w.keys().chain(quantized.keys()).take(5).collect();
    if !left.is_empty() {
        bail!("{}: checkpoint tensors were not used (for example {left:?}): is this the right architecture?", dir.display());
    }
    Ok(())
}

/// A decoder's tensors for QLoRA: the decoder projections in NF4, everything else in `kind`.
fn read_4bit(dir: &Path, config: &serde_json::Value, spec: QuantSpec, kind: Kind, device: Device) -> Result<(weights::Weights, HashMap<String, nf4::Nf4Tensor>)> {
    let names = Names::of(config);
    let mut w = weights::Weights::new();
    let mut quantized = HashMap::new();
    if is_bnb_4bit(config) {
        let mut stored: weights::Weights = weights::read_model_dir(dir, None, device, &|n| names.keep(n))?.into_iter().map(|(n, t)| (names.rename(n), t)).collect();
        let projs: Vec<String> = stored.keys().filter(|n| is_decoder_projection(n)).cloned().collect();
        for name in projs {
            let q = nf4::from_checkpoint_tensors(&name, &mut stored).with_context(|| format!("{}: reading the 4-bit `{name}`", dir.display()))?;
            match q {
                Some(q) => {
                    quantized.insert(name, q);
                }
                None => bail!("{}: `{name}` is not stored in 4 bits although config.json says the checkpoint is", dir.display()),
            }
        }
        for (name, t) in stored {
            w.insert(name, weights::convert(t, Some(kind), device));
        }
    } else {
        for path in weights::model_files(dir)? {
            weights::visit_file(&path, &|n| names.keep(n), &mut |name, t| keep_or_quantize(names.rename(name), weights::convert(t, Some(kind), device), spec, &mut w, &mut quantized))?;
        }
    }
    names.note_skipped(dir);
    Ok((w, quantized))
}

/// QLoRA's split of a checkpoint as it streams in: the decoder projections to NF4 (`quantized`),
/// everything else kept as it is (`w`).
fn keep_or_quantize(name: String, t: Tensor, spec: QuantSpec, w: &mut weights::Weights, quantized: &mut HashMap<String, nf4::Nf4Tensor>) -> Result<()> {
    if is_decoder_projection(&name) {
        let q = nf4::quantize(&t, spec.blocksize, spec.double_quant).with_context(|| format!("quantizing {name}"))?;
        quantized.insert(name, q);
    } else {
        w.insert(name, t);
    }
    Ok(())
}

/// Hands memory freed by the quantizer's per-tensor temporaries back to the system: glibc keeps
/// it otherwise, and the resident size after a 4-bit load would overstate what the process holds
/// (the benchmark saw 616-648 MiB where 455 MiB were live, on a 4-layer Qwen3-0.6B shape).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A decoder initialised the way transformers does, from a config.json value (`source: random`).
pub fn random_decoder(config: &serde_json::Value, arch: Architecture, kind: Kind, device: Device) -> Result<Qwen3> {
    let cfg = DecoderConfig::from_json(config, arch)?;
    let mut w = Qwen3::random_weights(&cfg, kind, device);
    Qwen3::from_weights(cfg, &mut w, kind, device)
}

/// A decoder initialised as `random_decoder` (the same draws from the same seed) for QLoRA: each
/// projection is quantized to NF4 the moment it is drawn, on `device`, so the memory peak is the
/// 4-bit model plus one float32 tensor, never the 16-bit model (Qwen3-8B: about 5.5 GB on the
/// GPU instead of 16 GB).
pub fn random_decoder_4bit(config: &serde_json::Value, arch: Architecture, spec: QuantSpec, kind: Kind, device: Device) -> Result<Qwen3> {
    let cfg = DecoderConfig::from_json(config, arch)?;
    let mut w = weights::Weights::new();
    let mut quantized = HashMap::new();
    Qwen3::visit_random_weights(&cfg, kind, device, &mut |name, t| keep_or_quantize(name, t, spec, &mut w, &mut quantized))?;
    let model = Qwen3::from_parts(cfg, &mut w, &mut quantized, spec.compute, kind, device)?;
    release_freed_memory();
    Ok(model)
}

/// A T5 initialised the way transformers does, from a config.json value (`source: random`).
pub fn random_t5(config: &serde_json::Value, kind: Kind, device: Device) -> Result<T5> {
    let cfg = T5Config::from_json(config)?;
    let mut w = T5::random_weights(&cfg, kind, device);
    T5::from_weights(cfg, &mut w, kind, device)
}

/// Any supported HF folder, by its config's `model_type`: T5 (encoder-decoder) or a decoder-only
/// model, whose projections are stored in 4 bits when `quant` is given (QLoRA).
pub fn load_model(dir: &Path, quant: Option<QuantSpec>, kind: Kind, device: Device) -> Result<Box<dyn Model>> {
    let config = read_config(dir)?;
    if config.get("model_type").and_then(|v| v.as_str()) == Some("t5") {
        if quant.is_some() {
            bail!("{}: QLoRA (finetune.method qlora) is implemented for decoder-only models; train T5 with method full or lora", dir.display());
        }
        return Ok(Box::new(load_t5(dir, kind, device)?));
    }
    if gemma3::is_gemma3(&config) {
        return Ok(match quant {
            Some(spec) => Box::new(load_gemma3_4bit(dir, spec, kind, device)?),
            None => Box::new(load_gemma3(dir, kind, device)?),
        });
    }
    Ok(match quant {
        Some(spec) => Box::new(load_decoder_4bit(dir, spec, kind, device)?),
        None => Box::new(load_decoder(dir, kind, device)?),
    })
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// Writes an HF folder transformers loads: config.json, generation_config.json,
/// model.safetensors and, when given, the tokenizer files.
pub fn save_decoder(model: &Qwen3, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
    save_causal_folder(dir, tok, |bos, eos, pad| model.cfg.to_hf_json(bos, eos, pad, kind_name(model.kind)), &model.named_weights())
}

/// The HF folder of any decoder-only model: config.json (from the tokenizer's special ids),
/// generation_config.json, model.safetensors and the tokenizer files.
pub fn save_causal_folder(
    dir: &Path,
    tok: Option<&tokenizer::TokenizerBundle>,
    config_of: impl FnOnce(Option<i64>, Option<i64>, Option<i64>) -> serde_json::Value,
    named: &[(String, Tensor)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = |t: &Option<String>| t.as_deref().and_then(|s| tok.and_then(|k| k.token_id(s))).map(|i| i as i64);
    let (bos, eos, pad) = match tok {
        Some(k) => (id(&k.bos_token), id(&k.eos_token), id(&k.pad_token)),
        None => (None, None, None),
    };
    let config = config_of(bos, eos, pad);
    crate::run::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let gen = serde_json::json!({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": false});
    crate::run::write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gen)?.as_bytes())?;
    let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&dir.join("model.safetensors"), &refs)?;
    if let Some(k) = tok {
        k.save(dir)?;
    }
    Ok(())
}

/// Loads a T5 / flan-t5 model from an HF folder, weights converted to `kind` on `device`.
pub fn load_t5(dir: &Path, kind: Kind, device: Device) -> Result<T5> {
    let config = read_config(dir)?;
    let t = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    if t != "t5" {
        anyhow::bail!("{}: model_type `{t}` is not t5", dir.display());
    }
    let cfg = T5Config::from_json(&config).with_context(|| dir.display().to_string())?;
    let mut w = weights::read_model_dir(dir, Some(kind), device, &|_| true)?;
    let model = T5::from_weights(cfg, &mut w, kind, device).with_context(|| dir.display().to_string())?;
    if !w.is_empty() {
        let names: Vec<&String> = w.keys().take(5).collect();
        anyhow::bail!("{}: {} checkpoint tensors were not used (for example {names:?}): is this the right architecture?", dir.display(), w.len());
    }
    Ok(model)
}

/// Writes an HF folder transformers loads as T5ForConditionalGeneration: config.json,
/// generation_config.json (start token pad, eos), model.safetensors and, when given, the
/// tokenizer files.
pub fn save_t5(model: &T5, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = model.cfg.to_hf_json(kind_name(model.kind));
    crate::run::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let c = &model.cfg;
    let gen = serde_json::json!({"decoder_start_token_id": c.decoder_start_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id, "do_sample": false});
    crate::run::write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gen)?.as_bytes())?;
    let named = model.named_weights();
    let refs: Vec<(String, &tch::Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&dir.join("model.safetensors"), &refs)?;
    if let Some(k) = tok {
        k.save(dir)?;
    }
    Ok(())
}
