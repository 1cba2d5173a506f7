//! AdamW, clipping and the learning-rate schedules equal torch.optim.AdamW,
//! torch.nn.utils.clip_grad_norm_ and transformers.get_scheduler (fixtures:
//! scripts/make_model_fixtures.py).
use serde_json::Value;
use steptune::recipe::Scheduler;
use steptune::train::optim::{clip_grad_norm, AdamW};
use steptune::train::schedule::{lr_at, warmup_steps};
use tch::{Kind, Tensor};

fn fixture(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a number array"),
    }
}

fn tensor(v: &Value, shape: &[i64]) -> Tensor {
    Tensor::from_slice(&flat(v)).view(shape)
}

/// Sets `p.grad` to exactly `g` (tch has no grad setter): the gradient of sum(p * g) is g.
fn set_grad(p: &Tensor, g: &Tensor) {
    let mut grad = p.grad();
    if grad.defined() {
        let _ = grad.zero_();
    }
    (p * g.detach()).sum(Kind::Float).backward();
}

fn shapes(fx: &Value) -> Vec<Vec<i64>> {
    fx["param_shapes"].as_array().unwrap().iter().map(|s| s.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect()
}

#[test]
fn adamw_equals_torch_for_three_steps() {
    let fx = fixture("adamw.json");
    let shapes = shapes(&fx);
    let params: Vec<Tensor> = fx["initial_params"].as_array().unwrap().iter().zip(&shapes).map(|(v, s)| tensor(v, s).set_requires_grad(true)).collect();
    let o = &fx["optimizer"];
    let betas = o["betas"].as_array().unwrap();
    let named = vec![("w.weight".to_string(), params[0].shallow_clone()), ("w.bias_like".to_string(), params[1].shallow_clone())];
    let mut opt = AdamW::new(named, betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap(), o["eps"].as_f64().unwrap(), o["weight_decay"].as_f64().unwrap());
    // torch decays every parameter it is given; so does this optimizer for these names.
    assert!(opt.params.iter().all(|p| p.decay));
    for (k, step) in fx["steps"].as_array().unwrap().iter().enumerate() {
        for ((p, g), s) in params.iter().zip(step["grads"].as_array().unwrap()).zip(&shapes) {
            set_grad(p, &tensor(g, s));
        }
        opt.step(o["lr"].as_f64().unwrap()).unwrap();
        for ((p, want), s) in params.iter().zip(step["params_after"].as_array().unwrap()).zip(&shapes) {
            let d = (p.detach() - tensor(want, s)).abs().max().double_value(&[]);
            assert!(d < 1e-7, "step {}: max |Δ| = {d:e}", k + 1);
        }
    }
}

#[test]
fn no_weight_decay_on_norms_and_biases() {
    for (name, decays) in [
        ("model.layers.0.input_layernorm.weight", false),
        ("model.layers.0.self_attn.q_norm.weight", false),
        ("model.norm.weight", false),
        ("model.layers.0.self_attn.q_proj.bias", false),
        ("model.layers.0.self_attn.q_proj.weight", true),
        ("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", true),
    ] {
        assert_eq!(steptune::train::optim::decays(name), decays, "{name}");
    }
}

#[test]
fn clip_grad_norm_equals_torch() {
    let fx = fixture("adamw.json");
    let shapes = shapes(&fx);
    let c = &fx["clip_grad_norm"];
    for case in c["per_step"].as_array().unwrap() {
        let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s.as_slice(), (Kind::Float, tch::Device::Cpu)).set_requires_grad(true)).collect();
        for ((p, g), s) in params.iter().zip(case["grads"].as_array().unwrap()).zip(&shapes) {
            set_grad(p, &tensor(g, s));
        }
        let opt = AdamW::new(params.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone())).collect(), 0.9, 0.999, 1e-8, 0.0);
        let total = clip_grad_norm(&opt.params, c["max_norm"].as_f64().unwrap());
        assert!((total - case["total_norm"].as_f64().unwrap()).abs() < 1e-6, "total norm {total}");
        for ((p, want), s) in params.iter().zip(case["clipped_grads"].as_array().unwrap()).zip(&shapes) {
            let d = (p.grad() - tensor(want, s)).abs().max().double_value(&[]);
            assert!(d < 1e-7, "clipped grads differ by {d:e}");
        }
    }
}

#[test]
fn schedules_equal_transformers() {
    let fx = fixture("lr_schedules.json");
    let (base, warm, total) = (fx["base_lr"].as_f64().unwrap(), fx["num_warmup_steps"].as_u64().unwrap(), fx["num_training_steps"].as_u64().unwrap());
    for (name, kind) in [("linear", Scheduler::Linear), ("cosine", Scheduler::Cosine), ("constant_with_warmup", Scheduler::Constant)] {
        for (step, want) in fx[name].as_array().unwrap().iter().enumerate() {
            let got = lr_at(kind, base, step as u64, warm, total);
            assert!((got - want.as_f64().unwrap()).abs() < 1e-15, "{name} step {step}: {got} vs {want}");
        }
    }
    // transformers rounds a warmup ratio up.
    assert_eq!(warmup_steps(Some(0.05), None, 101), 6);
    assert_eq!(warmup_steps(None, Some(7), 50), 7);
    assert_eq!(warmup_steps(None, None, 50), 0);
}
