//! Issue 14 §3 and §4: `data.over_length: sliding_window` (decoder and seq2seq windows, every
//! answer token learned once, the T5 decoder reading its window's context, a tiny prepare + train
//! run) and `data.mix` (several sources with their own columns, weights and caps, counts per
//! source and split, determinism, namespaced groups, and the recipe's errors).
mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use steptune::data::dedup::text_key;
use steptune::data::encode::{Encoded, IGNORE_INDEX};
use steptune::data::prepare::{self, PrepareOutput, Prepared};
use steptune::data::window::{chat_windows, seq2seq_windows, window_spans, Window};
use steptune::recipe::LoadedRecipe;
use steptune::run::RunDir;

const TINY_MODEL: &str = "model:\n  source: random\n  architecture: qwen3\n  config: {model_type: qwen3, hidden_size: 32}\n  train_tokenizer: {vocab_size: 600, min_frequency: 2}\n";

fn expect_err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Sliding windows on synthetic encodings: the edge cases, exactly.

/// A chat encoding: `prompt` tokens (the template's prefix), then the answer ending with its
/// end-of-turn token 99, then a trailing unlabelled token 98 the template adds.
fn chat_encoding(prompt: usize, answer: usize) -> Encoded {
    let mut input_ids: Vec<u32> = (0..prompt as u32).map(|i| 1000 + i).collect();
    input_ids.extend((0..answer as u32 - 1).map(|i| 2000 + i));
    input_ids.push(99);
    input_ids.push(98);
    let labels = input_ids.iter().enumerate().map(|(i, &t)| if i >= prompt && i < prompt + answer { t as i64 } else { IGNORE_INDEX }).collect();
    Encoded { text: String::new(), prompt_tokens: prompt, answer_tokens: answer, total_tokens: input_ids.len(), input_ids, labels, decoder_reads: None }
}

/// A seq2seq encoding: `prompt` source tokens ending with eos 1, a target of `answer` tokens ending with eos 1.
fn seq2seq_encoding(prompt: usize, answer: usize) -> Encoded {
    let mut input_ids: Vec<u32> = (0..prompt as u32 - 1).map(|i| 1000 + i).collect();
    input_ids.push(1);
    let mut labels: Vec<i64> = (0..answer as i64 - 1).map(|i| 2000 + i).collect();
    labels.push(1);
    Encoded { text: String::new(), prompt_tokens: prompt, answer_tokens: answer, total_tokens: prompt + answer, input_ids, labels, decoder_reads: None }
}

/// Checks one example's chat windows against the whole encoding; returns the answer indices
/// learned, in window order.
fn check_chat_windows(whole: &Encoded, windows: &[(Window, Encoded)], max_len: usize) -> Vec<usize> {
    let p = whole.prompt_tokens;
    let mut learned = Vec::new();
    for (k, (w, e)) in windows.iter().enumerate() {
        assert_eq!((w.index, w.count), (k, windows.len()));
        assert!(e.input_ids.len() <= max_len, "window {k}: {} tokens > {max_len}", e.input_ids.len());
        assert_eq!(e.labels.len(), e.input_ids.len());
        assert_eq!(e.input_ids[..p], whole.input_ids[..p], "window {k} lacks the whole prompt");
        assert_eq!(e.input_ids[p..], whole.input_ids[p + w.answer_start..p + w.answer_end], "window {k} holds another span");
        assert!(e.labels[..p].iter().all(|&l| l == IGNORE_INDEX), "window {k} labels the prompt");
        for (i, &l) in e.labels.iter().enumerate().skip(p) {
            if l != IGNORE_INDEX {
                let answer_index = w.answer_start + i - p;
                assert_eq!(l, whole.input_ids[p + answer_index] as i64);
                learned.push(answer_index);
            }
        }
        assert_eq!(e.answer_tokens, w.answer_end - w.learn_from);
    }
    let (_, last) = windows.last().unwrap();
    assert_eq!(*last.labels.last().unwrap(), whole.labels[p + whole.answer_tokens - 1], "the last window learns the end-of-turn token");
    learned
}

fn check_seq2seq_windows(whole: &Encoded, windows: &[(Window, Encoded)], max_len: usize) -> Vec<usize> {
    let mut learned = Vec::new();
    for (k, (w, e)) in windows.iter().enumerate() {
        assert_eq!((w.index, w.count), (k, windows.len()));
        assert_eq!(e.input_ids, whole.input_ids, "window {k}: the encoder reads the whole prompt");
        assert!(e.labels.len() <= max_len);
        let reads = e.decoder_reads.as_ref().unwrap_or(&e.labels);
        assert_eq!(reads[..], whole.labels[w.answer_start..w.answer_end], "window {k}: the decoder reads its whole span");
        assert_eq!(e.decoder_reads.is_some(), w.learn_from > w.answer_start, "decoder_reads only where labels mask context");
        for (i, &l) in e.labels.iter().enumerate() {
            if l != IGNORE_INDEX {
                assert_eq!(l, whole.labels[w.answer_start + i]);
                learned.push(w.answer_start + i);
            }
        }
    }
    assert_eq!(*windows.last().unwrap().1.labels.last().unwrap(), 1, "the last window learns eos");
    learned
}

#[test]
fn window_spans_cover_each_answer_token_once_at_every_stride() {
    for (len, room) in [(10, 4), (9, 4), (17, 5), (4, 4), (3, 8), (1, 1)] {
        for stride in [Some(1), Some(2), Some(room - 1).filter(|&s| s > 0), Some(room), Some(room + 7), None] {
            let spans = window_spans(len, room, stride);
            let learned: Vec<usize> = spans.iter().flat_map(|w| w.learn_from..w.answer_end).collect();
            assert_eq!(learned, (0..len).collect::<Vec<_>>(), "len {len} room {room} stride {stride:?}: {spans:?}");
            assert!(spans.iter().all(|w| w.answer_end - w.answer_start <= room && w.answer_start <= w.learn_from && w.learn_from < w.answer_end));
            assert_eq!(spans.last().unwrap().answer_end, len);
        }
    }
    // Stride 1 slides one token at a time: len - room + 1 windows, each learning one new token.
    assert_eq!(window_spans(10, 4, Some(1)).len(), 7);
    // A stride at or above the room: windows side by side, nothing repeated as context.
    let side_by_side = window_spans(10, 4, Some(9));
    assert_eq!(side_by_side.iter().map(|w| (w.answer_start, w.answer_end, w.learn_from)).collect::<Vec<_>>(), vec![(0, 4, 0), (4, 8, 4), (8, 10, 8)]);
    // No stride: half the room, rounded up.
    assert_eq!(window_spans(10, 4, None).iter().map(|w| w.answer_start).collect::<Vec<_>>(), vec![0, 2, 4, 6]);
    // An answer that fits is one window that learns all of it.
    assert_eq!(window_spans(4, 4, Some(1)), vec![Window { index: 0, count: 1, answer_start: 0, answer_end: 4, learn_from: 0 }]);
}

#[test]
fn chat_and_seq2seq_windows_keep_the_prompt_and_learn_every_answer_token_once() {
    for stride in [Some(1), Some(3), Some(6), Some(50), None] {
        // Chat: 5 prompt tokens, 23 answer tokens, max_length 11: room 6.
        let whole = chat_encoding(5, 23);
        let windows = chat_windows(&whole, 11, stride).unwrap();
        assert!(windows.len() > 1);
        assert_eq!(check_chat_windows(&whole, &windows, 11), (0..23).collect::<Vec<_>>(), "chat, stride {stride:?}");
        // Seq2seq: a 7-token source, a 23-token target, max_length 7: room 7 over the target.
        let whole = seq2seq_encoding(7, 23);
        let windows = seq2seq_windows(&whole, 7, stride).unwrap();
        assert!(windows.len() > 1);
        assert_eq!(check_seq2seq_windows(&whole, &windows, 7), (0..23).collect::<Vec<_>>(), "seq2seq, stride {stride:?}");
    }
    // An answer that exactly fits: one window, the encoding itself less the unlabelled tail.
    let whole = chat_encoding(5, 6);
    let windows = chat_windows(&whole, 11, Some(2)).unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].1.input_ids[..], whole.input_ids[..11]);
    assert_eq!(windows[0].1.labels[..], whole.labels[..11]);
    let whole = seq2seq_encoding(4, 7);
    let windows = seq2seq_windows(&whole, 7, Some(2)).unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!((windows[0].1.labels.clone(), windows[0].1.decoder_reads.clone()), (whole.labels.clone(), None));
    // A prompt that alone fills max_length leaves no room: no windows (prepare drops and counts it).
    assert!(chat_windows(&chat_encoding(11, 6), 11, None).is_none());
    assert!(seq2seq_windows(&seq2seq_encoding(12, 6), 11, None).is_none());
    // train_on_prompt: the prompt is learned in the first window only.
    let mut whole = chat_encoding(5, 23);
    for i in 0..5 {
        whole.labels[i] = whole.input_ids[i] as i64;
    }
    let windows = chat_windows(&whole, 11, Some(3)).unwrap();
    assert!(windows[0].1.labels[..5].iter().all(|&l| l != IGNORE_INDEX));
    assert!(windows[1..].iter().all(|(_, e)| e.labels[..5].iter().all(|&l| l == IGNORE_INDEX)));
}

// ---------------------------------------------------------------------------------------------
// Sliding windows through `prepare`.

/// 6 intents × 3 paraphrases with procedures of 6 to 11 steps.
fn long_rows() -> String {
    let mut s = String::new();
    for g in 0..6 {
        let steps: Vec<String> = (0..6 + g).map(|k| format!("Open the panel number {k} of device {g} and press the button labelled {}", k * 7 + g)).collect();
        for (p, prompt) in [format!("How do I configure device {g}?"), format!("Steps to set up device {g} please"), format!("I need to configure my device {g} today")].iter().enumerate() {
            s += &serde_json::json!({"prompt": prompt, "output": steps, "group": format!("dev{g}"), "id": format!("g{g}p{p}")}).to_string();
            s.push('\n');
        }
    }
    s
}

fn windows_recipe(dir: &Path, model: &str, data: &str) -> LoadedRecipe {
    common::write(dir, "long.jsonl", long_rows().as_bytes());
    common::recipe_in(dir, &format!("name: w\n{model}data:\n  files: [long.jsonl]\n{data}"))
}

fn by_example(rows: &[Prepared]) -> BTreeMap<(String, usize, &'static str), Vec<&Prepared>> {
    let mut out: BTreeMap<_, Vec<&Prepared>> = BTreeMap::new();
    for e in rows {
        out.entry((e.id.clone(), e.copy, e.split)).or_default().push(e);
    }
    out
}

/// Compares a windowed run with the same data prepared whole; returns the examples windowed.
fn check_prepared_windows(whole: &PrepareOutput, windowed: &PrepareOutput, max_len: usize, seq2seq: bool) -> usize {
    let whole_rows: Vec<&Prepared> = whole.train.iter().chain(&whole.eval).collect();
    let whole_by: BTreeMap<_, _> = whole_rows.iter().map(|e| ((e.id.clone(), e.copy, e.split), *e)).collect();
    let mut n_windowed = 0;
    let mut n_windows = 0;
    for rows in [&windowed.train, &windowed.eval] {
        for (key, windows) in by_example(rows) {
            let original = whole_by[&key];
            if windows.len() == 1 && windows[0].window.is_none() {
                assert!(windows[0].enc.input_ids.len().max(windows[0].enc.labels.len()) <= max_len);
                continue;
            }
            n_windowed += 1;
            n_windows += windows.len();
            let pairs: Vec<(Window, Encoded)> = windows.iter().map(|e| (e.window.unwrap(), e.enc.clone())).collect();
            let (learned, answer_len) = if seq2seq {
                (check_seq2seq_windows(&original.enc, &pairs, max_len), original.enc.labels.len())
            } else {
                (check_chat_windows(&original.enc, &pairs, max_len), original.enc.answer_tokens)
            };
            assert_eq!(learned, (0..answer_len).collect::<Vec<_>>(), "{key:?}: every answer token learned exactly once");
            assert!(windows.iter().all(|e| e.prompt == original.prompt && e.output == original.output && e.group == original.group));
        }
    }
    assert_eq!(windowed.report.length.windowed.len(), n_windowed);
    assert_eq!(windowed.report.length.windows_made, n_windows);
    n_windowed
}

#[test]
fn prepare_cuts_over_long_chat_examples_into_windows() {
    let d = tempfile::tempdir().unwrap();
    let whole = prepare::prepare(&windows_recipe(d.path(), TINY_MODEL, "  max_length: 4096\n")).unwrap();
    let all: Vec<&Prepared> = whole.train.iter().chain(&whole.eval).collect();
    let max_len = all.iter().map(|e| e.enc.prompt_tokens).max().unwrap() + 12;
    let longer = all.iter().filter(|e| e.enc.input_ids.len() > max_len).count();
    assert!(longer > 10, "the data must have over-long rows: {longer}");
    let im_end = whole.tokenizer.tokenizer.token_to_id("<|im_end|>").unwrap() as i64;
    for stride in ["1", "5", "1000", "null"] {
        let r = windows_recipe(d.path(), TINY_MODEL, &format!("  max_length: {max_len}\n  over_length: sliding_window\n  window_stride: {stride}\n"));
        let out = prepare::prepare(&r).unwrap();
        assert_eq!(check_prepared_windows(&whole, &out, max_len, false), longer, "stride {stride}");
        assert!(out.train.iter().filter(|e| e.window.is_some_and(|w| w.index + 1 == w.count)).all(|e| *e.enc.labels.last().unwrap() == im_end));
        assert_eq!(out.report.length.policy, "sliding_window");
        // Deterministic: the same windows again.
        let again = prepare::prepare(&r).unwrap();
        assert_eq!(out.train.iter().map(|e| (&e.enc.input_ids, &e.enc.labels)).collect::<Vec<_>>(), again.train.iter().map(|e| (&e.enc.input_ids, &e.enc.labels)).collect::<Vec<_>>());
    }
    // The report counts the windows.
    let out = prepare::prepare(&windows_recipe(d.path(), TINY_MODEL, &format!("  max_length: {max_len}\n  over_length: sliding_window\n"))).unwrap();
    let md = prepare::report_markdown(&out.report);
    assert!(md.contains(&format!("Cut into sliding windows: {longer} examples, {} windows", out.report.length.windows_made)), "{md}");
    // A prompt that alone fills max_length: that row is dropped and counted, not windowed.
    let min_prompt = all.iter().map(|e| e.enc.prompt_tokens).min().unwrap();
    let tight = all.iter().map(|e| e.enc.prompt_tokens).max().unwrap().max(min_prompt + 1);
    let too_long = all.iter().filter(|e| e.enc.prompt_tokens >= tight).count();
    let out = prepare::prepare(&windows_recipe(d.path(), TINY_MODEL, &format!("  max_length: {tight}\n  over_length: sliding_window\n"))).unwrap();
    assert_eq!(out.report.length.dropped_prompt_too_long.len(), too_long);
    assert!(out.train.iter().chain(&out.eval).all(|e| e.enc.input_ids.len() <= tight && e.enc.prompt_tokens < tight));
}

#[test]
fn prepare_cuts_over_long_seq2seq_targets_into_windows() {
    let t5 = common::shared().join("models/t5-small");
    let model = format!("model: {{source: {}}}\n", t5.display());
    let d = tempfile::tempdir().unwrap();
    let whole = prepare::prepare(&windows_recipe(d.path(), &model, "  max_length: 4096\n")).unwrap();
    let all: Vec<&Prepared> = whole.train.iter().chain(&whole.eval).collect();
    let max_len = all.iter().map(|e| e.enc.input_ids.len()).max().unwrap().max(24);
    let longer = all.iter().filter(|e| e.enc.labels.len() > max_len).count();
    assert!(longer > 10, "{longer} targets over {max_len}");
    for stride in ["1", "7", "1000", "null"] {
        let out = prepare::prepare(&windows_recipe(d.path(), &model, &format!("  max_length: {max_len}\n  over_length: sliding_window\n  window_stride: {stride}\n"))).unwrap();
        assert_eq!(check_prepared_windows(&whole, &out, max_len, true), longer, "stride {stride}");
    }
}

#[test]
fn window_stride_is_checked() {
    let e = expect_err(steptune::recipe::parse("model: {source: random, config: {}}\ndata: {files: [a.jsonl], over_length: sliding_window, window_stride: 0}\n", "r"));
    assert!(e.contains("`data.window_stride` is 0"), "{e}");
    let e = expect_err(steptune::recipe::parse("model: {source: random, config: {}}\ndata: {files: [a.jsonl], over_length: truncate, window_stride: 8}\n", "r"));
    assert!(e.contains("`data.window_stride` is set but `data.over_length` is truncate"), "{e}");
    let e = expect_err(steptune::recipe::parse("model: {source: random, config: {}}\ndata: {files: [a.jsonl], over_length: window}\n", "r"));
    assert!(e.contains("sliding_window"), "the error lists the policies: {e}");
}

/// The T5 decoder of a later window reads the context an earlier window learned: the loss of the
/// same labelled tokens differs when the decoder reads the span versus the masked labels.
#[test]
fn the_t5_decoder_reads_a_windows_context() {
    use steptune::model::t5::{T5Config, T5};
    use steptune::model::source::ModelKind;
    use steptune::train::batches::{collate, TrainExample};
    let cfg = T5Config::from_json(&serde_json::json!({"vocab_size": 64, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 2})).unwrap();
    tch::manual_seed(3);
    let mut w = T5::random_weights(&cfg, tch::Kind::Float, tch::Device::Cpu);
    let model = T5::from_weights(cfg, &mut w, tch::Kind::Float, tch::Device::Cpu).unwrap();
    let window = TrainExample {
        input_ids: vec![5, 6, 7, 1],
        labels: vec![-100, -100, 12, 13, 1],
        group: String::new(),
        prompt: String::new(),
        output: String::new(),
        source: String::new(),
        decoder_reads: Some(vec![10, 11, 12, 13, 1]),
    };
    let plain = TrainExample { decoder_reads: None, ..window.clone() };
    let with_reads = collate(&[&window, &plain], 0, ModelKind::Seq2Seq, tch::Device::Cpu);
    let reads = with_reads.decoder_reads.as_ref().expect("a window's reads reach the batch");
    assert_eq!(Vec::<i64>::try_from(&reads.view([-1])).unwrap(), vec![10, 11, 12, 13, 1, -100, -100, 12, 13, 1]);
    let without = collate(&[&plain], 0, ModelKind::Seq2Seq, tch::Device::Cpu);
    assert!(without.decoder_reads.is_none());
    let loss = |b: &steptune::model::Batch| steptune::model::Model::loss_sum(&model, b, false).unwrap();
    let (both, n) = loss(&with_reads);
    assert_eq!(n, 6);
    let (alone, _) = loss(&without);
    let (window_only, _) = loss(&collate(&[&window], 0, ModelKind::Seq2Seq, tch::Device::Cpu));
    assert!((both.double_value(&[]) - window_only.double_value(&[]) - alone.double_value(&[])).abs() < 1e-4);
    assert!((window_only.double_value(&[]) - alone.double_value(&[])).abs() > 1e-6, "the context changed nothing");
}

#[test]
fn a_tiny_run_prepares_and_trains_on_sliding_windows() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let data = common::repo().join("data/procedures.jsonl");
    let training = "training: {device: cpu, max_steps: 3, per_device_train_batch_size: 4, learning_rate: 3.0e-3, logging_steps: 1, eval_strategy: steps, eval_steps: 3, save_strategy: no}\n";
    let yaml = format!(
        "name: w\noutput_dir: {}\n{}finetune: {{method: full}}\n{training}data:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 30\n  max_length: 64\n  over_length: sliding_window\n  window_stride: 16\n",
        d.path().join("chat").display(),
        common::TINY_QWEN3,
        data.display()
    );
    let r = common::recipe_in(d.path(), &yaml);
    let run = RunDir::create(r.output_dir()).unwrap();
    let out = prepare::run(&r, &run).unwrap();
    assert!(out.report.length.windows_made > out.report.length.windowed.len() && !out.report.length.windowed.is_empty());
    let lines = std::fs::read_to_string(run.path("prepared/train.jsonl")).unwrap();
    assert!(lines.lines().any(|l| l.contains("\"window\":{\"index\":1")), "windows are written with their place");
    let done = steptune::train::run(&r, &run, &steptune::train::TrainOptions::default()).unwrap();
    assert_eq!(done.steps, 3);
    let losses = common::curve(&run.root, "loss");
    assert_eq!(losses.len(), 3);
    assert!(losses.iter().all(|(_, l)| l.is_finite()));

    // T5: the windows' decoder_reads go through the prepared file into training.
    let tok = common::shared().join("models/flan-t5-small");
    let yaml = format!(
        "name: w5\noutput_dir: {}\nmodel:\n  source: random\n  architecture: t5\n  tokenizer: {}\n  config: {{model_type: t5, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 1, num_heads: 4, feed_forward_proj: gated-gelu, tie_word_embeddings: false}}\nfinetune: {{method: full}}\n{training}data:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 30\n  max_length: 40\n  over_length: sliding_window\n  window_stride: 12\n",
        d.path().join("t5").display(),
        tok.display(),
        data.display()
    );
    let r = common::recipe_in(d.path(), &yaml);
    let run = RunDir::create(r.output_dir()).unwrap();
    let out = prepare::run(&r, &run).unwrap();
    assert!(out.report.length.windows_made > 0);
    let lines = std::fs::read_to_string(run.path("prepared/train.jsonl")).unwrap();
    assert!(lines.lines().any(|l| l.contains("\"decoder_reads\":[")));
    let done = steptune::train::run(&r, &run, &steptune::train::TrainOptions::default()).unwrap();
    assert_eq!(done.steps, 3);
    assert!(common::curve(&run.root, "loss").iter().all(|(_, l)| l.is_finite()));
}

// ---------------------------------------------------------------------------------------------
// data.mix

/// Source `a` (JSONL, columns ask / procedure / topic, steps as lists): 10 topics × 3 paraphrases.
fn source_a() -> String {
    let mut s = String::new();
    for g in 0..10 {
        let steps = vec![format!("Open the garden shed {g}"), format!("Take out rake model r{g}"), format!("Sweep leaves into pile {g}")];
        for prompt in [format!("How do I rake leaves with tool {g}?"), format!("What are the steps to clean yard {g} after autumn"), format!("Please explain how one can tidy lawn {g} quickly today")] {
            s += &serde_json::json!({"ask": prompt, "procedure": steps, "topic": format!("topic{g}")}).to_string();
            s.push('\n');
        }
    }
    s
}

/// Source `b` (CSV, columns question_text / how_to / category): 20 categories × 3 paraphrases,
/// whose names `topic0`..`topic19` overlap source a's.
fn source_b() -> String {
    let mut s = String::from("question_text,how_to,category\n");
    for g in 0..20 {
        let steps = format!("1. Boot laptop unit {g}\n2. Launch program p{g}\n3. Click export button {g}");
        for prompt in [format!("How can I export files from program {g}"), format!("Exporting my spreadsheet {g}: which steps"), format!("Guide me through saving document {g} elsewhere")] {
            s += &format!("\"{prompt}\",\"{steps}\",topic{g}\n");
        }
    }
    s
}

fn mix_recipe(dir: &Path, mix: &str, extra: &str) -> LoadedRecipe {
    common::write(dir, "a.jsonl", source_a().as_bytes());
    common::write(dir, "b.csv", source_b().as_bytes());
    common::recipe_in(dir, &format!("name: m\n{TINY_MODEL}data:\n  max_length: 512\n  mix:\n{mix}{extra}"))
}

const A: &str = "    - name: a\n      files: [a.jsonl]\n      columns: {prompt: ask, output: procedure, group: topic}\n";
const B: &str = "    - name: b\n      files: [b.csv]\n      columns: {prompt: question_text, output: how_to, group: category}\n";

fn count(rows: &[Prepared], source: &str) -> usize {
    rows.iter().filter(|e| e.source == source).count()
}

fn ids(out: &PrepareOutput) -> (Vec<String>, Vec<String>) {
    let f = |rows: &[Prepared]| rows.iter().map(|e| format!("{}:{}", e.source, e.id)).collect();
    (f(&out.train), f(&out.eval))
}

#[test]
fn a_mix_of_two_sources_with_their_own_columns_follows_weights_and_caps() {
    let d = tempfile::tempdir().unwrap();
    // No weight and no cap: every row of both; groups namespaced by source.
    let out = prepare::prepare(&mix_recipe(d.path(), &format!("{A}{B}"), "")).unwrap();
    let r = &out.report;
    assert_eq!(r.sources.len(), 2);
    assert_eq!((r.sources[0].rows_loaded, r.sources[0].rows_cleaned, r.sources[1].rows_loaded, r.sources[1].rows_cleaned), (30, 30, 60, 60), "{:?}", r.sources);
    assert_eq!(r.split.groups, 30, "topic0..topic9 of a and of b stay apart");
    assert_eq!((count(&out.train, "a"), count(&out.eval, "a"), count(&out.train, "b"), count(&out.eval, "b")), (20, 10, 40, 20));
    assert!(out.train.iter().chain(&out.eval).all(|e| e.group.starts_with(&format!("{}/topic", e.source))));
    assert!(out.train.iter().filter(|e| e.source == "a").all(|e| e.output.starts_with("1. Open the garden shed")), "a's list became steps");

    // b weighs 0.2 of the mixed train set; a (no weight) fills the rest with all its 20 train rows.
    let b_weighted = B.to_string() + "      weight: 0.2\n";
    let out = prepare::prepare(&mix_recipe(d.path(), &format!("{A}{b_weighted}"), "")).unwrap();
    let r = &out.report;
    assert_eq!((count(&out.train, "a"), count(&out.train, "b")), (20, 5), "20 / 25 and 5 / 25");
    // b's eval is sampled at b's train rate (5 of 40): 20 × 1/8 = 2.5 → 3.
    assert_eq!((count(&out.eval, "a"), count(&out.eval, "b")), (10, 3));
    let b = &r.sources[1];
    assert_eq!((b.train_rows_split, b.eval_rows_split, b.train_rows, b.eval_rows, b.prepared_train, b.prepared_eval), (40, 20, 5, 3, 5, 3));
    assert!((b.train_share - 0.2).abs() < 1e-9);
    assert_eq!(r.split.train_rows, 25);

    // a capped at 12 rows, b weighs 0.5: b matches a's train rows.
    let a_capped = A.to_string() + "      max_rows: 12\n";
    let b_half = B.to_string() + "      weight: 0.5\n";
    let out = prepare::prepare(&mix_recipe(d.path(), &format!("{a_capped}{b_half}"), "")).unwrap();
    let (a, b) = (&out.report.sources[0], &out.report.sources[1]);
    assert_eq!((a.rows_cleaned, a.rows_kept), (30, 12));
    assert_eq!(count(&out.train, "a") + count(&out.eval, "a"), 12);
    assert_eq!(count(&out.train, "b"), count(&out.train, "a"));
    assert_eq!((a.prepared_train, b.prepared_train), (count(&out.train, "a"), count(&out.train, "b")));
    let md = prepare::report_markdown(&out.report);
    assert!(md.contains("## Sources (data.mix)") && md.contains("| a | max_rows 12 | 30 | 0 | 30 | 12 |") && md.contains("| b | weight 0.5 | 60 |"), "{md}");

    // The prepared files carry each row's source; the report lists the files by source.
    let run = RunDir::create(d.path().join("run")).unwrap();
    prepare::write_outputs(&run, &out).unwrap();
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(run.path("prepared/train.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert!(matches!(first["source"].as_str(), Some("a" | "b")), "{first}");
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.path("prepare_report.json")).unwrap()).unwrap();
    assert_eq!(rep["files"][1]["source"], "b");
    assert_eq!(rep["files"][1]["columns"]["prompt"], "question_text");
}

#[test]
fn a_mix_is_deterministic_for_a_seed_and_keeps_every_prompt_in_one_split() {
    let d = tempfile::tempdir().unwrap();
    let mix = format!("{A}      max_rows: 20\n{B}      weight: 0.3\n");
    let one = prepare::prepare(&mix_recipe(d.path(), &mix, "")).unwrap();
    let two = prepare::prepare(&mix_recipe(d.path(), &mix, "")).unwrap();
    assert_eq!(ids(&one), ids(&two));
    let other = prepare::prepare(&mix_recipe(d.path(), &mix, "seed: 9\n")).unwrap();
    assert_ne!(ids(&one), ids(&other), "another seed samples other rows");
    for out in [&one, &other] {
        let train: HashSet<String> = out.train.iter().map(|e| text_key(&e.prompt)).collect();
        assert!(out.eval.iter().all(|e| !train.contains(&text_key(&e.prompt))), "a prompt in both splits");
        // A group's rows, in either split, all come from one source.
        let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in out.train.iter().chain(&out.eval) {
            groups.entry(&e.group).or_default().insert(&e.source);
        }
        assert!(groups.len() > 10 && groups.values().all(|sources| sources.len() == 1), "{groups:?}");
    }
    // The same prompt in two sources is one prompt: deduplicated over the union, kept from the first source.
    let dup = "{\"ask\": \"How can I export files from program 3\", \"procedure\": [\"Boot laptop unit 3\", \"Launch program p3\", \"Click export button 3\"], \"topic\": \"x\"}\n";
    common::write(d.path(), "a.jsonl", (source_a() + dup).as_bytes());
    let r = common::recipe_in(d.path(), &format!("name: m\n{TINY_MODEL}data:\n  max_length: 512\n  mix:\n{A}{B}"));
    let out = prepare::prepare(&r).unwrap();
    assert_eq!(out.report.dedup.exact.len(), 1);
    assert_eq!(out.report.sources[1].rows_cleaned, 59);
}

#[test]
fn mix_recipe_errors_name_the_key() {
    let base = "model: {source: random, config: {}}\n";
    let err = |data: &str| expect_err(steptune::recipe::parse(&format!("{base}data:\n{data}"), "r.yaml"));
    let e = err("  mix:\n    - {name: a, files: [a.jsonl]}\n    - {name: b, files: [b.csv], wieght: 0.5}\n");
    assert!(e.contains("unknown key `data.mix[1].wieght`") && e.contains("did you mean `data.mix[1].weight`"), "{e}");
    let e = err("  mix:\n    - {name: a, files: [a.jsonl], group: topic}\n");
    assert!(e.contains("`data.mix[0].group`") && e.contains("data.mix[0].columns.group"), "{e}");
    for w in ["0", "1.5", "-0.2"] {
        let e = err(&format!("  mix:\n    - {{name: a, files: [a.jsonl]}}\n    - {{name: b, files: [b.csv], weight: {w}}}\n"));
        assert!(e.contains(&format!("`data.mix[1].weight` is {}", w.parse::<f64>().unwrap())) && e.contains("(0, 1]"), "{e}");
    }
    let e = err("  mix:\n    - {name: a, files: [a.jsonl]}\n    - {name: b, files: [b.csv], weight: 0.5, max_rows: 10}\n");
    assert!(e.contains("`data.mix[1].weight` and `data.mix[1].max_rows` are both set") && e.contains("`b`"), "{e}");
    let e = err("  files: [x.jsonl]\n  mix:\n    - {name: a, files: [a.jsonl]}\n");
    assert!(e.contains("`data.mix` and `data.files` are both set"), "{e}");
    let e = err("  mix:\n    - {name: a, files: [a.jsonl], weight: 0.5}\n    - {name: b, files: [b.csv], weight: 0.3}\n");
    assert!(e.contains("weights sum to 0.8") && e.contains("must sum to 1"), "{e}");
    let e = err("  mix:\n    - {name: a, files: [a.jsonl]}\n    - {name: a, files: [b.csv], max_rows: 0}\n");
    assert!(e.contains("`data.mix[1].name` `a` is used by an earlier source") && e.contains("`data.mix[1].max_rows` is 0"), "{e}");
    let e = err("  mix:\n    - {name: a, files: []}\n");
    assert!(e.contains("`data.mix[0].files` is empty"), "{e}");
    // A missing file: prepare names the source's key and the file.
    let d = tempfile::tempdir().unwrap();
    let r = mix_recipe(d.path(), &format!("{A}    - name: c\n      files: [nowhere.jsonl]\n"), "");
    let e = expect_err(prepare::prepare(&r));
    assert!(e.contains("data.mix[1] (c).files: nowhere.jsonl") && e.contains("not found"), "{e}");
    // A column a source lacks names the file and what it has.
    let r = mix_recipe(d.path(), &format!("{A}    - name: b\n      files: [b.csv]\n      columns: {{prompt: ask}}\n"), "");
    let e = expect_err(prepare::prepare(&r));
    assert!(e.contains("b.csv") && e.contains("column `ask`") && e.contains("question_text"), "{e}");
}
