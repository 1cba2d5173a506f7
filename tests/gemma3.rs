//! Gemma 3's text decoder equals transformers 5.23 on three random checkpoints
//! (scripts/make_model_fixtures.py): gemma3_a (gemma3_text, transformers 5 keys: layer_types,
//! rope_parameters per layer type; GQA 2:1, head_dim 12 ≠ 32/4, query_pre_attn_scalar 16, window
//! 8, linear RoPE ×8 on the full layer), gemma3_b (4.x keys: sliding_window_pattern,
//! rope_local_base_freq, rope_scaling; MQA; final and attention logit soft-capping set) and
//! gemma3_mm (a multimodal `gemma3` folder, text weights under `language_model.model.*`).
//! Logits within 1e-4, greedy generation with the KV cache token-identical past the sliding
//! window, LoRA gradients equal to peft's, QLoRA, checkpointing, merge, quantize, estimate, check.
mod common;

use std::path::{Path, PathBuf};

use common::{repo, steptune, write};
use steptune::adapt::peft;
use steptune::model::causal;
use steptune::model::gemma3::{Gemma3, Gemma3Config};
use steptune::model::generate::{generate, GenerateConfig};
use steptune::model::{load_gemma3, load_gemma3_4bit, load_model, Model, QuantSpec};
use steptune::nn::weights;
use tch::{Device, Kind, Tensor};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

fn read(path: &Path) -> weights::Weights {
    weights::read_file(path, None, Device::Cpu, &|_| true).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    let (b, n) = (t.size()[0], t.size()[1]);
    (0..b).map(|r| Vec::<i64>::try_from(&t.get(r).view([n])).unwrap()).collect()
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1e-12);
    (got - want).abs().max().double_value(&[]) / scale
}

fn load(name: &str) -> Gemma3 {
    load_gemma3(&dir(name), Kind::Float, Device::Cpu).unwrap()
}

const MODELS: [&str; 3] = ["gemma3_a", "gemma3_b", "gemma3_mm"];

fn masked_diff(model: &Gemma3, e: &weights::Weights) -> f64 {
    let got = tch::no_grad(|| model.forward(&e["input_ids"]));
    let m = e["attention_mask"].unsqueeze(-1).to_kind(Kind::Bool);
    (got - &e["logits"]).abs().masked_select(&m).max().double_value(&[])
}

#[test]
fn configs_of_both_transformers_generations_are_read() {
    let a = Gemma3Config::from_json(&steptune::model::read_config(&dir("gemma3_a")).unwrap()).unwrap();
    assert_eq!(a.sliding, [true, true, false, true]);
    assert_eq!((a.rope_local.theta, a.rope_local.linear_factor), (1e4, None));
    assert_eq!((a.rope_global.theta, a.rope_global.linear_factor), (1e6, Some(8.0)));
    assert_eq!((a.head_dim, a.query_pre_attn_scalar, a.sliding_window, a.num_key_value_heads), (12, 16.0, 8, 2));
    // 4.x keys: every 2nd layer global, rope_scaling on the global layers only.
    let b = Gemma3Config::from_json(&steptune::model::read_config(&dir("gemma3_b")).unwrap()).unwrap();
    assert_eq!(b.sliding, [true, false, true]);
    assert_eq!((b.rope_local.linear_factor, b.rope_global.linear_factor), (None, Some(4.0)));
    assert_eq!((b.final_logit_softcapping, b.attn_logit_softcapping), (Some(30.0), Some(50.0)));
    // The multimodal config's text_config, and transformers' defaults for keys Hub configs omit.
    let mm = Gemma3Config::from_json(&steptune::model::read_config(&dir("gemma3_mm")).unwrap()).unwrap();
    assert_eq!((mm.hidden_size, mm.sliding.clone(), mm.sliding_window), (32, vec![true, false], 5));
    let bare = Gemma3Config::from_json(&serde_json::json!({"model_type": "gemma3", "text_config": {"hidden_size": 3840, "num_hidden_layers": 12}})).unwrap();
    assert_eq!((bare.vocab_size, bare.head_dim, bare.sliding_window, bare.query_pre_attn_scalar), (262_208, 256, 4096, 256.0));
    assert_eq!(bare.sliding.iter().filter(|s| !**s).count(), 2, "layers 6 and 12 are global");
    let err = format!("{:#}", Gemma3Config::from_json(&serde_json::json!({"model_type": "gemma3_text", "rope_parameters": {"full_attention": {"rope_type": "yarn"}}})).unwrap_err());
    assert!(err.contains("yarn") && err.contains("full_attention"), "{err}");
}

#[test]
fn logits_equal_transformers_within_1e_4() {
    for name in MODELS {
        let e = read(&dir(name).join("expected.safetensors"));
        let diff = masked_diff(&load(name), &e);
        eprintln!("{name}: max |Δlogit| = {diff:e}");
        assert!(diff < 1e-4, "{name}: max |Δlogit| = {diff:e}");
    }
}

#[test]
fn greedy_generation_past_the_window_is_token_identical_with_the_cache() {
    for name in MODELS {
        let model = load(name);
        let e = read(&dir(name).join("expected.safetensors"));
        let cfg = GenerateConfig { max_new_tokens: 32, eos_ids: vec![], pad_id: 0, ..Default::default() };
        let prompt = rows(&e["greedy_prompt"]);
        assert!(prompt[0].len() as i64 + 32 > 3 * model.cfg.sliding_window, "{name}: the window must matter");
        let want = rows(&e["greedy_output"]);
        let got = generate(&model, &prompt, &cfg);
        assert_eq!(got[0], want[0][prompt[0].len()..], "{name}: single-prompt greedy output differs");
        let bp = rows(&e["batch_prompt"]);
        let bm = rows(&e["batch_mask"]);
        let prompts: Vec<Vec<i64>> = bp.iter().zip(&bm).map(|(p, m)| p.iter().zip(m).filter(|(_, &k)| k == 1).map(|(&t, _)| t).collect()).collect();
        assert_ne!(prompts[0].len(), prompts[1].len(), "left padding is exercised");
        let want = rows(&e["batch_output"]);
        let got = generate(&model, &prompts, &cfg);
        for r in 0..2 {
            assert_eq!(got[r], want[r][bp[r].len()..], "{name}: batch row {r} differs");
        }
    }
}

#[test]
fn multimodal_weights_under_either_prefix_load_alike_and_the_vision_tower_is_skipped() {
    let src = dir("gemma3_mm");
    let w = read(&src.join("model.safetensors"));
    assert!(w.keys().all(|k| k.starts_with("language_model.model.")), "the fixture holds 4.5x names");
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), d.path().join("config.json")).unwrap();
    // transformers 5's in-memory names, plus vision tensors that must not be read.
    let mut renamed: Vec<(String, Tensor)> = w.iter().map(|(k, t)| (k.replacen("language_model.model.", "model.language_model.", 1), t.shallow_clone())).collect();
    renamed.push(("model.vision_tower.vision_model.embeddings.patch_embedding.weight".into(), Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))));
    renamed.push(("multi_modal_projector.mm_input_projection_weight".into(), Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))));
    let refs: Vec<(String, &Tensor)> = renamed.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&d.path().join("model.safetensors"), &refs).unwrap();
    let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5, 9, 13, 2]).view([1, 8]);
    let a = tch::no_grad(|| load("gemma3_mm").forward(&ids));
    let b = tch::no_grad(|| load_gemma3(d.path(), Kind::Float, Device::Cpu).unwrap().forward(&ids));
    assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
    // A gemma3_text config over the same tensors is not a match: they are named, not dropped.
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg = cfg["text_config"].take();
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    let err = format!("{:#}", load_gemma3(d.path(), Kind::Float, Device::Cpu).err().unwrap());
    assert!(err.contains("model.embed_tokens.weight"), "{err}");
}

#[test]
fn saved_model_reloads_with_equal_logits_as_gemma3_text() {
    let model = load("gemma3_mm");
    let d = tempfile::tempdir().unwrap();
    model.save(d.path(), None).unwrap();
    let cfg = steptune::model::read_config(d.path()).unwrap();
    assert_eq!(cfg["model_type"], "gemma3_text");
    let again = load_gemma3(d.path(), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5, 9, 13, 2]).view([1, 8]);
    let diff = tch::no_grad(|| (model.forward(&ids) - again.forward(&ids)).abs().max().double_value(&[]));
    assert_eq!(diff, 0.0);
}

#[test]
fn peft_adapter_gives_equal_logits_loss_gradients_and_merge() {
    let root = dir("gemma3_a");
    let f = read(&root.join("lora_grads.safetensors"));
    let (ids, labels) = (&f["lora_input_ids"], &f["lora_labels"]);
    assert!(ids.size()[1] > 8, "the batch is longer than the sliding window");
    let mut model = load("gemma3_a");
    let spec = peft::load_adapter(&mut model, &root.join("adapter")).unwrap();
    assert_eq!((spec.r, spec.alpha), (4, 8.0));
    let d = (tch::no_grad(|| model.forward(ids)) - &f["lora_logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "adapter logits differ by {d:e}");
    let (sum, n) = model.loss_sum(ids, labels, true).unwrap();
    let loss = sum / n as f64;
    let (got, want) = (loss.double_value(&[]), f["lora_loss"].double_value(&[0]));
    assert!(((got - want) / want).abs() < 1e-5, "loss {got} vs peft {want}");
    loss.backward();
    let named = peft::named_lora(&model);
    assert_eq!(named.len(), 4 * 7 * 2);
    let mut worst = 0.0f64;
    for (name, t) in &named {
        let r = max_rel(&t.grad(), f.get(name).unwrap_or_else(|| panic!("fixture lacks {name}")));
        worst = worst.max(r);
        assert!(r < 1e-5, "{name}: gradient differs by {r:e} relative");
    }
    eprintln!("gemma3_a LoRA: loss rel diff {:e}, worst gradient rel diff {worst:e}", ((got - want) / want).abs());
    peft::merge(&mut model);
    let d = (tch::no_grad(|| model.forward(ids)) - &f["merged_logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "merged logits differ by {d:e}");
}

/// Checkpointed backward gives the plain backward's loss and gradients (LoRA, dropout off).
#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let root = dir("gemma3_a");
    let f = read(&root.join("lora_grads.safetensors"));
    let batch = steptune::model::Batch {
        input_ids: f["lora_input_ids"].shallow_clone(),
        attention_mask: f["lora_attention_mask"].shallow_clone(),
        labels: f["lora_labels"].shallow_clone(),
        decoder_reads: None,
        n_targets: 0,
        n_tokens: 0,
    };
    let mut model = load("gemma3_a");
    peft::load_adapter(&mut model, &root.join("adapter")).unwrap();
    let (sum, _) = Model::loss_sum(&model, &batch, true).unwrap();
    sum.backward();
    let plain: Vec<Tensor> = peft::named_lora(&model).iter().map(|(_, t)| t.grad().copy()).collect();
    for (_, t) in peft::named_lora(&model) {
        let _ = t.grad().zero_();
    }
    let (l1, _) = model.loss_sum_backward_checkpointed(&batch, 1.0).unwrap();
    assert!((l1 - sum.double_value(&[])).abs() < 1e-5 * l1.abs());
    for ((name, t), p) in peft::named_lora(&model).iter().zip(&plain) {
        let r = max_rel(&t.grad(), p);
        assert!(r < 1e-5, "{name}: checkpointed gradient differs by {r:e}");
    }
}

#[test]
fn qlora_step_on_nf4_base_trains_and_saves_an_adapter() {
    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float };
    for name in ["gemma3_a", "gemma3_mm"] {
        let mut model = load_gemma3_4bit(&dir(name), spec, Kind::Float, Device::Cpu).unwrap();
        assert!(model.projections().iter().all(|(_, l)| l.dense_weight().is_none()), "{name}: every projection is NF4");
        assert!(model.dense_weights().iter().all(|(n, _)| !n.contains("_proj")));
        let lora = peft::LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec() };
        peft::attach(&mut model, &lora).unwrap();
        let ids = Tensor::arange_start(3, 23, (Kind::Int64, Device::Cpu)).view([1, 20]);
        let (sum, n) = model.loss_sum(&ids, &ids, true).unwrap();
        let loss = (sum / n as f64).double_value(&[]);
        assert!(loss.is_finite() && loss > 0.0, "{name}: loss {loss}");
        (Model::loss_sum(&model, &steptune::model::Batch { input_ids: ids.shallow_clone(), attention_mask: ids.ones_like(), labels: ids.shallow_clone(), decoder_reads: None, n_targets: 19, n_tokens: 20 }, true).unwrap().0).backward();
        let named = peft::named_lora(&model);
        assert!(named.iter().filter(|(n, _)| n.contains("lora_A")).all(|(_, t)| t.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0), "A's gradient is zero while B = 0");
        assert!(named.iter().filter(|(n, _)| n.contains("lora_B")).all(|(_, t)| t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0), "{name}: every B gets a gradient");
        let d = tempfile::tempdir().unwrap();
        peft::save_adapter(&model, &lora, name, d.path()).unwrap();
        let saved = read(&d.path().join("adapter_model.safetensors"));
        assert!(saved.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), "{:?}", saved.keys().next());
        assert_eq!(saved.len(), named.len());
    }
}

#[test]
fn merge_and_quantize_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let root = dir("gemma3_a");
    // merge on the command line: the merged folder gives peft's merged logits.
    let out = d.path().join("merged");
    let (code, _, err) = steptune(&["merge", "--model", root.to_str().unwrap(), "--adapter", root.join("adapter").to_str().unwrap(), "--out", out.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    let f = read(&root.join("lora_grads.safetensors"));
    let merged = load_gemma3(&out, Kind::Float, Device::Cpu).unwrap();
    let diff = (tch::no_grad(|| merged.forward(&f["lora_input_ids"])) - &f["merged_logits"]).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "merged folder's logits differ by {diff:e}");
    // quantize, both name layouts: every projection to NF4; the folder loads dense and in 4 bits.
    let opts = steptune::adapt::quantize::QuantizeOptions { double_quant: true, compute_dtype: "float32".into() };
    for (name, layers) in [("gemma3_a", 4), ("gemma3_mm", 2)] {
        let q = d.path().join(format!("{name}-nf4"));
        let report = steptune::adapt::quantize::quantize_model_dir(&dir(name), &q, &opts).unwrap();
        assert_eq!(report.quantized, 7 * layers, "{name}");
        let base = load(name);
        let deq = load_gemma3(&q, Kind::Float, Device::Cpu).unwrap();
        let four = load_gemma3_4bit(&q, QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float }, Kind::Float, Device::Cpu).unwrap();
        let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5, 9, 13, 2, 40, 41]).view([1, 10]);
        let (a, b, c) = tch::no_grad(|| (base.forward(&ids), deq.forward(&ids), four.forward(&ids)));
        assert!(max_rel(&b, &c) < 1e-5, "{name}: dense-from-NF4 and NF4 loads differ");
        assert!(max_rel(&b, &a) > 0.0, "{name}: the quantized model is not the fp32 one");
        // Every projection holds exactly what quantizing the fp32 weight gives (NF4 on these
        // tiny random weights moves the logits too much for a useful bound on them).
        for ((n, lin), (_, base_lin)) in four.projections().iter().zip(base.projections()) {
            let want = steptune::nn::nf4::dequantize(&steptune::nn::nf4::quantize(&base_lin.weight(), 64, true).unwrap());
            assert!(lin.weight().equal(&want), "{name}: {n} is not the NF4 of the fp32 weight");
        }
        let via_load_model = load_model(&q, None, Kind::Float, Device::Cpu).unwrap();
        assert_eq!(via_load_model.projections().len(), 7 * layers);
    }
}

#[test]
fn estimate_and_check_name_gemma3() {
    let d = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: g\nmodel: {{source: {}}}\nfinetune: {{method: qlora, lora_r: 8, lora_alpha: 16, lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}}\ntraining: {{device: cpu, precision: bf16, gradient_checkpointing: true}}\ndata: {{files: [{}], max_length: 256}}\n",
        dir("gemma3_mm").display(),
        repo().join("data/procedures.jsonl").display()
    );
    let r = write(d.path(), "g.yaml", yaml.as_bytes());
    let (code, out, err) = steptune(&["estimate", r.to_str().unwrap(), "--json"], d.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["model"].as_str().unwrap().starts_with("gemma3 h32 L2 V512"), "{}", v["model"]);
    assert!(v["total_bytes"].as_u64().unwrap() > 0);
    // The plan's base weights count Gemma's four norms per layer and q/k norms, tied head.
    let lines = v["lines"].as_array().unwrap();
    let other = lines.iter().find(|l| l["name"] == "base weights: embeddings, lm_head, norms, biases").unwrap();
    let norms = 2 * (4 * 32 + 2 * 16) + 32;
    assert!(other["detail"].as_str().unwrap().contains(&format!("norms {norms}")) && other["detail"].as_str().unwrap().contains("tied"), "{other}");
    // And the LoRA count is what attach makes on the real model.
    let trainable = v["trainable_params"].as_i64().unwrap();
    let mut m = load("gemma3_mm");
    peft::attach(&mut m, &peft::LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec() }).unwrap();
    assert_eq!(trainable, peft::named_lora(&m).iter().map(|(_, t)| t.numel() as i64).sum::<i64>());
    let dense: i64 = m.dense_weights().iter().filter(|(n, _)| !n.contains("_proj")).map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(dense, 512 * 32 + norms, "embedding + norms, as the plan counts them");
    let (code, out, err) = steptune(&["check", r.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("# memory estimate: ") && out.contains("for gemma3 h32 L2"), "{out}");
}

/// The shared drivers (causal.rs) serve Gemma's soft-capped head: with final_logit_softcapping
/// every logit lies inside ±cap, and the loss is the capped logits' cross-entropy.
#[test]
fn final_softcapping_bounds_logits_and_the_loss_uses_them() {
    let model = load("gemma3_b");
    let ids = Tensor::arange_start(1, 17, (Kind::Int64, Device::Cpu)).view([1, 16]);
    let logits = tch::no_grad(|| model.forward(&ids));
    assert!(logits.abs().max().double_value(&[]) <= 30.0);
    let (sum, n) = tch::no_grad(|| model.loss_sum(&ids, &ids, false)).unwrap();
    let want = logits.narrow(1, 0, 15).reshape([-1, 512]).cross_entropy_loss::<Tensor>(&ids.narrow(1, 1, 15).reshape([-1]), None, tch::Reduction::Sum, -100, 0.0);
    assert_eq!(n, 15);
    assert!((sum.double_value(&[]) - want.double_value(&[])).abs() < 1e-4);
    let _ = causal::train_positions(&model, &ids);
}

/// Gemma's chat template has no system role: it folds the system text into the first user turn.
/// tests/fixtures/gemma3/chat_template.jinja is the template of the Gemma 3 instruction-tuned
/// tokenizer_config.json (written out here, not downloaded); the expected strings are what
/// transformers 5.23's render_jinja_template gives for it.
#[test]
fn gemma_chat_template_folds_the_system_text_into_the_first_user_turn() {
    use steptune::model::chat_template::{chat_messages, ChatTemplate};
    let src = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3/chat_template.jinja")).unwrap();
    let t = ChatTemplate::new(&src, Some("<bos>".into()), Some("<eos>".into())).unwrap();
    let (sys, prompt) = ("You write numbered steps.", "How do I reset my password?");
    let got = t.render(&chat_messages(Some(sys), prompt, None), true, false).unwrap();
    assert_eq!(got, "<bos><start_of_turn>user\nYou write numbered steps.\n\nHow do I reset my password?<end_of_turn>\n<start_of_turn>model\n");
    let got = t.render(&chat_messages(Some(sys), prompt, Some("1. Open settings.\n2. Tap Reset.")), false, false).unwrap();
    assert_eq!(got, "<bos><start_of_turn>user\nYou write numbered steps.\n\nHow do I reset my password?<end_of_turn>\n<start_of_turn>model\n1. Open settings.\n2. Tap Reset.<end_of_turn>\n");
    let got = t.render(&chat_messages(None, prompt, None), true, false).unwrap();
    assert_eq!(got, "<bos><start_of_turn>user\nHow do I reset my password?<end_of_turn>\n<start_of_turn>model\n");
}
