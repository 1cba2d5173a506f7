//! Turning a (prompt, steps) pair into token ids and labels.
//!
//! Chat models: the model's own chat template (`model::chat_template`), thinking off. Labels cover the
//! assistant's answer and its closing end-of-turn token, so the model learns to stop; everything
//! else is -100. Seq2seq models (T5): source = prompt, target = steps + eos.
use anyhow::{bail, Result};
use serde::Serialize;

use crate::model::chat_template::{chat_messages, ChatTemplate};
use crate::model::tokenizer::TokenizerBundle;

pub const IGNORE_INDEX: i64 = -100;

/// One example as the model sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Encoded {
    /// The rendered text (chat models) or the source text (seq2seq).
    pub text: String,
    pub input_ids: Vec<u32>,
    /// Per position of `input_ids` (chat) or the decoder targets (seq2seq); -100 where masked.
    pub labels: Vec<i64>,
    /// Tokens before the answer.
    pub prompt_tokens: usize,
    /// Labelled tokens: the answer and its end-of-turn (chat) or eos (seq2seq).
    pub answer_tokens: usize,
    /// Chat: the whole sequence (the template may add tokens after the answer). Seq2seq: encoder
    /// plus decoder tokens.
    pub total_tokens: usize,
    /// Seq2seq sliding windows after the first: the window's whole target span, which the decoder
    /// reads (shifted right) as context while `labels` masks the tokens an earlier window learned.
    /// Absent: the decoder reads the labels, as transformers does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_reads: Option<Vec<i64>>,
}

/// Renders prompt-only and full conversations, tokenises both (batched), and labels the tokens
/// after the prompt up to and including the first end-of-turn token.
pub struct ChatEncoder<'a> {
    pub tok: &'a TokenizerBundle,
    pub template: ChatTemplate,
    pub system: Option<String>,
    pub enable_thinking: bool,
    /// Label the prompt's tokens too (the template's markers included).
    pub train_on_prompt: bool,
    eos_id: u32,
}

impl<'a> ChatEncoder<'a> {
    pub fn new(tok: &'a TokenizerBundle, template: ChatTemplate, system: Option<String>, enable_thinking: bool) -> Result<Self> {
        let eos_id = tok.eos_id()?;
        Ok(ChatEncoder { tok, template, system, enable_thinking, train_on_prompt: false, eos_id })
    }

    /// The text a generation starts from: the prompt and the opened assistant turn.
    pub fn prompt_text(&self, prompt: &str) -> Result<String> {
        self.template.render(&chat_messages(self.system.as_deref(), prompt, None), true, self.enable_thinking)
    }

    /// Encodes many pairs; an error for one pair names its index.
    pub fn encode_batch(&self, pairs: &[(&str, &str)]) -> Vec<Result<Encoded>> {
        let mut prompts = Vec::with_capacity(pairs.len());
        let mut fulls = Vec::with_capacity(pairs.len());
        let mut render_err = vec![None; pairs.len()];
        for (i, (p, a)) in pairs.iter().enumerate() {
            let r = self.prompt_text(p).and_then(|pt| {
                let full = self.template.render(&chat_messages(self.system.as_deref(), p, Some(a)), false, self.enable_thinking)?;
                Ok((pt, full))
            });
            match r {
                Ok((pt, full)) => {
                    prompts.push(pt);
                    fulls.push(full);
                }
                Err(e) => {
                    render_err[i] = Some(e.to_string());
                    prompts.push(String::new());
                    fulls.push(String::new());
                }
            }
        }
        let enc = |texts: &[String]| -> Result<Vec<Vec<u32>>> {
            let encs = self.tok.tokenizer.encode_batch(texts.to_vec(), false).map_err(|e| anyhow::anyhow!("tokenisation failed: {e}"))?;
            Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
        };
        let (prompt_ids, full_ids) = match (enc(&prompts), enc(&fulls)) {
            (Ok(p), Ok(f)) => (p, f),
            (Err(e), _) | (_, Err(e)) => return pairs.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect(),
        };
        let mut out = Vec::with_capacity(pairs.len());
        for (i, ((pids, fids), full)) in prompt_ids.into_iter().zip(full_ids).zip(fulls).enumerate() {
            if let Some(e) = render_err[i].take() {
                out.push(Err(anyhow::anyhow!(e)));
                continue;
            }
            out.push(self.label(&pids, fids, full));
        }
        out
    }

    fn label(&self, prompt_ids: &[u32], full_ids: Vec<u32>, text: String) -> Result<Encoded> {
        // The prompt's tokens must be a prefix of the full conversation's; a template whose prompt
        // and answer merge into one token at the seam cannot be masked exactly.
        if !full_ids.starts_with(prompt_ids) {
            bail!("the tokens of the prompt are not a prefix of the tokens of the whole conversation (the template joins prompt and answer inside one token)");
        }
        let start = prompt_ids.len();
        let Some(eos_at) = full_ids[start..].iter().position(|&t| t == self.eos_id).map(|p| start + p) else {
            bail!("the rendered conversation has no end-of-turn token after the answer");
        };
        let labels: Vec<i64> = full_ids
            .iter()
            .enumerate()
            .map(|(i, &t)| if (i >= start || self.train_on_prompt) && i <= eos_at { t as i64 } else { IGNORE_INDEX })
            .collect();
        Ok(Encoded { text, prompt_tokens: start, answer_tokens: eos_at + 1 - start, total_tokens: full_ids.len(), input_ids: full_ids, labels, decoder_reads: None })
    }
}

/// Seq2seq: the encoder reads the prompt, the decoder learns the steps; both end with eos as the
/// tokenizer's post-processor adds it (T5 appends `</s>`).
pub fn encode_seq2seq_batch(tok: &TokenizerBundle, pairs: &[(&str, &str)]) -> Result<Vec<Encoded>> {
    let sources: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let targets: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let src = tok.tokenizer.encode_batch(sources, true).map_err(|e| anyhow::anyhow!("tokenisation failed: {e}"))?;
    let tgt = tok.tokenizer.encode_batch(targets, true).map_err(|e| anyhow::anyhow!("tokenisation failed: {e}"))?;
    Ok(pairs
        .iter()
        .zip(src.into_iter().zip(tgt))
        .map(|(p, (s, t))| {
            let input_ids = s.get_ids().to_vec();
            let labels: Vec<i64> = t.get_ids().iter().map(|&x| x as i64).collect();
            Encoded { text: p.0.to_string(), prompt_tokens: input_ids.len(), answer_tokens: labels.len(), total_tokens: input_ids.len() + labels.len(), input_ids, labels, decoder_reads: None }
        })
        .collect())
}
