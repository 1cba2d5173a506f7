//! `steptune estimate`: the arithmetic against what steptune allocates (NF4 storage, LoRA
//! tensors), the command's errors, and the plan's total against the peak RSS of real training
//! steps on tiny shapes (each in its own process, as scripts/bench_memory.sh does at scale).
mod common;

use std::path::Path;

use common::{repo, steptune, steptune_env, write};
use steptune::adapt::peft::{self, LoraSpec};
use steptune::nn::nf4::{self, Absmax};
use steptune::recipe::Architecture;
use steptune::train::memory::{self, decoder_projections, lora_params, nf4_bytes, parse_budget};
use tch::{Device, Kind, Tensor};

/// Bytes the quantizer's tensors hold: packed codes, and the absmax (plain fp32, or 8-bit codes,
/// the nested fp32 absmax and the 256-entry code table).
fn allocated(q: &nf4::Nf4Tensor) -> i64 {
    let b = |t: &Tensor| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64;
    b(&q.packed)
        + match &q.absmax {
            Absmax::Plain(a) => b(a),
            Absmax::Nested { quantized, nested_absmax, nested_code, .. } => b(quantized) + b(nested_absmax) + b(nested_code),
        }
}

#[test]
fn nf4_bytes_equal_what_the_quantizer_allocates() {
    // [out, in] shapes with a partial last block, an odd element count and > 256 blocks.
    for shape in [[96i64, 64], [33, 65], [3072, 1024 / 8], [7, 9]] {
        let w = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        for dq in [false, true] {
            let q = nf4::quantize(&w, 64, dq).unwrap();
            assert_eq!(nf4_bytes(shape[0] * shape[1], 64, dq), allocated(&q), "shape {shape:?}, double quant {dq}");
        }
    }
    // Qwen3-8B's up_proj: 0.5 B/param for the codes; the absmax costs 4/64 B/param plain, and
    // 1/64 + 4/(64·256) with double quantization: bitsandbytes' figures.
    let n = 12288 * 4096;
    assert_eq!(nf4_bytes(n, 64, false), n / 2 + 4 * n / 64);
    assert_eq!(nf4_bytes(n, 64, true), n / 2 + n / 64 + 4 * (n / 64 / 256) + 1024);
}

#[test]
fn lora_counts_equal_the_tensors_peft_attach_creates() {
    let config = serde_json::json!({"model_type": "qwen3", "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100});
    let cfg = steptune::model::qwen3::DecoderConfig::from_json(&config, Architecture::Qwen3).unwrap();
    for targets in [vec!["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], vec!["q_proj", "v_proj"], vec!["down_proj"]] {
        let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        let mut m = steptune::model::random_decoder(&config, Architecture::Qwen3, Kind::Float, Device::Cpu).unwrap();
        peft::attach(&mut m, &LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, targets: targets.clone() }).unwrap();
        let made: i64 = peft::named_lora(&m).iter().map(|(_, t)| t.numel() as i64).sum();
        assert_eq!(lora_params(&decoder_projections(&cfg), cfg.num_hidden_layers, 8, &targets), made, "{targets:?}");
        // And the dense base is what the plan counts as base weights.
        let dense: i64 = m.dense_weights().iter().map(|(_, t)| t.numel() as i64).sum();
        let projs: i64 = decoder_projections(&cfg).iter().map(|p| p.input * p.output).sum::<i64>() * 3;
        assert_eq!(dense, projs + 2 * 100 * 48 + 3 * (2 * 48 + 2 * 16) + 48, "embed + untied lm_head + norms");
    }
}

#[test]
fn budgets_parse_in_decimal_and_binary_units_or_are_named() {
    assert_eq!(parse_budget("24GiB").unwrap(), 24 << 30);
    assert_eq!(parse_budget("24GB").unwrap(), 24_000_000_000);
    assert_eq!(parse_budget("24000MiB").unwrap(), 24000 << 20);
    assert_eq!(parse_budget("1.5 GiB").unwrap(), 3 << 29);
    for bad in ["24", "24 gigs", "GiB", "-3GiB", "0GB", "24XB"] {
        let e = format!("{:#}", parse_budget(bad).unwrap_err());
        assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
    }
}

const SHAPE: &str = "model:\n  source: random\n  architecture: qwen3\n  config: {model_type: qwen3, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64, vocab_size: 48000, tie_word_embeddings: false}\n";

fn recipe(dir: &Path, method: &str, ckpt: bool, precision: &str, chunk: usize) -> std::path::PathBuf {
    let yaml = format!(
        "name: est\nseed: 0\n{SHAPE}finetune: {{method: {method}, lora_r: 8, lora_alpha: 16, lora_dropout: 0.0, lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj], quantization: {{bnb_4bit_compute_dtype: {precision}}}}}\n\
         training: {{precision: {precision}, gradient_checkpointing: {ckpt}, loss_chunk_tokens: {chunk}, device: cpu, per_device_train_batch_size: 1}}\n\
         data: {{files: [{}], max_length: 384}}\n",
        repo().join("data/procedures.jsonl").display()
    );
    write(dir, &format!("{method}-{ckpt}-{chunk}.yaml"), yaml.as_bytes())
}

#[test]
fn the_command_prints_lines_a_total_and_what_fits() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "qlora", true, "bf16", 1024);
    let r = r.to_str().unwrap();
    let (code, out, err) = steptune(&["estimate", r, "--json"], d.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let counted: u64 = v["lines"].as_array().unwrap().iter().filter(|l| l["counted"] == true).map(|l| l["bytes"].as_u64().unwrap()).sum();
    assert_eq!(v["total_bytes"].as_u64().unwrap(), counted, "{out}");
    assert_eq!(v["seq"], 384);
    // More tokens never cost less; a --set reaches the plan.
    let (_, out2, _) = steptune(&["estimate", r, "--json", "--seq", "768", "--set", "training.per_device_train_batch_size=2"], d.path());
    let v2: serde_json::Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v2["batch"], 2);
    assert!(v2["total_bytes"].as_u64() > v["total_bytes"].as_u64());
    // A budget: the largest batch fits and one more does not.
    let (code, out, err) = steptune(&["estimate", r, "--json", "--budget", "1GiB"], d.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mb = v["max_batch"].as_i64().expect("some batch fits in 1 GiB");
    let at = |b: i64| -> u64 {
        let (_, o, _) = steptune(&["estimate", r, "--json", "--batch", &b.to_string()], d.path());
        serde_json::from_str::<serde_json::Value>(&o).unwrap()["total_bytes"].as_u64().unwrap()
    };
    assert!(at(mb) <= 1 << 30 && at(mb + 1) > 1 << 30, "max_batch {mb}");
    let (code, out, _) = steptune(&["estimate", r, "--budget", "24GiB"], d.path());
    assert_eq!(code, 0);
    assert!(out.contains("total") && out.contains("activations (gradient checkpointing)") && out.contains("largest micro-batch"), "{out}");
    // With IFEval in the eval stage, the KV cache is sized for its 1280 new tokens.
    let kv_line = |args: &[&str]| -> (u64, String) {
        let (code, o, e) = steptune(&[&["estimate", r, "--json"], args].concat(), d.path());
        assert_eq!(code, 0, "{e}");
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        let l = v["lines"].as_array().unwrap().iter().find(|l| l["name"] == "eval stage: KV cache").unwrap().clone();
        (l["bytes"].as_u64().unwrap(), l["detail"].as_str().unwrap().to_string())
    };
    let (plain, plain_detail) = kv_line(&[]);
    let (with_ifeval, detail) = kv_line(&["--set", "eval.ifeval=true"]);
    assert!(plain_detail.contains("eval.max_new_tokens"), "{plain_detail}");
    assert!(with_ifeval > plain && detail.contains("1280 new tokens, eval.ifeval_max_new_tokens"), "{detail}");
    // check shows the total too.
    let (code, out, _) = steptune(&["check", r], d.path());
    assert_eq!(code, 0);
    assert!(out.contains("# memory estimate: "), "{out}");
}

#[test]
fn errors_name_the_budget_the_key_and_the_missing_config() {
    let d = tempfile::tempdir().unwrap();
    let r = recipe(d.path(), "lora", false, "fp32", 1024);
    let r = r.to_str().unwrap();
    let (code, _, err) = steptune(&["estimate", r, "--budget", "24 gigs"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("--budget `24 gigs`") && err.contains("24GiB"), "{err}");
    let (code, _, err) = steptune(&["estimate", r, "--set", "training.lerning_rate=1e-4"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("training.lerning_rate") && err.contains("did you mean `training.learning_rate`"), "{err}");
    write(d.path(), "m.yaml", b"model: {source: ./no-such-model}\ndata: {files: [a.csv]}\n");
    let (code, _, err) = steptune(&["estimate", "m.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("no-such-model") && err.contains("no such folder"), "{err}");
    std::fs::create_dir_all(d.path().join("empty")).unwrap();
    write(d.path(), "e.yaml", b"model: {source: ./empty}\ndata: {files: [a.csv]}\n");
    let (code, _, err) = steptune(&["estimate", "e.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("has no config.json"), "{err}");
    write(d.path(), "h.yaml", b"model: {source: nobody/nothing}\ndata: {files: [a.csv]}\n");
    let (code, _, err) = steptune_env(&["estimate", "h.yaml"], d.path(), &[("HF_HUB_CACHE", d.path())]);
    assert_eq!(code, 1);
    assert!(err.contains("no config.json found locally") && err.contains("never downloads"), "{err}");
}

/// Peak RSS of real training steps (bench-train, VmHWM reset after loading) within ±10% of the
/// plan, for full fine-tuning, LoRA and QLoRA with and without gradient checkpointing, fp32 (this
/// CPU has no fast bf16), on a 4-layer hidden-256 shape with a 48k vocabulary at sequence 384.
/// glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so freed tensors leave the RSS; see
/// scripts/bench_memory.sh.
#[test]
fn measured_peak_rss_is_within_ten_percent_of_the_plan() {
    let d = tempfile::tempdir().unwrap();
    let rows: String = (0..3).map(|i| format!("{{\"input_ids\": {ids:?}, \"labels\": {ids:?}}}\n", ids = (0..384).map(|j| 10 + (i * 7 + j * 13) % 900).collect::<Vec<i64>>())).collect();
    let data = write(d.path(), "train.jsonl", rows.as_bytes());
    let mut report = Vec::new();
    // The head's loss all at once (0) and in chunks of 128 of the 383 labelled tokens.
    for (method, ckpt, chunk) in [("full", false, 0), ("full", true, 128), ("lora", false, 128), ("lora", true, 0), ("qlora", false, 128), ("qlora", true, 128)] {
        let r = recipe(d.path(), method, ckpt, "fp32", chunk);
        let (code, out, err) = steptune(&["estimate", r.to_str().unwrap(), "--json"], d.path());
        assert_eq!(code, 0, "{err}");
        let est = serde_json::from_str::<serde_json::Value>(&out).unwrap()["total_bytes"].as_f64().unwrap() / memory::MIB;
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_steptune"));
        c.args(["bench-train", r.to_str().unwrap(), "--prepared", data.to_str().unwrap(), "--mode", "ordered", "--steps", "1", "--warmup-steps", "1"])
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .env("OMP_NUM_THREADS", "2")
            .current_dir(d.path());
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap().to_string();
        let measured = serde_json::from_str::<serde_json::Value>(&line).unwrap()["peak_rss_train_mib"].as_f64().expect("VmHWM could be reset");
        report.push(format!("{method}{}, chunk {chunk}: estimate {est:.1} MiB, measured {measured:.1} MiB, ratio {:.3}", if ckpt { "+ckpt" } else { "" }, measured / est));
    }
    eprintln!("{}", report.join("\n"));
    for l in &report {
        let ratio: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((0.9..=1.1).contains(&ratio), "outside ±10%:\n{}", report.join("\n"));
    }
}
