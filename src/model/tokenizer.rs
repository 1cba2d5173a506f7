//! A tokenizer with what `tokenizer.json` alone does not carry: the chat template and the special
//! tokens named in `tokenizer_config.json`. Also trains a small byte-level BPE for tiny models,
//! so the quickstart needs no downloads.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerImpl};

/// Qwen3's chat template (Apache-2.0, from Qwen/Qwen3-8B's tokenizer_config.json), given to
/// tokenizers trained here so tiny models use the same turn format as the real one.
pub const QWEN3_CHAT_TEMPLATE: &str = include_str!("qwen3_chat_template.jinja");
/// ChatML markers and Qwen3's thinking tags, in Qwen3's order.
pub const CHATML_SPECIAL_TOKENS: [&str; 5] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"];

pub struct TokenizerBundle {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    /// tokenizer_config.json as read (or as made for a trained tokenizer), written back on save.
    config: Value,
}

/// `"eos_token": "<|im_end|>"` or `"eos_token": {"content": "<|im_end|>", ...}`.
fn token_field(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl TokenizerBundle {
    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json` from a folder.
    pub fn from_dir(dir: &Path) -> Result<TokenizerBundle> {
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            bail!(
                "{} not found: steptune reads the fast-tokenizer file tokenizer.json (save one with transformers' \
                 tokenizer.save_pretrained)",
                tj.display()
            );
        }
        let tokenizer = Tokenizer::from_file(&tj).map_err(|e| anyhow::anyhow!("cannot load {}: {e}", tj.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config: Value = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", cfg_path.display()))?
        } else {
            json!({})
        };
        // The template may be a string, or a list of named templates ("default", "tool_use", ...).
        let chat_template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => None,
        };
        // transformers >= 4.43 may keep the template in its own file.
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        Ok(TokenizerBundle {
            tokenizer,
            chat_template,
            bos_token: token_field(&config, "bos_token"),
            eos_token: token_field(&config, "eos_token"),
            pad_token: token_field(&config, "pad_token"),
            config,
        })
    }

    /// Trains a byte-level BPE (GPT-2 style pre-tokenisation, no prefix space) on `texts`, with the
    /// ChatML special tokens and Qwen3's chat template, as `tokenizer.json` + `tokenizer_config.json`
    /// that transformers' AutoTokenizer loads.
    pub fn train_bpe<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize, min_frequency: u64) -> Result<TokenizerBundle> {
        let specials: Vec<AddedToken> = CHATML_SPECIAL_TOKENS.iter().map(|t| AddedToken::from(t.to_string(), true)).collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let byte_level = ByteLevel::new(false, false, true);
        let mut tk: TokenizerImpl<ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper> =
            TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)));
        tk.with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)));
        tk.with_post_processor(Some(PostProcessorWrapper::ByteLevel(byte_level)));
        tk.train(&mut trainer, texts).map_err(|e| anyhow::anyhow!("training the BPE tokenizer failed: {e}"))?;
        tk.add_special_tokens(&specials);
        let tokenizer = Tokenizer::from(tk);
        let config = json!({
            "tokenizer_class": "Qwen2Tokenizer",
            "add_bos_token": false,
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": null,
            "model_max_length": 32768,
            "clean_up_tokenization_spaces": false,
            "split_special_tokens": false,
            "chat_template": QWEN3_CHAT_TEMPLATE,
        });
        Ok(TokenizerBundle {
            tokenizer,
            chat_template: Some(QWEN3_CHAT_TEMPLATE.to_string()),
            bos_token: None,
            eos_token: Some("<|im_end|>".into()),
            pad_token: Some("<|endoftext|>".into()),
            config,
        })
    }

    /// Writes tokenizer.json and tokenizer_config.json (with the chat template) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tj = dir.join("tokenizer.json");
        self.tokenizer.save(&tj, false).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tj.display()))?;
        let mut config = self.config.clone();
        if let (Some(t), Value::Object(o)) = (&self.chat_template, &mut config) {
            o.insert("chat_template".into(), Value::String(t.clone()));
        }
        crate::run::write_atomic(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&config)?.as_bytes())
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The id of the end-of-sequence token, which must exist for training to teach stopping.
    pub fn eos_id(&self) -> Result<u32> {
        let eos = self.eos_token.as_deref().context("the tokenizer names no eos_token in tokenizer_config.json")?;
        self.token_id(eos).with_context(|| format!("eos_token `{eos}` is not in the tokenizer's vocabulary"))
    }

    /// Content of every added token: chat markers, and control tags such as Qwen3's `<think>`
    /// that are not flagged special but that the chat template acts on.
    pub fn added_tokens(&self) -> Vec<String> {
        self.tokenizer.get_added_tokens_decoder().values().map(|t| t.content.clone()).collect()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}
