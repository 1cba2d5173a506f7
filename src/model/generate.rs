//! Generation with a KV cache: greedy or sampled (temperature, top-k, top-p), batched with left
//! padding so every row's last prompt token sits in the same column.
use tch::{Kind, Tensor};

use super::causal::{self, CausalLm};
use super::qwen3::{positions_from_mask, KvCache};
use super::source::ModelKind;
use super::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub do_sample: bool,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    /// Any of these ends a row (Qwen3: `<|im_end|>` and `<|endoftext|>`).
    pub eos_ids: Vec<i64>,
    pub pad_id: i64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig { max_new_tokens: 256, do_sample: false, temperature: 1.0, top_k: 0, top_p: 1.0, eos_ids: vec![], pad_id: 0 }
    }
}

/// The next token under `cfg` (argmax, or a sample after temperature, top-k and top-p).
/// logits: [b, V] → next ids [b]
pub fn choose(logits: &Tensor, cfg: &GenerateConfig) -> Tensor {
    if !cfg.do_sample {
        return logits.argmax(-1, false);
    }
    let mut l = logits / cfg.temperature.max(1e-6);
    let v = l.size()[1];
    if cfg.top_k > 0 && (cfg.top_k as i64) < v {
        let (top, _) = l.topk(cfg.top_k as i64, -1, true, true);
        let kth = top.narrow(1, cfg.top_k as i64 - 1, 1); // [b, 1]
        l = l.masked_fill(&l.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if cfg.top_p < 1.0 {
        // Keep the smallest set of tokens whose probability reaches top_p (at least one).
        let (sorted, order) = l.sort(-1, true);
        let cum = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
        let drop_sorted = (cum - sorted.softmax(-1, Kind::Float)).gt(cfg.top_p);
        let drop = drop_sorted.scatter(1, &order, &drop_sorted);
        l = l.masked_fill(&drop, f64::NEG_INFINITY);
    }
    l.softmax(-1, Kind::Float).multinomial(1, false).squeeze_dim(1)
}

/// Generates for each prompt (token ids) and returns only the new tokens, each row cut after its
/// first eos (the eos itself kept).
pub fn generate<M: CausalLm>(model: &M, prompts: &[Vec<i64>], cfg: &GenerateConfig) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    if prompts.is_empty() {
        return vec![];
    }
    let b = prompts.len() as i64;
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1) as i64;
    let device = model.device();
    let mut ids = vec![cfg.pad_id; (b * width) as usize];
    let mut mask = vec![0i64; (b * width) as usize];
    for (r, p) in prompts.iter().enumerate() {
        let off = r * width as usize + (width as usize - p.len());
        ids[off..off + p.len()].copy_from_slice(p);
        mask[off..off + p.len()].iter_mut().for_each(|m| *m = 1);
    }
    let ids = Tensor::from_slice(&ids).view([b, width]).to_device(device);
    let mut mask2d = Tensor::from_slice(&mask).view([b, width]).to_device(device); // [b, T]
    let positions = positions_from_mask(&mask2d);
    let mut cache = KvCache::new(model.n_layers());
    let full_rows = prompts.iter().all(|p| p.len() as i64 == width);
    // The padding mask only when a row is padded; each model derives its layers' masks from it.
    let m = if full_rows { None } else { Some(&mask2d) };
    let mut logits = causal::step(model, &ids, &positions, m, &mut cache); // [b, V]
    let mut next_pos = positions.narrow(1, width - 1, 1) + 1; // [b, 1]
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); prompts.len()];
    let mut done = vec![false; prompts.len()];
    for _ in 0..cfg.max_new_tokens {
        let next = choose(&logits, cfg); // [b]
        let next_v: Vec<i64> = Vec::<i64>::try_from(&next.to_device(tch::Device::Cpu)).unwrap_or_default();
        for (r, &tok) in next_v.iter().enumerate() {
            if !done[r] {
                out[r].push(tok);
                done[r] = cfg.eos_ids.contains(&tok);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        // Finished rows keep producing pad tokens, which nothing reads.
        let fed: Vec<i64> = next_v.iter().zip(&done).map(|(&t, &d)| if d { cfg.pad_id } else { t }).collect();
        let step_ids = Tensor::from_slice(&fed).view([b, 1]).to_device(device);
        mask2d = Tensor::cat(&[&mask2d, &Tensor::ones([b, 1], (Kind::Int64, device))], 1);
        let m = if full_rows { None } else { Some(&mask2d) };
        logits = causal::step(model, &step_ids, &next_pos, m, &mut cache);
        next_pos = next_pos + 1;
    }
    out
}

/// One generated answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Generated {
    pub prompt: String,
    pub text: String,
    pub token_ids: Vec<i64>,
}

/// Generation for user prompts, from text to text: decoder-only models read the prompt through
/// their chat template (thinking off); encoder-decoders read the prompt itself with eos, as
/// `prepare` encoded their sources. Batched; decoded without special tokens.
pub struct TextGenerator<'a> {
    pub model: &'a dyn Model,
    pub tok: &'a crate::model::tokenizer::TokenizerBundle,
    /// The chat template (decoder-only models); None for encoder-decoders.
    pub template: Option<crate::model::chat_template::ChatTemplate>,
    pub system: Option<String>,
}

impl<'a> TextGenerator<'a> {
    pub fn new(model: &'a dyn Model, tok: &'a crate::model::tokenizer::TokenizerBundle, system: Option<String>) -> anyhow::Result<Self> {
        let template = match model.model_kind() {
            ModelKind::Causal => Some(crate::model::chat_template::ChatTemplate::from_tokenizer(tok)?),
            ModelKind::Seq2Seq => None,
        };
        Ok(TextGenerator { model, tok, template, system })
    }

    /// The ids that end an answer: the tokenizer's eos and, where present, `<|endoftext|>`,
    /// `<|im_end|>` and Gemma's `<end_of_turn>`.
    pub fn stop_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = Vec::new();
        for t in [self.tok.eos_token.as_deref(), Some("<|im_end|>"), Some("<|endoftext|>"), Some("<end_of_turn>")].into_iter().flatten() {
            if let Some(id) = self.tok.token_id(t) {
                if !ids.contains(&(id as i64)) {
                    ids.push(id as i64);
                }
            }
        }
        ids
    }

    /// Generation settings with this tokenizer's stop and pad ids filled in.
    pub fn config(&self, max_new_tokens: usize, do_sample: bool, temperature: f64, top_p: f64, top_k: usize) -> GenerateConfig {
        GenerateConfig { max_new_tokens, do_sample, temperature, top_k, top_p, eos_ids: self.stop_ids(), pad_id: self.pad_id() }
    }

    pub fn pad_id(&self) -> i64 {
        self.tok.pad_token.as_deref().and_then(|p| self.tok.token_id(p)).or_else(|| self.tok.eos_id().ok()).unwrap_or(0) as i64
    }

    /// A prompt's token ids as the model reads it.
    pub fn encode(&self, prompt: &str) -> anyhow::Result<Vec<i64>> {
        let ids = match &self.template {
            Some(template) => {
                let text = template.render(&crate::model::chat_template::chat_messages(self.system.as_deref(), prompt, None), true, false)?;
                self.tok.tokenizer.encode(text.as_str(), false)
            }
            // The tokenizer's post-processor appends eos (T5's `</s>`), as for training sources.
            None => self.tok.tokenizer.encode(prompt, true),
        }
        .map_err(|e| anyhow::anyhow!("tokenisation failed: {e}"))?;
        Ok(ids.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Generates for many prompts, `batch_size` at a time (prompts sorted by length so a batch
    /// pads little), and returns the answers in the prompts' order.
    pub fn generate(&self, prompts: &[String], cfg: &GenerateConfig, batch_size: usize) -> anyhow::Result<Vec<Generated>> {
        let encoded = prompts.iter().map(|p| self.encode(p)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out: Vec<Option<Generated>> = vec![None; prompts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<Vec<i64>> = chunk.iter().map(|&i| encoded[i].clone()).collect();
            for (&i, ids) in chunk.iter().zip(self.model.generate(&batch, cfg)) {
                let keep: Vec<u32> = ids.iter().filter(|t| !cfg.eos_ids.contains(t)).map(|&t| t as u32).collect();
                let text = self.tok.tokenizer.decode(&keep, true).map_err(|e| anyhow::anyhow!("decoding failed: {e}"))?;
                let text = text.trim().to_string();
                out[i] = Some(Generated { prompt: prompts[i].clone(), text, token_ids: ids });
            }
        }
        Ok(out.into_iter().map(|g| g.expect("every prompt generated")).collect())
    }
}
