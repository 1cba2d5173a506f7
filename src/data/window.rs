//! `data.over_length: sliding_window`: an example longer than `max_length` becomes several
//! windows, each with the whole prompt and a span of the answer.
//!
//! A window holds as many answer tokens as fit beside the prompt (its room); the next window
//! starts `stride` answer tokens later. Where two windows overlap, the tokens the earlier window
//! learned are context in the later one (labelled IGNORE_INDEX), so every answer token, the
//! closing end-of-turn or eos included, is learned in exactly one window, as a strided perplexity
//! evaluation scores each token once. The last window always ends with that closing token.
use serde::Serialize;

use super::encode::{Encoded, IGNORE_INDEX};

/// One window as answer-token indices: it holds answer tokens [answer_start, answer_end) and
/// learns [learn_from, answer_end); the ones before `learn_from` are context only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// 0-based place among the example's windows.
    pub index: usize,
    pub count: usize,
    pub answer_start: usize,
    pub answer_end: usize,
    pub learn_from: usize,
}

/// The windows over an answer of `answer_len` tokens, `room` answer tokens each, starting
/// `stride` tokens apart; a stride at or above the room puts windows side by side (no overlap,
/// no gap). Without a stride: half the room, rounded up. `room` and `stride` are at least 1.
pub fn window_spans(answer_len: usize, room: usize, stride: Option<usize>) -> Vec<Window> {
    assert!(room >= 1, "a window needs room for at least one answer token");
    let step = stride.unwrap_or(room.div_ceil(2)).clamp(1, room);
    let mut spans = Vec::new();
    let (mut start, mut learned_to) = (0, 0);
    loop {
        let end = (start + room).min(answer_len);
        spans.push(Window { index: spans.len(), count: 0, answer_start: start, answer_end: end, learn_from: learned_to });
        if end >= answer_len {
            break;
        }
        learned_to = end;
        start += step;
    }
    let count = spans.len();
    spans.iter_mut().for_each(|w| w.count = count);
    spans
}

/// Chat windows of one encoded conversation: the prompt's `prompt_tokens` (the chat template's
/// prefix up to the opened assistant turn), then answer tokens [answer_start, answer_end). The
/// tokens a template adds after the end-of-turn carry no label and are left out.
/// Each window's input_ids: [prompt_tokens + (answer_end - answer_start)] ≤ max_length.
/// `None` when the prompt alone leaves no room for an answer token.
pub fn chat_windows(enc: &Encoded, max_length: usize, stride: Option<usize>) -> Option<Vec<(Window, Encoded)>> {
    let prompt_len = enc.prompt_tokens;
    if prompt_len >= max_length {
        return None;
    }
    let answer = prompt_len..prompt_len + enc.answer_tokens;
    let windows = window_spans(enc.answer_tokens, max_length - prompt_len, stride);
    Some(
        windows
            .into_iter()
            .map(|w| {
                let span = answer.start + w.answer_start..answer.start + w.answer_end;
                let mut input_ids = enc.input_ids[..prompt_len].to_vec();
                input_ids.extend_from_slice(&enc.input_ids[span.clone()]);
                // train_on_prompt labels the prompt: in the first window only, so it too is learned once.
                let mut labels: Vec<i64> = if w.index == 0 { enc.labels[..prompt_len].to_vec() } else { vec![IGNORE_INDEX; prompt_len] };
                labels.extend(span.enumerate().map(|(k, i)| if w.answer_start + k >= w.learn_from { enc.labels[i] } else { IGNORE_INDEX }));
                let window = Encoded {
                    text: enc.text.clone(),
                    total_tokens: input_ids.len(),
                    prompt_tokens: prompt_len,
                    answer_tokens: w.answer_end - w.learn_from,
                    input_ids,
                    labels,
                    decoder_reads: None,
                };
                (w, window)
            })
            .collect(),
    )
}

/// Seq2seq windows over the target: the encoder reads the whole prompt in every window
/// (input_ids: [source ≤ max_length]); the decoder reads the target span
/// (decoder_reads: [answer_end - answer_start ≤ max_length]) and learns its new part.
/// `None` when the prompt alone is longer than max_length.
pub fn seq2seq_windows(enc: &Encoded, max_length: usize, stride: Option<usize>) -> Option<Vec<(Window, Encoded)>> {
    if enc.input_ids.len() > max_length {
        return None;
    }
    let target = &enc.labels;
    let windows = window_spans(target.len(), max_length, stride);
    Some(
        windows
            .into_iter()
            .map(|w| {
                let reads = target[w.answer_start..w.answer_end].to_vec();
                let labels: Vec<i64> = reads.iter().enumerate().map(|(k, &t)| if w.answer_start + k >= w.learn_from { t } else { IGNORE_INDEX }).collect();
                let window = Encoded {
                    text: enc.text.clone(),
                    prompt_tokens: enc.input_ids.len(),
                    answer_tokens: w.answer_end - w.learn_from,
                    total_tokens: enc.input_ids.len() + labels.len(),
                    input_ids: enc.input_ids.clone(),
                    decoder_reads: (w.learn_from > w.answer_start).then_some(reads),
                    labels,
                };
                (w, window)
            })
            .collect(),
    )
}

