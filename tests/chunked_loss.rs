//! The language-model head's loss in chunks (`training.loss_chunk_tokens`, csrc/lm_loss.cpp)
//! equals the plain path that makes every logit at once: the loss and every gradient, fp32, within
//! 1e-6 relative, for Qwen3 tied and untied and T5 tied and untied; full fine-tuning, LoRA and
//! QLoRA; with and without gradient checkpointing.
//!
//! Alone in its test binary: dropout draws from the process-wide RNG, reseeded before each pass.
use std::path::PathBuf;

use steptune::adapt::peft;
use steptune::model::qwen3::Qwen3;
use steptune::model::t5::T5;
use steptune::model::{load_decoder, load_decoder_4bit, load_t5, QuantSpec};
use steptune::nn::head::cross_entropy_sum;
use tch::{Device, Kind, Tensor};

const BOUND: f64 = 1e-6;
const DECODER_TARGETS: [&str; 4] = ["q_proj", "v_proj", "o_proj", "down_proj"];

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// ‖got − want‖ / ‖want‖ (Frobenius): the relative error of the whole tensor. Chunks change only
/// the summation order of the head's matmuls, a few ulps per element.
fn rel(got: &Tensor, want: &Tensor) -> f64 {
    (got - want).norm().double_value(&[]) / want.norm().double_value(&[]).max(1e-30)
}

fn zero_grads(params: &[(String, Tensor)]) {
    for (_, p) in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// The loss and a copy of every parameter's gradient after one backward of `loss · 0.5`.
fn pass(params: &[(String, Tensor)], run: &dyn Fn() -> f64) -> (f64, Vec<Tensor>) {
    zero_grads(params);
    tch::manual_seed(7);
    let loss = run();
    (loss, params.iter().map(|(_, p)| p.grad().copy()).collect())
}

/// Chunks of this many labelled tokens: several chunks and a short last one in every case.
const CHUNK: usize = 5;

/// The chunked pass (l1, g1) against all logits at once (l0, g0).
fn assert_equal(what: &str, params: &[(String, Tensor)], (l0, g0): (f64, Vec<Tensor>), (l1, g1): (f64, Vec<Tensor>)) {
    assert!(l0.is_finite() && l0 > 0.0, "{what}: loss {l0}");
    assert!((l0 - l1).abs() <= BOUND * l0.abs(), "{what}: loss {l0} all at once, {l1} chunked");
    let mut worst = 0.0f64;
    let mut worst_name = String::new();
    for ((name, _), (a, b)) in params.iter().zip(g0.iter().zip(&g1)) {
        assert!(a.defined() && a.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{what}: {name} has no gradient");
        let r = rel(b, a);
        if r > worst {
            worst_name = name.clone();
        }
        worst = worst.max(r);
        assert!(r <= BOUND, "{what}: the gradient of {name} differs by {r:e} (relative) when chunked");
    }
    eprintln!("{what}: loss {l0:.6}, {} gradients, worst relative difference {worst:e} ({worst_name})", params.len());
}

/// [2, 14] ids whose first 3 positions are prompt (label -100): 2 × 10 labelled predictions.
fn decoder_batch() -> (Tensor, Tensor) {
    let ids = Tensor::randint(500, [2, 14], (Kind::Int64, Device::Cpu)) + 1;
    let labels = ids.copy();
    let _ = labels.narrow(1, 0, 3).fill_(-100);
    (ids, labels)
}

fn decoder_cases(name: &str, model: &mut Qwen3, params: &[(String, Tensor)]) {
    let (ids, labels) = decoder_batch();
    let plain = |m: &Qwen3| {
        let (loss, _) = m.loss_sum(&ids, &labels, true).unwrap();
        (&loss * 0.5).backward();
        loss.double_value(&[])
    };
    let checkpointed = |m: &Qwen3| m.loss_sum_backward_checkpointed(&ids, &labels, 0.5).unwrap().0;
    for ckpt in [false, true] {
        let mut both = Vec::new();
        for chunk in [0, CHUNK] {
            model.loss_chunk = chunk;
            both.push(pass(params, &|| if ckpt { checkpointed(model) } else { plain(model) }));
        }
        let chunked = both.pop().unwrap();
        let what = if ckpt { format!("{name}, gradient checkpointing") } else { name.to_string() };
        assert_equal(&what, params, both.pop().unwrap(), chunked);
    }
}

fn trainable_all(named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    for (_, p) in &named {
        let _ = p.set_requires_grad(true);
    }
    named
}

/// LoRA with dropout 0.1 on `targets`, B drawn non-zero.
fn lora(model: &mut dyn steptune::model::Model, targets: &[&str]) -> Vec<(String, Tensor)> {
    let spec = peft::LoraSpec { r: 4, alpha: 8.0, dropout: 0.1, targets: targets.iter().map(|t| t.to_string()).collect() };
    peft::attach(model, &spec).unwrap();
    // B starts at zero; give it values so every A has a gradient too.
    let params = peft::named_lora(model);
    for (name, t) in &params {
        if name.contains("lora_B") {
            let mut b = t.shallow_clone();
            let _ = tch::no_grad(|| b.normal_(0.0, 0.02));
        }
    }
    params
}

#[test]
fn the_chunked_head_loss_equals_all_logits_at_once() {
    tch::manual_seed(3);
    // The function alone: uneven chunks, ignored rows, both inputs trainable.
    let hidden = Tensor::randn([23, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let weight = Tensor::randn([97, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let targets = Tensor::randint(97, [23], (Kind::Int64, Device::Cpu));
    let _ = targets.narrow(0, 4, 3).fill_(-100);
    let params = vec![("hidden".to_string(), hidden.shallow_clone()), ("weight".to_string(), weight.shallow_clone())];
    let run = |c: usize| {
        let loss = cross_entropy_sum(&hidden, &weight, &targets, c).unwrap();
        (&loss * 0.5).backward();
        loss.double_value(&[])
    };
    for chunk in [1usize, 4, 23, 64] {
        let (whole, chunked) = (pass(&params, &|| run(0)), pass(&params, &|| run(chunk)));
        // Ignored rows get no gradient.
        assert_eq!(chunked.1[0].narrow(0, 4, 3).abs().max().double_value(&[]), 0.0);
        assert_equal(&format!("the function, chunk {chunk}"), &params, whole, chunked);
    }
    // No labelled row at all: a zero loss, zero gradients, no error.
    let none = Tensor::full([23], -100, (Kind::Int64, Device::Cpu));
    let (loss, grads) = pass(&params, &|| {
        let loss = cross_entropy_sum(&hidden, &weight, &none, 4).unwrap();
        (&loss * 0.5).backward();
        loss.double_value(&[])
    });
    assert_eq!(loss, 0.0);
    assert!(grads.iter().all(|g| !g.defined() || g.abs().max().double_value(&[]) == 0.0));

    // Qwen3, tied (qwen3_a) and untied (qwen3_b): full fine-tuning, LoRA with dropout, QLoRA.
    for dir in ["qwen3_a", "qwen3_b"] {
        let mut model = load_decoder(&models().join(dir), Kind::Float, Device::Cpu).unwrap();
        let params = trainable_all(model.named_weights());
        decoder_cases(&format!("{dir} full"), &mut model, &params);
        let mut model = load_decoder(&models().join(dir), Kind::Float, Device::Cpu).unwrap();
        let params = lora(&mut model, &DECODER_TARGETS);
        decoder_cases(&format!("{dir} LoRA"), &mut model, &params);
    }
    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float };
    let mut model = load_decoder_4bit(&models().join("qwen3_a_bnb4bit"), spec, Kind::Float, Device::Cpu).unwrap();
    let params = lora(&mut model, &DECODER_TARGETS);
    decoder_cases("qwen3_a QLoRA", &mut model, &params);

    // T5: tied and scaled (original T5), untied (v1.1); full fine-tuning and LoRA.
    for dir in ["t5_tiny_orig", "t5_tiny_v11"] {
        let ids = Tensor::randint(100, [2, 9], (Kind::Int64, Device::Cpu)) + 2;
        let mask = Tensor::ones([2, 9], (Kind::Int64, Device::Cpu));
        let _ = mask.narrow(1, 7, 2).get(0).fill_(0);
        let labels = Tensor::randint(100, [2, 11], (Kind::Int64, Device::Cpu)) + 2;
        let _ = labels.narrow(1, 8, 3).get(1).fill_(-100);
        for method in ["full", "LoRA"] {
            let mut model = load_t5(&models().join(dir), Kind::Float, Device::Cpu).unwrap();
            let params = if method == "full" { trainable_all(T5::named_weights(&model)) } else { lora(&mut model, &["q", "v", "o", "wo"]) };
            let run = |m: &T5| {
                let (loss, _) = m.loss_sum(&ids, &mask, &labels, true).unwrap();
                (&loss * 0.5).backward();
                loss.double_value(&[])
            };
            model.loss_chunk = 0;
            let whole = pass(&params, &|| run(&model));
            model.loss_chunk = CHUNK;
            let chunked = pass(&params, &|| run(&model));
            assert_equal(&format!("{dir} {method}"), &params, whole, chunked);
        }
    }
}
