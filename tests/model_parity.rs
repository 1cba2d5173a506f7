//! The decoder equals transformers on random checkpoints of several Qwen3 shapes (GQA ratios,
//! tied and untied head, head_dim ≠ hidden/heads) and on Qwen2, Llama and Llama 3.1/3.2 (llama3 RoPE) configs: logits within
//! 1e-4 and greedy generation token-identical for 32 new tokens with the KV cache, single and
//! left-padded batches. Fixtures: scripts/make_model_fixtures.py.
use std::path::PathBuf;

use steptune::model::generate::{generate, GenerateConfig};
use steptune::model::load_decoder;
use steptune::nn::weights;
use tch::{Device, Kind, Tensor};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

fn expected(name: &str) -> weights::Weights {
    weights::read_file(&dir(name).join("expected.safetensors"), None, Device::Cpu, &|_| true).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<i64>> {
    let (b, n) = (t.size()[0], t.size()[1]);
    (0..b).map(|r| Vec::<i64>::try_from(&t.get(r).view([n])).unwrap()).collect()
}

// llama31_f / llama32_g: Llama 3.1 and 3.2 shapes with `rope_type: llama3` scaling (factor 8 and
// 32, original_max_position_embeddings 64 so the kept, smoothed and divided frequency bands all
// occur), 32-token inputs and 16 + 32 generated positions.
const MODELS: [&str; 7] = ["qwen3_a", "qwen3_b", "qwen3_c", "qwen2_d", "llama_e", "llama31_f", "llama32_g"];

#[test]
fn logits_equal_transformers_within_1e_4() {
    for name in MODELS {
        let model = load_decoder(&dir(name), Kind::Float, Device::Cpu).unwrap();
        let e = expected(name);
        let ids = &e["input_ids"];
        let mask = &e["attention_mask"];
        let got = tch::no_grad(|| model.forward(ids));
        let want = &e["logits"];
        // Right padding: only real positions are compared.
        let m = mask.unsqueeze(-1).to_kind(Kind::Bool);
        let diff = (got - want).abs().masked_select(&m).max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: max |Δlogit| = {diff:e}");
        eprintln!("{name}: max |Δlogit| = {diff:e}");
    }
}

#[test]
fn greedy_generation_is_token_identical_with_the_cache() {
    for name in MODELS {
        let model = load_decoder(&dir(name), Kind::Float, Device::Cpu).unwrap();
        let e = expected(name);
        let cfg = GenerateConfig { max_new_tokens: 32, eos_ids: vec![], pad_id: 0, ..Default::default() };
        let prompt = rows(&e["greedy_prompt"]);
        let want = rows(&e["greedy_output"]);
        let got = generate(&model, &prompt, &cfg);
        assert_eq!(got[0], want[0][prompt[0].len()..], "{name}: single-prompt greedy output differs");
        // Left-padded batch: each row continues its own prompt.
        let bp = rows(&e["batch_prompt"]);
        let bm = rows(&e["batch_mask"]);
        let prompts: Vec<Vec<i64>> = bp.iter().zip(&bm).map(|(p, m)| p.iter().zip(m).filter(|(_, &k)| k == 1).map(|(&t, _)| t).collect()).collect();
        let want = rows(&e["batch_output"]);
        let got = generate(&model, &prompts, &cfg);
        for r in 0..2 {
            assert_eq!(got[r], want[r][bp[r].len()..], "{name}: batch row {r} differs");
        }
    }
}

#[test]
fn a_saved_model_reloads_with_equal_logits() {
    let model = load_decoder(&dir("qwen3_b"), Kind::Float, Device::Cpu).unwrap();
    let d = tempfile::tempdir().unwrap();
    steptune::model::save_decoder(&model, d.path(), None).unwrap();
    let again = load_decoder(d.path(), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5]).view([1, 5]);
    let diff = tch::no_grad(|| (model.forward(&ids) - again.forward(&ids)).abs().max().double_value(&[]));
    assert_eq!(diff, 0.0);
}

#[test]
fn sharded_checkpoints_load_like_single_files() {
    let src = dir("qwen3_b");
    let w = weights::read_model_dir(&src, None, Device::Cpu, &|_| true).unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), d.path().join("config.json")).unwrap();
    // Two shards and the index transformers writes for them.
    let names: Vec<&String> = w.keys().collect();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let refs: Vec<(String, &Tensor)> = part.iter().map(|n| ((*n).clone(), &w[*n])).collect();
        weights::write_file(&d.path().join(file), &refs).unwrap();
        for n in part {
            map.insert((*n).clone(), serde_json::Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(d.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let single = load_decoder(&src, Kind::Float, Device::Cpu).unwrap();
    let sharded = load_decoder(d.path(), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5]).view([1, 5]);
    let diff = tch::no_grad(|| (single.forward(&ids) - sharded.forward(&ids)).abs().max().double_value(&[]));
    assert_eq!(diff, 0.0);
    // A missing shard is named.
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = format!("{:#}", load_decoder(d.path(), Kind::Float, Device::Cpu).err().unwrap());
    assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("missing"), "{err}");
}

#[test]
fn loads_in_bf16_close_to_fp32() {
    let f32m = load_decoder(&dir("qwen3_c"), Kind::Float, Device::Cpu).unwrap();
    let bf16 = load_decoder(&dir("qwen3_c"), Kind::BFloat16, Device::Cpu).unwrap();
    assert_eq!(bf16.embed_tokens.kind(), Kind::BFloat16);
    let ids = Tensor::from_slice(&[3i64, 7, 11, 200, 5]).view([1, 5]);
    let (a, b) = tch::no_grad(|| (f32m.forward(&ids), bf16.forward(&ids)));
    let rel = ((a.shallow_clone() - b).abs().max() / a.abs().max()).double_value(&[]);
    assert!(rel < 0.05, "bf16 logits are {rel} off relative to fp32");
}

#[test]
fn a_folder_that_is_not_a_checkpoint_is_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(dir("qwen3_a").join("config.json"), d.path().join("config.json")).unwrap();
    let err = format!("{:#}", load_decoder(d.path(), Kind::Float, Device::Cpu).err().unwrap());
    assert!(err.contains("neither model.safetensors nor model.safetensors.index.json"), "{err}");
}
