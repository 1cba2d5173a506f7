//! Gradient checkpointing (`training.gradient_checkpointing`): per decoder layer, forward without
//! keeping activations, recompute one layer at a time in backward. The gradients must equal those
//! of the plain backward, with dropout too.
//!
//! Alone in its test binary on purpose: the dropout masks come from the process-wide RNG, which
//! tests running in parallel threads of one binary would draw from in between.
use std::path::PathBuf;

use steptune::adapt::peft;
use steptune::model::{load_decoder, load_decoder_4bit, QuantSpec};
use tch::{Device, Kind, Tensor};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1e-12);
    (got - want).abs().max().double_value(&[]) / scale
}

/// Gradients of every trainable tensor after one micro-batch, with or without checkpointing;
/// the dropout RNG is reseeded first so both runs draw the same masks.
fn grads(model: &steptune::model::qwen3::Qwen3, params: &[(String, Tensor)], ids: &Tensor, labels: &Tensor, checkpointed: bool) -> (f64, Vec<Tensor>) {
    for (_, p) in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    tch::manual_seed(7);
    let (n_targets, scale) = (labels.ne(-100).sum(Kind::Int64).int64_value(&[]), 0.5);
    let loss = if checkpointed {
        model.loss_sum_backward_checkpointed(ids, labels, scale).unwrap().0
    } else {
        let (loss, _) = model.loss_sum(ids, labels, true).unwrap();
        (&loss * scale).backward();
        loss.double_value(&[])
    };
    assert!(n_targets > 0);
    // After the step the RNG is where an unchecked forward leaves it.
    let next = Tensor::rand([4], (Kind::Float, Device::Cpu));
    let mut out: Vec<Tensor> = params.iter().map(|(_, p)| p.grad().copy()).collect();
    out.push(next);
    (loss, out)
}

fn assert_same_gradients(model: &steptune::model::qwen3::Qwen3, params: &[(String, Tensor)], what: &str) {
    let ids = Tensor::randint(500, [2, 12], (Kind::Int64, Device::Cpu)) + 1;
    let labels = ids.copy();
    let _ = labels.narrow(1, 0, 3).fill_(-100);
    let (l0, g0) = grads(model, params, &ids, &labels, false);
    let (l1, g1) = grads(model, params, &ids, &labels, true);
    assert!((l0 - l1).abs() <= 1e-6 * l0.abs(), "{what}: loss {l0} vs checkpointed {l1}");
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).chain(["<rng after the step>"]).collect();
    let mut worst = 0.0f64;
    for ((a, b), name) in g0.iter().zip(&g1).zip(names) {
        assert!(a.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{what}: {name} has no gradient");
        let r = max_rel(b, a);
        worst = worst.max(r);
        assert!(r < 1e-5, "{what}: {name} differs by {r:e} with checkpointing");
    }
    eprintln!("{what}: {} tensors, worst relative gradient difference {worst:e}", params.len());
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    tch::manual_seed(11);
    // LoRA with dropout on a 3-layer untied model: the recomputed layers must redraw the same masks.
    let mut model = load_decoder(&models().join("qwen3_b"), Kind::Float, Device::Cpu).unwrap();
    let spec = peft::LoraSpec { r: 4, alpha: 8.0, dropout: 0.1, targets: ["q_proj", "v_proj", "o_proj", "down_proj"].map(String::from).to_vec() };
    peft::attach(&mut model, &spec).unwrap();
    // B starts at zero; give it values so every A has a gradient too.
    for (name, t) in peft::named_lora(&model) {
        if name.contains("lora_B") {
            let mut b = t.shallow_clone();
            let _ = tch::no_grad(|| b.normal_(0.0, 0.02));
        }
    }
    let params = peft::named_lora(&model);
    assert_same_gradients(&model, &params, "LoRA, dropout 0.1");

    // Full fine-tuning with tied embeddings: the embedding gradient arrives through both ends.
    let model = load_decoder(&models().join("qwen3_a"), Kind::Float, Device::Cpu).unwrap();
    let params = model.named_weights();
    for (_, p) in &params {
        let _ = p.set_requires_grad(true);
    }
    assert_same_gradients(&model, &params, "full fine-tuning");

    // QLoRA: 4-bit base through the C++ autograd function.
    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float };
    let mut model = load_decoder_4bit(&models().join("qwen3_a_bnb4bit"), spec, Kind::Float, Device::Cpu).unwrap();
    peft::load_adapter(&mut model, &models().join("qwen3_a/adapter")).unwrap();
    let params = peft::named_lora(&model);
    assert_same_gradients(&model, &params, "QLoRA");
}

