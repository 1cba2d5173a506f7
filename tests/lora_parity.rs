//! Hand-built LoRA equals peft: a peft-written adapter loads and gives peft's logits; one training
//! step's loss and every LoRA gradient match within 1e-5 relative; merging gives the merged
//! model's logits; steptune writes adapters in peft's layout; the same for a T5 adapter. Fixtures:
//! scripts/make_model_fixtures.py and scripts/make_t5_lora_fixtures.py.
use std::collections::BTreeSet;
use std::path::PathBuf;

use steptune::adapt::peft;
use steptune::model::load_decoder;
use steptune::nn::weights;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen3_a")
}

fn fixture() -> weights::Weights {
    weights::read_file(&root().join("lora_grads.safetensors"), None, Device::Cpu, &|_| true).unwrap()
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1e-12);
    (got - want).abs().max().double_value(&[]) / scale
}

#[test]
fn peft_adapter_loads_with_equal_logits_and_merges() {
    let mut model = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    let spec = peft::load_adapter(&mut model, &root().join("adapter")).unwrap();
    assert_eq!((spec.r, spec.alpha), (4, 8.0));
    let f = fixture();
    let logits = tch::no_grad(|| model.forward(&f["lora_input_ids"]));
    let d = (&logits - &f["lora_logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "adapter logits differ by {d:e}");
    peft::merge(&mut model);
    assert!(peft::named_lora(&model).is_empty());
    let merged = tch::no_grad(|| model.forward(&f["lora_input_ids"]));
    let d = (&merged - &f["merged_logits"]).abs().max().double_value(&[]);
    assert!(d < 1e-4, "merged logits differ by {d:e}");
}

#[test]
fn one_step_loss_and_lora_gradients_equal_peft() {
    let mut model = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    peft::load_adapter(&mut model, &root().join("adapter")).unwrap();
    let f = fixture();
    let (sum, n) = model.loss_sum(&f["lora_input_ids"], &f["lora_labels"], true).unwrap();
    let loss = sum / n as f64;
    let want = f["lora_loss"].double_value(&[0]);
    let got = loss.double_value(&[]);
    assert!(((got - want) / want).abs() < 1e-5, "loss {got} vs peft {want}");
    loss.backward();
    let named = peft::named_lora(&model);
    assert_eq!(named.len(), 28);
    let mut worst = 0.0f64;
    for (name, t) in &named {
        let want = f.get(name).unwrap_or_else(|| panic!("fixture lacks the gradient of {name}"));
        let r = max_rel(&t.grad(), want);
        worst = worst.max(r);
        assert!(r < 1e-5, "{name}: gradient differs by {r:e} relative");
    }
    eprintln!("worst relative gradient difference: {worst:e}");
}

#[test]
fn steptune_writes_adapters_in_peft_layout() {
    let mut model = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    let spec = peft::load_adapter(&mut model, &root().join("adapter")).unwrap();
    let d = tempfile::tempdir().unwrap();
    peft::save_adapter(&model, &spec, "tests/fixtures/models/qwen3_a", d.path()).unwrap();
    // Same tensor names, shapes, dtypes and values as peft's own file.
    let ours = weights::read_file(&d.path().join("adapter_model.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    let theirs = weights::read_file(&root().join("adapter/adapter_model.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    for (k, t) in &ours {
        assert_eq!(t.size(), theirs[k].size(), "{k}");
        assert_eq!(t.kind(), theirs[k].kind(), "{k}");
        assert_eq!((t - &theirs[k]).abs().max().double_value(&[]), 0.0, "{k}");
    }
    // The config says what peft needs to rebuild the same LoRA.
    let read = |p: PathBuf| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (ours, theirs) = (read(d.path().join("adapter_config.json")), read(root().join("adapter/adapter_config.json")));
    for key in ["peft_type", "task_type", "r", "bias", "fan_in_fan_out", "use_rslora", "use_dora"] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
    assert_eq!(ours["lora_alpha"].as_f64(), theirs["lora_alpha"].as_f64());
    let set = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!(set(&ours["target_modules"]), set(&theirs["target_modules"]));
    // And it loads back into steptune unchanged.
    let mut again = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    peft::load_adapter(&mut again, d.path()).unwrap();
    let ids = Tensor::from_slice(&[1i64, 5, 9, 200]).view([1, 4]);
    let diff = tch::no_grad(|| (model.forward(&ids) - again.forward(&ids)).abs().max().double_value(&[]));
    assert_eq!(diff, 0.0);
}

#[test]
fn fresh_lora_starts_from_the_base_model_exactly() {
    let base = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    let mut model = load_decoder(&root(), Kind::Float, Device::Cpu).unwrap();
    let spec = peft::LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, targets: vec!["q_proj".into(), "down_proj".into()] };
    peft::attach(&mut model, &spec).unwrap();
    let named = peft::named_lora(&model);
    assert_eq!(named.len(), 2 * 2 * 2, "2 layers × 2 modules × (A, B)");
    for (name, t) in &named {
        if name.ends_with("lora_B.weight") {
            assert_eq!(t.abs().max().double_value(&[]), 0.0, "B starts at zero");
        } else {
            // kaiming_uniform(a=√5): U(-1/√in, 1/√in)
            let bound = 1.0 / (t.size()[1] as f64).sqrt();
            assert!(t.abs().max().double_value(&[]) <= bound && t.abs().max().double_value(&[]) > bound * 0.5);
        }
    }
    let ids = Tensor::from_slice(&[1i64, 5, 9, 200]).view([1, 4]);
    let diff = tch::no_grad(|| (model.forward(&ids) - base.forward(&ids)).abs().max().double_value(&[]));
    assert_eq!(diff, 0.0);
    let err = peft::attach(&mut model, &peft::LoraSpec { targets: vec!["qkv".into()], ..spec }).unwrap_err().to_string();
    assert!(err.contains("`qkv`"), "{err}");
}

/// T5 through the same adapter code: a peft adapter on q, v and wo of every block (encoder
/// self-attention, decoder self- and cross-attention, feed-forward) loads with peft's logits,
/// loss and LoRA gradients, and steptune writes it back under the same names.
#[test]
fn t5_peft_adapter_gives_equal_logits_loss_and_gradients() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/t5_tiny_v11");
    let mut model = steptune::model::load_t5(&root, Kind::Float, Device::Cpu).unwrap();
    let spec = peft::load_adapter(&mut model, &root.join("adapter")).unwrap();
    assert_eq!((spec.r, spec.alpha), (4, 8.0));
    let f = weights::read_file(&root.join("lora_grads.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    let (ids, mask, labels) = (&f["input_ids"], &f["attention_mask"], &f["labels"]);
    // Dropout off on both sides (the fixture overrides the checkpoint's dropout_rate with 0).
    let logits = model.forward(ids, mask, labels, false); // [2, 6, V]
    let d = max_rel(&logits.narrow(2, 0, 512), &f["logits_head"]);
    assert!(d < 1e-4, "logits differ by {d:e} relative");
    let d = max_rel(&logits.logsumexp([-1], false), &f["logsumexp"]);
    assert!(d < 1e-5, "logsumexp differs by {d:e} relative");
    let (sum, n) = model.loss_sum(ids, mask, labels, false).unwrap();
    let loss = sum / n as f64;
    let (got, want) = (loss.double_value(&[]), f["loss"].double_value(&[0]));
    assert!(((got - want) / want).abs() < 1e-5, "loss {got} vs peft {want}");
    loss.backward();
    let named = peft::named_lora(&model);
    assert_eq!(named.len(), 32);
    let mut worst = 0.0f64;
    for (name, t) in &named {
        let want = f.get(name).unwrap_or_else(|| panic!("fixture lacks the gradient of {name}"));
        let r = max_rel(&t.grad(), want);
        worst = worst.max(r);
        assert!(r < 1e-4, "{name}: gradient differs by {r:e} relative");
    }
    eprintln!("T5 LoRA: loss rel diff {:e}, worst gradient rel diff {worst:e}", ((got - want) / want).abs());
    let d = tempfile::tempdir().unwrap();
    peft::save_adapter(&model, &spec, "tests/fixtures/models/t5_tiny_v11", d.path()).unwrap();
    let ours = weights::read_file(&d.path().join("adapter_model.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    let theirs = weights::read_file(&root.join("adapter/adapter_model.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
}
