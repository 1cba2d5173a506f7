//! scripts/gpu-check.sh --cpu, end to end with this build's binary, so the script a lent GPU runs
//! for a few minutes never rots: every section must pass and print its figures, which are parsed
//! and checked here (NF4 mismatches 0, logit differences within their bounds and bf16 really
//! differing from fp32, tokens/s and peaks above 0, the estimate either absent or a number, the
//! transformers side either skipped with a reason or measured). Also: the random QLoRA base that
//! bench-train builds on a GPU is the same model as quantizing the 16-bit draw.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use steptune::model::qwen3::{DecoderConfig, Qwen3};
use steptune::model::{is_decoder_projection, random_decoder_4bit, Model, QuantSpec};
use steptune::nn::linear::Base;
use steptune::nn::nf4;
use steptune::recipe::Architecture;
use tch::{Device, Kind};

/// The first number after `key` in `line` (`"over 32 weights"` → 32 for `"over"`).
fn number_after(line: &str, key: &str) -> f64 {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("no `{key}` in: {line}")) + key.len()..];
    let tok: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')).collect();
    tok.parse().unwrap_or_else(|_| panic!("no number after `{key}` in: {line}"))
}

/// The number right before `key` (`"359.7 tokens/s"`).
fn number_before(line: &str, key: &str) -> f64 {
    let head = &line[..line.find(key).unwrap_or_else(|| panic!("no `{key}` in: {line}"))];
    let tok = head.trim_end().rsplit(' ').next().unwrap();
    tok.parse().unwrap_or_else(|_| panic!("no number before `{key}` in: {line}"))
}

fn lines_starting<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn gpu_check_cpu_mode_passes_and_prints_every_figure() {
    let root = common::repo();
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout.txt");
    let out_dir = dir.path().join("out");
    let start = std::time::Instant::now();
    let child = Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .arg("--cpu")
        .current_dir(&root)
        .env("STEPTUNE_BIN", env!("CARGO_BIN_EXE_steptune"))
        .env("OUT", &out_dir)
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = common::finish(child, std::time::Duration::from_secs(300), "gpu-check.sh --cpu");
    let out = std::fs::read_to_string(&stdout_path).unwrap();
    eprintln!("gpu-check.sh --cpu took {:.1}s:\n{out}", start.elapsed().as_secs_f64());
    assert_eq!(code, 0, "gpu-check.sh --cpu failed:\n{out}\nstderr:\n{err}");
    assert!(out.lines().last().unwrap_or("").starts_with("gpu-check: all checks passed"), "{out}");

    // 1. NF4: no mismatch anywhere, over the 20 bitsandbytes weights and the 12 drawn here.
    let m = lines_starting(&out, "nf4: mismatches");
    assert_eq!(m.len(), 1, "{out}");
    assert_eq!(number_after(m[0], "nf4: mismatches"), 0.0, "{}", m[0]);
    assert!(number_after(m[0], "over") >= 32.0, "{}", m[0]);
    assert!(m[0].contains("vs bitsandbytes 0,") && m[0].contains("vs tensor-op reference 0,"), "{}", m[0]);
    let bw = lines_starting(&out, "nf4: bandwidth");
    assert_eq!(bw.len(), 1, "{out}");
    assert!(number_after(bw[0], "nf4: bandwidth") > 0.0, "{}", bw[0]);

    // 2. Logits: fp32 within its bound of transformers; bf16 within its bound of fp32 yet not
    // equal to it (the bf16 path really ran in bf16).
    for model in ["qwen3_a", "qwen3_b", "t5_tiny_v11", "t5_tiny_orig"] {
        let l = lines_starting(&out, &format!("logits: {model}:"));
        assert_eq!(l.len(), 1, "{model}: {out}");
        let l = l[0];
        let fp32 = number_after(l, "fp32 cpu vs transformers");
        let fp32_bound = number_after(l, "fp32 bound");
        let bf16 = number_after(l, "vs fp32 cpu");
        let bf16_bound = number_after(l, "(bound");
        assert!(fp32 <= fp32_bound, "{l}");
        // The bounds printed are the stated ones: 1e-4 and 1e-1 of the same max |logit|.
        assert!((bf16_bound / fp32_bound - 1e3).abs() < 1.0, "{l}");
        assert!(bf16 > 0.0 && bf16 <= bf16_bound, "{l}");
        assert!(l.ends_with(": ok"), "{l}");
    }

    // 3. bench-train for batch 1 and 2: throughput, memory and model FLOPs, all measured.
    let bench = lines_starting(&out, "bench: batch");
    assert_eq!(bench.len(), 2, "{out}");
    for (l, b) in bench.iter().zip([1, 2]) {
        assert!(l.starts_with(&format!("bench: batch {b} seq 64:")), "{l}");
        assert!(number_before(l, "tokens/s") > 0.0, "{l}");
        assert!(number_after(l, "peak") > 0.0, "{l}");
        assert!(number_before(l, "model TFLOPS") > 0.0, "{l}");
    }
    // The estimate beside each measured peak (on a CPU the peak is the process's anonymous RSS,
    // which the plan's tensors do not cover, so only the figures are checked here).
    for l in lines_starting(&out, "estimate:") {
        assert!(number_after(l, "tensors") > 0.0 && number_after(l, "measured/estimate") > 0.0, "{l}");
        assert!(number_after(l, "total with runtime and slack") > number_after(l, "tensors"), "{l}");
    }
    assert_eq!(lines_starting(&out, "estimate:").len(), 2, "{out}");
    // 4. transformers: skipped with its reason, or measured with ratios.
    let hf = lines_starting(&out, "hf:");
    assert!(!hf.is_empty(), "{out}");
    if !hf[0].starts_with("hf: skipped") {
        // --cpu runs transformers for the first batch size only.
        let runs = lines_starting(&out, "hf: batch");
        assert_eq!(runs.len(), 1, "{out}");
        assert!(runs[0].starts_with("hf: batch 1: "), "{out}");
        for l in runs {
            assert!(number_before(l, "tokens/s,") > 0.0, "{l}");
            assert!(number_after(l, "steptune/hf: tokens/s") > 0.0, "{l}");
        }
    }

    // The JSON file holds the same figures.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("gpu-check.json")).unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["nf4"]["mismatches"], 0, "{v}");
    assert_eq!(v["logits"]["ok"], true);
    let bench = v["bench"].as_array().unwrap();
    assert_eq!(bench.len(), 2);
    for b in bench {
        assert!(b["steptune"]["tokens_per_second"].as_f64().unwrap() > 0.0, "{b}");
        assert!(b["steptune"]["peak_bytes"].as_i64().unwrap() > 0, "{b}");
        assert_eq!(b["steptune"]["gradient_checkpointing"], true);
        assert_eq!(b["steptune"]["method"], "qlora");
        assert!(b["steptune"]["quantized_params"].as_i64().unwrap() > 0, "the projections are 4-bit: {b}");
    }
}

/// A Qwen3 config value for `random_decoder_4bit` (the tiny shape of scripts/gpu-check/).
fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "max_position_embeddings": 256, "tie_word_embeddings": false,
        "attention_bias": false, "hidden_act": "silu", "initializer_range": 0.02
    })
}

#[test]
fn random_qlora_base_equals_quantizing_the_16_bit_draw() {
    let _rng = common::rng_lock();
    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::BFloat16 };
    tch::manual_seed(7);
    let model = random_decoder_4bit(&tiny_config(), Architecture::Qwen3, spec, Kind::BFloat16, Device::Cpu).unwrap();
    tch::manual_seed(7);
    let cfg = DecoderConfig::from_json(&tiny_config(), Architecture::Qwen3).unwrap();
    let dense = Qwen3::random_weights(&cfg, Kind::BFloat16, Device::Cpu);
    let projections = model.projections();
    assert_eq!(projections.len(), 14);
    for (name, lin) in projections {
        let w = &dense[&format!("{name}.weight")];
        assert!(is_decoder_projection(&format!("{name}.weight")));
        match &lin.base {
            Base::Nf4 { weight, compute } => {
                assert_eq!(*compute, Kind::BFloat16);
                let want = nf4::quantize(w, 64, true).unwrap();
                assert!(weight.packed.equal(&want.packed), "{name}: packed codes differ");
                assert!(nf4::dequantize(weight).equal(&nf4::dequantize(&want)), "{name}: dequantized values differ");
            }
            Base::Dense(_) => panic!("{name} is dense: random_decoder_4bit must quantize every projection"),
        }
    }
    // Everything else is the 16-bit draw itself (embedding, head, norms).
    for (name, t) in Model::dense_weights(&model) {
        assert!(t.equal(&dense[&name]), "{name} differs");
        assert_eq!(t.kind(), Kind::BFloat16, "{name}");
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_steptune")).exists());
}
