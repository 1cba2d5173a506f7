//! The T5 encoder-decoder equals transformers 5.23 on both variants: original T5 (t5-small
//! shape: ReLU, tied and scaled head) and v1.1 / flan-t5 (flan-t5-small shape: gated gelu_new,
//! own lm_head, no scaling). Full-size checks rebuild the random checkpoint from a seed (libtorch's
//! generator is the same in torch and tch) and compare encoder states, teacher-forced logits, the
//! loss, the gradient of every weight and greedy generation with the cache; tiny committed
//! checkpoints check loading, saving, the real tokenizer and generation end to end.
//! Fixtures: scripts/make_t5_fixtures.py.
mod common;

use std::path::PathBuf;

use serde_json::Value;
use steptune::model::generate::GenerateConfig;
use steptune::model::t5::{weight_specs, T5Config, T5};
use steptune::model::tokenizer::TokenizerBundle;
use steptune::model::{load_t5, save_t5};
use steptune::nn::weights;
use tch::{Device, Kind, Tensor};

fn dir(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/models").join(name)
}

fn expected(name: &str) -> weights::Weights {
    weights::read_file(&dir(name).join("expected.safetensors"), None, Device::Cpu, &|_| true).unwrap()
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(name).join("fixture.json")).unwrap()).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    let (b, n) = (t.size()[0], t.size()[1]);
    (0..b).map(|r| Vec::<i64>::try_from(&t.get(r).view([n])).unwrap()).collect()
}

/// Expected generation rows are -1 padded after eos.
fn trimmed(t: &Tensor) -> Vec<Vec<i64>> {
    rows(t).into_iter().map(|r| r.into_iter().filter(|&x| x >= 0).collect()).collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// max |a - b| / max |b|: a relative error that tiny entries cannot blow up.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(a, b) / b.abs().max().double_value(&[]).max(1e-30)
}

/// libtorch's default generator is process-wide and tests run on parallel threads: every seeded
/// draw holds this lock from `manual_seed` to its last tensor.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fixture's checkpoint: `tch::manual_seed(seed)`, then each weight `randn * std + mean`
/// in the listed order, exactly as the Python generator drew it.
fn seeded_weights(fx: &Value) -> (Vec<String>, weights::Weights) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(fx["seed"].as_i64().unwrap());
    let mut names = Vec::new();
    let mut w = weights::Weights::new();
    for spec in fx["weights"].as_array().unwrap() {
        let name = spec[0].as_str().unwrap().to_string();
        let shape: Vec<i64> = spec[1].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        let (mean, std) = (spec[2].as_f64().unwrap(), spec[3].as_f64().unwrap());
        let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * std + mean;
        names.push(name.clone());
        w.insert(name, t);
    }
    (names, w)
}

#[test]
fn tch_randn_is_bit_identical_to_torch() {
    for name in ["t5_small_seeded", "flan_t5_small_seeded"] {
        let e = expected(name);
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(fixture(name)["seed"].as_i64().unwrap() + 1);
        let got = Tensor::randn([64], (Kind::Float, Device::Cpu));
        assert!(got.equal(&e["randn_probe"]), "{name}: tch's randn differs from torch's for the same seed");
    }
}

/// Everything the full-size fixture holds, for one variant.
fn check_seeded(name: &str, scaled: bool) {
    let fx = fixture(name);
    let e = expected(name);
    let cfg = T5Config::from_json(&fx["config"]).unwrap();
    assert_eq!(cfg.scale_decoder_outputs, scaled, "{name}: scaling read from the config");
    let (names, mut w) = seeded_weights(&fx);
    // Our own spec list names the same tensors in the same order (so random_weights draws alike).
    let ours: Vec<String> = weight_specs(&cfg).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(ours, names, "{name}: weight_specs differs from the fixture's list");
    for t in w.values_mut() {
        *t = t.set_requires_grad(true);
    }
    let model = T5::from_weights(cfg, &mut w, Kind::Float, Device::Cpu).unwrap();
    assert!(w.is_empty());
    assert_eq!(model.lm_head.is_none(), scaled, "{name}: the head is tied exactly for original T5");
    let saved: Vec<String> = model.named_weights().into_iter().map(|(n, _)| n).collect();
    let mut sorted_names = names.clone();
    sorted_names.sort();
    let mut sorted_saved = saved.clone();
    sorted_saved.sort();
    assert_eq!(sorted_saved, sorted_names, "{name}: named_weights");

    let (ids, mask, labels) = (&e["input_ids"], &e["attention_mask"], &e["labels"]);
    // Encoder.
    let enc = tch::no_grad(|| model.encode(ids, mask, false));
    let d_sum = rel(&enc.sum_dim_intlist(-1, false, Kind::Float), &e["enc_sum"]);
    let d_sq = rel(&enc.pow_tensor_scalar(2).sum_dim_intlist(-1, false, Kind::Float), &e["enc_sumsq"]);
    let d_head = max_abs(&enc.narrow(2, 0, 16), &e["enc_head"]);
    eprintln!("{name}: encoder rel Δsum {d_sum:.2e}, rel Δsumsq {d_sq:.2e}, max |Δ| first 16 dims {d_head:.2e}");
    assert!(d_sum < 1e-4 && d_sq < 1e-5 && d_head < 1e-4, "{name}: encoder states differ");

    // Teacher-forced logits.
    let logits = tch::no_grad(|| model.forward(ids, mask, labels, false)); // [b, t, V]
    let at = logits.index_select(2, &e["vocab_index"]);
    let scale = e["logits_at"].abs().max().double_value(&[]);
    let d_at = max_abs(&at, &e["logits_at"]);
    let d_lse = max_abs(&logits.logsumexp([-1], false), &e["logits_lse"]);
    let d_max = max_abs(&logits.amax([-1], false), &e["logits_max"]);
    eprintln!("{name}: logits max |Δ| {d_at:.2e} (max |logit| {scale:.1}, rel {:.2e}), logsumexp {d_lse:.2e}, max {d_max:.2e}", d_at / scale);
    assert!(d_at <= 1e-4 * scale.max(1.0) && d_lse <= 1e-4 * scale.max(1.0) && d_max <= 1e-4 * scale.max(1.0), "{name}: logits differ");
    assert!(logits.argmax(-1, false).equal(&e["logits_argmax"]), "{name}: argmax of the logits differs");

    // Loss and gradients (dropout off, as the fixture's eval-mode backward).
    let (sum, n) = model.loss_sum(ids, mask, labels, false).unwrap();
    let labelled = labels.ne(-100).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(n, labelled);
    let loss = sum / n as f64;
    let want = e["loss"].double_value(&[0]);
    let d_loss = (loss.double_value(&[]) - want).abs() / want.abs();
    eprintln!("{name}: loss {} vs {want}, rel {d_loss:.2e}", loss.double_value(&[]));
    assert!(d_loss < 1e-5, "{name}: loss differs");
    loss.backward();
    let named: std::collections::BTreeMap<String, Tensor> = model.named_weights().into_iter().collect();
    let norms = Tensor::stack(&names.iter().map(|n| named[n].grad().norm()).collect::<Vec<_>>(), 0);
    let want_norms = &e["grad_norms"];
    // Gradients go back through 12 fp32 layers; their rounding follows the summation order the
    // CPU's vector width sets. Against fixtures made on an Intel CPU, an AMD EPYC gives up to
    // 6.6e-4 (t5-small's position-bias table: softmax gradients cancel across keys, so what is left
    // is small against its terms), 4.6e-4 (the tied `shared` rows) and 1.5e-4 (an encoder `wo`);
    // flan-t5 stays below 1e-5. Bound: 1e-3, where a real error is of order 1.
    const GRAD_BOUND: f64 = 1e-3;
    let rel_norms = (&norms - want_norms).abs() / want_norms.clamp_min(1e-12);
    let d_norms = rel_norms.max().double_value(&[]);
    let worst = rel_norms.argmax(0, false).int64_value(&[]) as usize;
    eprintln!(
        "{name}: gradient norms of all {} weights: max rel Δ {d_norms:.2e} ({}: {} vs {})",
        names.len(),
        names[worst],
        norms.double_value(&[worst as i64]),
        want_norms.double_value(&[worst as i64]),
    );
    assert!(d_norms < GRAD_BOUND, "{name}: gradient norms differ");
    let rows_idx = &e["grad_rows"];
    for (key, want) in e.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let wname = &key["grad.".len()..];
        let g = named[wname].grad();
        let got = match wname {
            "shared.weight" | "lm_head.weight" => g.index_select(0, rows_idx),
            _ if want.size() != g.size() => g.narrow(0, 0, want.size()[0]),
            _ => g,
        };
        let r = rel(&got, want);
        eprintln!("{name}: grad {wname} slice {:?}: rel Δ {r:.2e}", want.size());
        assert!(r < GRAD_BOUND, "{name}: gradient of {wname} differs");
    }

    // Greedy generation with the cache: a right-padded batch with two eos ids, and one prompt.
    let eos: Vec<i64> = fx["eos_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let got = model.greedy_generate(&e["gen_ids"], &e["gen_mask"], 24, &eos);
    let want = trimmed(&e["gen_out"]);
    assert!(want.iter().any(|r| r.len() < 24), "{name}: the fixture should stop a row early");
    assert_eq!(got, want, "{name}: batched greedy generation differs");
    let got = model.greedy_generate(&e["single_ids"], &e["single_ids"].ones_like(), 24, &[1]);
    assert_eq!(got, trimmed(&e["single_out"]), "{name}: single-prompt greedy generation differs");
}

#[test]
fn t5_small_equals_transformers() {
    check_seeded("t5_small_seeded", true);
}

#[test]
fn flan_t5_small_equals_transformers() {
    check_seeded("flan_t5_small_seeded", false);
}

fn check_tiny_against_fixture(model: &T5, name: &str) {
    let e = expected(name);
    let (ids, mask, labels) = (&e["prompt_ids"], &e["prompt_mask"], &e["labels"]);
    let logits = tch::no_grad(|| model.forward(ids, mask, labels, false));
    let scale = e["logits_at"].abs().max().double_value(&[]).max(1.0);
    let d_at = max_abs(&logits.index_select(2, &e["vocab_index"]), &e["logits_at"]);
    let d_lse = max_abs(&logits.logsumexp([-1], false), &e["logits_lse"]);
    assert!(d_at < 1e-4 * scale && d_lse < 1e-4 * scale, "{name}: logits differ by {d_at:e} / lse {d_lse:e}");
    assert!(logits.argmax(-1, false).equal(&e["logits_argmax"]), "{name}: argmax differs");
    let (sum, n) = tch::no_grad(|| model.loss_sum(ids, mask, labels, false).unwrap());
    let want = e["loss"].double_value(&[0]);
    assert!(((sum.double_value(&[]) / n as f64) - want).abs() < 1e-5 * want, "{name}: loss differs");
    let got = model.greedy_generate(ids, mask, 16, &[1]);
    assert_eq!(got, trimmed(&e["gen_out"]), "{name}: greedy generation differs");
}

#[test]
fn tiny_checkpoints_load_and_equal_transformers() {
    for (name, scaled) in [("t5_tiny_orig", true), ("t5_tiny_v11", false)] {
        let model = load_t5(&dir(name), Kind::Float, Device::Cpu).unwrap();
        assert_eq!(model.cfg.scale_decoder_outputs, scaled, "{name}");
        assert_eq!(model.lm_head.is_some(), !scaled, "{name}: untied head exactly when the checkpoint has lm_head.weight");
        assert_eq!(model.cfg.is_gated_act, !scaled, "{name}");
        check_tiny_against_fixture(&model, name);
    }
}

#[test]
fn flan_tokenizer_and_generation_run_end_to_end() {
    let tok = TokenizerBundle::from_dir(&common::shared().join("models/flan-t5-small")).unwrap();
    let fx = fixture("t5_tiny_v11");
    let e = expected("t5_tiny_v11");
    let prompts: Vec<Vec<i64>> = fx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| tok.tokenizer.encode(p.as_str().unwrap(), true).unwrap().get_ids().iter().map(|&i| i as i64).collect())
        .collect();
    // The tokenizer (with its `</s>`) gives transformers' ids, which right padding then batches.
    let want_ids: Vec<Vec<i64>> = rows(&e["prompt_ids"]).into_iter().zip(rows(&e["prompt_mask"])).map(|(r, m)| r.into_iter().zip(m).filter(|(_, m)| *m == 1).map(|(t, _)| t).collect()).collect();
    assert_eq!(prompts, want_ids);
    assert!(prompts.iter().all(|p| *p.last().unwrap() == 1), "T5 prompts end in eos");
    let model = load_t5(&dir("t5_tiny_v11"), Kind::Float, Device::Cpu).unwrap();
    let cfg = GenerateConfig { max_new_tokens: 16, eos_ids: vec![1], pad_id: 0, ..Default::default() };
    let out = model.generate(&prompts, &cfg);
    assert_eq!(out, trimmed(&e["gen_out"]), "generation from tokenizer ids differs from transformers");
    for ids in &out {
        let keep: Vec<u32> = ids.iter().filter(|&&t| t != 1).map(|&t| t as u32).collect();
        let text = tok.tokenizer.decode(&keep, true).unwrap();
        assert!(!text.trim().is_empty(), "decoded generation is empty for {ids:?}");
    }
}

#[test]
fn saving_and_reloading_keeps_the_logits_and_accepts_embed_tokens_copies() {
    let e = expected("t5_tiny_v11");
    let (ids, mask, labels) = (&e["prompt_ids"], &e["prompt_mask"], &e["labels"]);
    for name in ["t5_tiny_orig", "t5_tiny_v11"] {
        let model = load_t5(&dir(name), Kind::Float, Device::Cpu).unwrap();
        let d = tempfile::tempdir().unwrap();
        save_t5(&model, d.path(), None).unwrap();
        let again = load_t5(d.path(), Kind::Float, Device::Cpu).unwrap();
        assert_eq!(again.cfg, model.cfg, "{name}: config round trip");
        let (a, b) = tch::no_grad(|| (model.forward(ids, mask, labels, false), again.forward(ids, mask, labels, false)));
        assert_eq!(max_abs(&a, &b), 0.0, "{name}: reloaded logits differ");
        let saved = weights::read_file(&d.path().join("model.safetensors"), None, Device::Cpu, &|_| true).unwrap();
        assert_eq!(saved.contains_key("lm_head.weight"), name == "t5_tiny_v11", "{name}: lm_head saved only when untied");
        // Older checkpoints also store the embedding under both stacks' names: accepted, dropped.
        let mut with_copies: Vec<(String, Tensor)> = saved.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
        for copy in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
            with_copies.push((copy.to_string(), saved["shared.weight"].shallow_clone()));
        }
        let refs: Vec<(String, &Tensor)> = with_copies.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::write_file(&d.path().join("model.safetensors"), &refs).unwrap();
        let third = load_t5(d.path(), Kind::Float, Device::Cpu).unwrap();
        let c = tch::no_grad(|| third.forward(ids, mask, labels, false));
        assert_eq!(max_abs(&a, &c), 0.0, "{name}: embed_tokens copies changed the model");
    }
}

#[test]
fn a_checkpoint_missing_a_weight_is_named() {
    let d = tempfile::tempdir().unwrap();
    let src = dir("t5_tiny_orig");
    std::fs::copy(src.join("config.json"), d.path().join("config.json")).unwrap();
    let w = weights::read_model_dir(&src, None, Device::Cpu, &|n| n != "decoder.block.1.layer.2.DenseReluDense.wo.weight").unwrap();
    let refs: Vec<(String, &Tensor)> = w.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&d.path().join("model.safetensors"), &refs).unwrap();
    let err = format!("{:#}", load_t5(d.path(), Kind::Float, Device::Cpu).err().unwrap());
    assert!(err.contains("decoder.block.1.layer.2.DenseReluDense.wo.weight"), "{err}");
}

#[test]
fn random_weights_follow_transformers_init() {
    let cfg = T5Config::from_json(&serde_json::from_str(&std::fs::read_to_string(dir("t5_tiny_v11").join("config.json")).unwrap()).unwrap()).unwrap();
    let cfg = T5Config { d_model: 64, d_kv: 16, d_ff: 128, vocab_size: 4000, ..cfg };
    let mut w = {
        let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(7);
        T5::random_weights(&cfg, Kind::Float, Device::Cpu)
    };
    for (name, shape, std) in weight_specs(&cfg) {
        let t = &w[&name];
        assert_eq!(t.size(), shape, "{name}");
        match std {
            None => assert!(t.equal(&t.ones_like()), "{name}: norms start at one"),
            Some(s) => {
                let got = t.std(true).double_value(&[]);
                assert!((got / s - 1.0).abs() < 0.2, "{name}: std {got} vs transformers' {s}");
            }
        }
    }
    let model = T5::from_weights(cfg, &mut w, Kind::Float, Device::Cpu).unwrap();
    assert!(w.is_empty() && model.lm_head.is_some());
    // 2 blocks x (4 attention + 3 ff) encoder + 2 x (8 + 3) decoder projections for LoRA.
    let names: Vec<String> = model.linears().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2 * 7 + 2 * 11);
    assert!(names.contains(&"decoder.block.1.layer.1.EncDecAttention.v".to_string()));
    assert!(names.contains(&"encoder.block.0.layer.1.DenseReluDense.wi_1".to_string()));
    assert!(names.contains(&"decoder.block.0.layer.2.DenseReluDense.wo".to_string()));
}

#[test]
fn dropout_is_active_only_in_training() {
    let model = load_t5(&dir("t5_tiny_v11"), Kind::Float, Device::Cpu).unwrap();
    let e = expected("t5_tiny_v11");
    let (ids, mask, labels) = (&e["prompt_ids"], &e["prompt_mask"], &e["labels"]);
    // Dropout draws from the shared generator too.
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let eval = || tch::no_grad(|| model.loss_sum(ids, mask, labels, false).unwrap().0.double_value(&[]));
    let train = || tch::no_grad(|| model.loss_sum(ids, mask, labels, true).unwrap().0.double_value(&[]));
    assert_eq!(eval(), eval());
    let (a, b) = (train(), train());
    assert!(a != b && a != eval(), "dropout_rate 0.1 should change the training loss ({a}, {b}, {})", eval());
}

#[test]
fn the_cache_gives_the_same_logits_as_a_full_decoder_pass() {
    let model = load_t5(&dir("t5_tiny_orig"), Kind::Float, Device::Cpu).unwrap();
    let e = expected("t5_tiny_orig");
    let (ids, mask) = (&e["prompt_ids"], &e["prompt_mask"]);
    let dec = Tensor::from_slice(&[0i64, 5, 9, 300, 7, 12, 40, 3]).view([1, 8]).repeat([3, 1]);
    tch::no_grad(|| {
        let enc = model.encode(ids, mask, false);
        let full = model.decode(&dec, &enc, mask, None, false); // [3, 8, d]
        let mut cache = steptune::model::t5::T5Cache::new(model.decoder.block.len());
        let first = model.decode(&dec.narrow(1, 0, 3), &enc, mask, Some(&mut cache), false);
        let mut parts = vec![first];
        for i in 3..8 {
            parts.push(model.decode(&dec.narrow(1, i, 1), &enc, mask, Some(&mut cache), false));
        }
        assert_eq!(cache.len(), 8);
        let stepped = Tensor::cat(&parts, 1);
        assert!(max_abs(&stepped, &full) < 1e-5, "cached decoding differs by {}", max_abs(&stepped, &full));
    });
}
