//! `steptune export --format gguf` writes the files llama.cpp's own converter writes
//! (tests/fixtures/gguf/expected.json, from scripts/make_gguf_fixtures.py with llama-cpp-python
//! 0.3.36's convert_hf_to_gguf.py): Qwen3 tied and untied, Qwen2, Llama 3.1 (q/k permuted,
//! rope_freqs) and a LoRA adapter merged on the way, each as f32, f16, bf16 and q8_0 — metadata in
//! order, tensor names, types, dims and bytes, and the whole file's sha256. Then steptune's own
//! greedy tokens on each checkpoint equal llama.cpp's on the F32 file, and its tokenization of
//! the chat prompt equals llama.cpp's from the GGUF vocabulary.
//!
//! The checkpoints are rebuilt here from the fixture's spec with the script's bit generator, and
//! checked against the sha256 the script recorded for every source tensor before anything is
//! exported.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use steptune::model::generate::{generate, GenerateConfig};
use steptune::model::load_decoder;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/gguf/expected.json")).unwrap()).unwrap()
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// scripts/make_gguf_fixtures.py's `bf16_bits`.
fn bf16_bits(name: &str, n: usize, seed: u64, norm: bool) -> Vec<u16> {
    let base = fnv1a64(name) ^ seed;
    let (lo, count) = if norm { (-1i64, 2u64) } else { (-6, 4) };
    (1..=n as u64)
        .map(|i| {
            let mut z = base.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let sign = if norm { 0 } else { (z >> 63) as u16 };
            let exp = ((127 + lo) as u64 + (z >> 56) % count) as u16;
            let man = ((z >> 40) & 0x7f) as u16;
            (sign << 15) | (exp << 7) | man
        })
        .collect()
}

fn le_bytes(bits: &[u16]) -> Vec<u8> {
    bits.iter().flat_map(|b| b.to_le_bytes()).collect()
}

fn shape_of(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// Writes the checkpoint of fixture entry `ck` into `dir` (bf16 weights, tokenizer, config and
/// extra files), checking every tensor against the script's hashes.
fn build_checkpoint(ck: &Value, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let seed = ck["seed"].as_u64().unwrap();
    let mut tensors = Vec::new();
    for t in ck["tensors"].as_array().unwrap() {
        let name = t[0].as_str().unwrap();
        let shape = shape_of(&t[1]);
        let n: i64 = shape.iter().product();
        let bytes = le_bytes(&bf16_bits(name, n as usize, seed, name.ends_with("norm.weight")));
        assert_eq!(sha(&bytes), ck["source_sha256"][name].as_str().unwrap(), "{name}: the generator differs from the fixture script's");
        tensors.push((name.to_string(), Tensor::from_data_size(&bytes, &shape, Kind::BFloat16)));
    }
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    steptune::nn::weights::write_file(&dir.join("model.safetensors"), &refs).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&ck["config"]).unwrap()).unwrap();
    let tok = root().join("../shared/models/qwen3-8b");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    for (name, text) in ck["files"].as_object().unwrap() {
        std::fs::write(dir.join(name), text.as_str().unwrap()).unwrap();
    }
}

/// The script's adapter: lora_A [r, in] / lora_B [out, r] as float32 holding bf16 bit patterns.
fn build_adapter(ck: &Value, base: &Value, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ad = &ck["adapter"];
    let (r, seed) = (ad["r"].as_i64().unwrap(), ad["seed"].as_u64().unwrap());
    let targets: Vec<&str> = ad["targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let mut tensors = Vec::new();
    for t in base["tensors"].as_array().unwrap() {
        let name = t[0].as_str().unwrap();
        let Some(module) = name.strip_suffix(".weight") else { continue };
        if !targets.contains(&module.rsplit('.').next().unwrap()) {
            continue;
        }
        let s = shape_of(&t[1]);
        for (part, shape) in [("lora_A", [r, s[1]]), ("lora_B", [s[0], r])] {
            let key = format!("base_model.model.{module}.{part}.weight");
            let bits = bf16_bits(&key, (shape[0] * shape[1]) as usize, seed, false);
            let bytes: Vec<u8> = bits.iter().flat_map(|b| ((*b as u32) << 16).to_le_bytes()).collect();
            assert_eq!(sha(&bytes), ck["adapter_sha256"][&key].as_str().unwrap(), "{key}");
            tensors.push((key, Tensor::from_data_size(&bytes, &shape, Kind::Float)));
        }
    }
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    steptune::nn::weights::write_file(&dir.join("adapter_model.safetensors"), &refs).unwrap();
    let cfg = json!({"peft_type": "LORA", "r": r, "lora_alpha": ad["lora_alpha"], "lora_dropout": 0.0, "target_modules": targets, "task_type": "CAUSAL_LM", "base_model_name_or_path": null});
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// A GGUF file read back as the fixture script describes it (gguf-py's reader).
struct Described {
    kv: Vec<Value>,
    tensors: Vec<Value>,
}

fn describe(bytes: &[u8]) -> Described {
    let mut p = 0usize;
    let u32_ = |p: &mut usize| {
        let v = u32::from_le_bytes(bytes[*p..*p + 4].try_into().unwrap());
        *p += 4;
        v
    };
    let u64_ = |p: &mut usize| {
        let v = u64::from_le_bytes(bytes[*p..*p + 8].try_into().unwrap());
        *p += 8;
        v
    };
    let str_ = |p: &mut usize| {
        let n = u64::from_le_bytes(bytes[*p..*p + 8].try_into().unwrap()) as usize;
        let s = String::from_utf8(bytes[*p + 8..*p + 8 + n].to_vec()).unwrap();
        *p += 8 + n;
        s
    };
    assert_eq!(u32_(&mut p), 0x4655_4747, "magic");
    assert_eq!(u32_(&mut p), 3, "version");
    let (nt, nkv) = (u64_(&mut p), u64_(&mut p));
    let names = ["UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"];
    let mut kv = Vec::new();
    for _ in 0..nkv {
        let key = str_(&mut p);
        let t = u32_(&mut p);
        let scalar = |t: u32, p: &mut usize| -> Value {
            match t {
                4 => json!(u32_(p)),
                5 => json!(u32_(p) as i32),
                6 => json!(f32::from_bits(u32_(p)) as f64),
                7 => {
                    *p += 1;
                    json!(bytes[*p - 1] != 0)
                }
                8 => json!(str_(p)),
                other => panic!("{key}: value type {other} not expected"),
            }
        };
        if t == 9 {
            let item = u32_(&mut p);
            let n = u64_(&mut p);
            let start = p;
            let mut first = Vec::new();
            for i in 0..n {
                let v = scalar(item, &mut p);
                if i < 3 {
                    first.push(v);
                }
            }
            kv.push(json!({"key": key, "type": "ARRAY", "item": names[item as usize], "len": n, "first": first, "sha256": sha(&bytes[start..p])}));
        } else {
            kv.push(json!({"key": key, "type": names[t as usize], "value": scalar(t, &mut p)}));
        }
    }
    let mut infos = Vec::new();
    for _ in 0..nt {
        let name = str_(&mut p);
        let nd = u32_(&mut p);
        let dims: Vec<u64> = (0..nd).map(|_| u64_(&mut p)).collect();
        let ty = u32_(&mut p);
        let off = u64_(&mut p);
        infos.push((name, dims, ty, off));
    }
    let data = p.div_ceil(32) * 32;
    let tensors = infos
        .iter()
        .map(|(name, dims, ty, off)| {
            let n: u64 = dims.iter().product();
            let (tname, nbytes) = match ty {
                0 => ("F32", 4 * n),
                1 => ("F16", 2 * n),
                8 => ("Q8_0", n / 32 * 34),
                30 => ("BF16", 2 * n),
                other => panic!("{name}: ggml type {other}"),
            };
            let start = data + *off as usize;
            json!({"name": name, "type": tname, "dims": dims, "sha256": sha(&bytes[start..start + nbytes as usize])})
        })
        .collect();
    Described { kv, tensors }
}

fn steptune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_steptune")).args(args).output().unwrap()
}

/// Every checkpoint × outtype: the same file as llama.cpp's converter; then steptune's greedy
/// tokens equal llama.cpp's.
#[test]
fn export_equals_llama_cpp_converter_and_generation() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let checkpoints = fx["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 5, "qwen3_tied, qwen3_untied, qwen2, llama, qwen3_lora");
    let prompt = fx["prompt"].as_str().unwrap();
    let mut files = 0;
    for ck in checkpoints {
        let name = ck["name"].as_str().unwrap();
        // The model folder the export reads, and for the adapter case the adapter folder, named
        // as the converter's merged folder was (the name goes into general.name).
        let (model_dir, adapter_dir) = match ck.get("base").and_then(Value::as_str) {
            Some(base) => {
                let base_ck = checkpoints.iter().find(|c| c["name"] == base).unwrap();
                let adapter = tmp.path().join("adapters").join(name);
                build_adapter(ck, base_ck, &adapter);
                (tmp.path().join(base), Some(adapter))
            }
            None => {
                let d = tmp.path().join(name);
                build_checkpoint(ck, &d);
                (d, None)
            }
        };
        for (ot, want) in ck["outtypes"].as_object().unwrap() {
            let out = tmp.path().join("out").join(format!("{name}.{ot}.gguf"));
            let mut args = vec!["export", "--model", model_dir.to_str().unwrap(), "--outtype", ot, "--out", out.to_str().unwrap()];
            if let Some(a) = &adapter_dir {
                args.extend(["--adapter", a.to_str().unwrap()]);
            }
            let o = steptune(&args);
            assert!(o.status.success(), "{name} {ot}: export failed: {}", String::from_utf8_lossy(&o.stderr));
            let bytes = std::fs::read(&out).unwrap();
            let got = describe(&bytes);
            let want_kv = want["kv"].as_array().unwrap();
            for (i, (g, w)) in got.kv.iter().zip(want_kv).enumerate() {
                assert_eq!(g, w, "{name} {ot}: metadata entry {i} differs from llama.cpp's converter");
            }
            assert_eq!(got.kv.len(), want_kv.len(), "{name} {ot}: {} metadata keys, llama.cpp wrote {}", got.kv.len(), want_kv.len());
            let want_t = want["tensors"].as_array().unwrap();
            for (g, w) in got.tensors.iter().zip(want_t) {
                assert_eq!(g, w, "{name} {ot}: tensor differs from llama.cpp's converter");
            }
            assert_eq!(got.tensors.len(), want_t.len(), "{name} {ot}: tensor count");
            assert_eq!(sha(&bytes), want["file_sha256"].as_str().unwrap(), "{name} {ot}: the file is not byte-identical to llama.cpp's");
            files += 1;
        }
        // Generation: llama.cpp on the F32 file against steptune on the checkpoint (+ adapter).
        let lc = &ck["outtypes"]["f32"]["llama_cpp"];
        let mut model = load_decoder(&model_dir, Kind::Float, Device::Cpu).unwrap();
        if let Some(a) = &adapter_dir {
            steptune::adapt::peft::load_adapter(&mut model, a).unwrap();
            steptune::adapt::peft::merge(&mut model);
        }
        let tok = steptune::model::tokenizer::TokenizerBundle::from_dir(&model_dir).unwrap();
        let ids: Vec<i64> = tok.tokenizer.encode(prompt, false).unwrap().get_ids().iter().map(|&i| i as i64).collect();
        let want_ids: Vec<i64> = lc["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ids, want_ids, "{name}: steptune's tokenization of the chat prompt differs from llama.cpp's (GGUF vocabulary)");
        let n = fx["greedy_tokens"].as_u64().unwrap() as usize;
        let got = generate(&model, &[ids], &GenerateConfig { max_new_tokens: n, ..Default::default() });
        let want: Vec<i64> = lc["greedy"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(got[0], want, "{name}: steptune's greedy tokens differ from llama.cpp's on the F32 file");
        let f16: Vec<i64> = ck["outtypes"]["f16"]["llama_cpp"]["greedy"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        eprintln!("{name}: greedy {want:?} (llama.cpp f16 {} of {n} equal)", f16.iter().zip(&want).filter(|(a, b)| a == b).count());
    }
    assert_eq!(files, 20);
}

/// The Modelfile beside the export, a refusal for what llama.cpp cannot take, and no partial file.
#[test]
fn modelfile_and_refusals() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let ck = &fx["checkpoints"][0];
    let dir = tmp.path().join("qwen3_tied");
    build_checkpoint(ck, &dir);
    let out = tmp.path().join("o/m.gguf");
    let o = steptune(&["export", "--model", dir.to_str().unwrap(), "--outtype", "q8_0", "--out", out.to_str().unwrap(), "--system", "Answer with numbered steps."]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mf = std::fs::read_to_string(tmp.path().join("o/Modelfile")).unwrap();
    assert!(mf.contains("FROM ./m.gguf\n") && mf.contains("SYSTEM \"\"\"Answer with numbered steps.\"\"\"") && mf.contains("PARAMETER stop \"<|im_end|>\""), "{mf}");
    assert!(mf.contains("<think>\n\n</think>"), "Qwen3's template gets thinking off: {mf}");

    // Q4_K is llama-quantize's job; an unknown outtype is named.
    let o = steptune(&["export", "--model", dir.to_str().unwrap(), "--outtype", "q4_k_m", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("llama-quantize"));
    // T5 is refused with the reason.
    let t5 = root().join("tests/fixtures/models/t5_tiny_v11");
    let o = steptune(&["export", "--model", t5.to_str().unwrap(), "--out", tmp.path().join("t5.gguf").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("T5 export is not implemented"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path().join("t5.gguf").exists());
    // A checkpoint holding NaN: an error naming the tensor, and no file left behind.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), bad.join(f)).unwrap();
    }
    let mut w = steptune::nn::weights::read_model_dir(&dir, None, Device::Cpu, &|_| true).unwrap();
    let t = w.get_mut("model.layers.1.mlp.up_proj.weight").unwrap();
    let _ = t.get(0).get(0).fill_(f64::NAN);
    let refs: Vec<(String, &Tensor)> = w.iter().map(|(n, t)| (n.clone(), t)).collect();
    steptune::nn::weights::write_file(&bad.join("model.safetensors"), &refs).unwrap();
    let bad_out = tmp.path().join("bad.gguf");
    let o = steptune(&["export", "--model", bad.to_str().unwrap(), "--out", bad_out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("NaN"), "{err}");
    assert!(!bad_out.exists() && !tmp.path().join("bad.gguf.partial").exists());
    // A tokenizer llama.cpp does not know (one steptune trained, as the quickstart's) is refused
    // as the converter refuses it, unless --tokenizer-pre names a pre-tokenizer llama.cpp has.
    let own = tmp.path().join("own_tok");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(dir.join("config.json"), own.join("config.json")).unwrap();
    std::fs::copy(dir.join("model.safetensors"), own.join("model.safetensors")).unwrap();
    let texts = ["Open the app and tap Settings.", "Tap Forgot Password, then enter your email.", "How do I reset my password?"];
    steptune::model::tokenizer::TokenizerBundle::train_bpe(texts.iter().copied(), 300, 1).unwrap().save(&own).unwrap();
    let own_out = tmp.path().join("own.gguf");
    let o = steptune(&["export", "--model", own.to_str().unwrap(), "--out", own_out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("does not know this BPE pre-tokenizer") && err.contains("--tokenizer-pre"), "{err}");
    let o = steptune(&["export", "--model", own.to_str().unwrap(), "--out", own_out.to_str().unwrap(), "--tokenizer-pre", "gpt2"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no pre-tokenizer of that name"));
    let o = steptune(&["export", "--model", own.to_str().unwrap(), "--out", own_out.to_str().unwrap(), "--tokenizer-pre", "gpt-2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = describe(&std::fs::read(&own_out).unwrap());
    let kv = |k: &str| d.kv.iter().find(|e| e["key"] == k).cloned().unwrap();
    assert_eq!(kv("tokenizer.ggml.pre")["value"], "gpt-2");
    assert_eq!(kv("tokenizer.ggml.tokens")["len"], 151936, "every id up to the config's vocab_size, [PAD<id>] past the tokenizer's");
    // An adapter for another model: the mismatch is named.
    let o = steptune(&["export", "--model", dir.to_str().unwrap(), "--adapter", root().join("tests/fixtures/models/qwen3_a/adapter").to_str().unwrap(), "--out", bad_out.to_str().unwrap()]);
    assert!(!o.status.success(), "a 64-wide adapter on a 32-wide model must fail");
}

/// A QLoRA adapter merges into the base it was trained on: each projection through NF4 and back
/// (blocksize 64, double quantization), then W + B·A·scaling. The same tensors as steptune's own
/// QLoRA model with the adapter merged and saved, then exported; not those of the 16-bit merge.
#[test]
fn qlora_adapter_merges_into_the_nf4_dequantized_base() {
    use steptune::model::{load_model, QuantSpec};
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let cks = fx["checkpoints"].as_array().unwrap();
    let base_ck = cks.iter().find(|c| c["name"] == "qwen3_tied").unwrap();
    let lora_ck = cks.iter().find(|c| c["name"] == "qwen3_lora").unwrap();
    let base = tmp.path().join("qwen3_tied");
    build_checkpoint(base_ck, &base);
    let adapter = tmp.path().join("adapters/qwen3_lora");
    build_adapter(lora_ck, base_ck, &adapter);

    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float };
    let mut m = load_model(&base, Some(spec), Kind::Float, Device::Cpu).unwrap();
    steptune::adapt::peft::load_adapter(m.as_mut(), &adapter).unwrap();
    steptune::adapt::peft::merge(m.as_mut());
    let merged = tmp.path().join("merged/qwen3_lora");
    let tok = steptune::model::tokenizer::TokenizerBundle::from_dir(&base).unwrap();
    m.save(&merged, Some(&tok)).unwrap();

    let export = |args: &[&str], out: &str| {
        let f = tmp.path().join(out);
        let mut a = vec!["export", "--outtype", "f32", "--out", f.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = steptune(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        describe(&std::fs::read(f).unwrap()).tensors.into_iter().filter(|t| t["name"] != "output.weight").collect::<Vec<_>>()
    };
    let (b, a) = (base.to_str().unwrap(), adapter.to_str().unwrap());
    let reference = export(&["--model", merged.to_str().unwrap()], "ref.gguf");
    let qlora = export(&["--model", b, "--adapter", a, "--qlora"], "qlora.gguf");
    let plain = export(&["--model", b, "--adapter", a], "plain.gguf");
    assert_eq!(qlora, reference, "the QLoRA merge differs from steptune's own 4-bit model merged");
    let differ: Vec<&Value> = qlora.iter().zip(&plain).filter(|(q, p)| q != p).map(|(q, _)| &q["name"]).collect();
    assert_eq!(differ.len(), 14, "every projection (7 × 2 layers), and only those, changes with the NF4 base: {differ:?}");
}
