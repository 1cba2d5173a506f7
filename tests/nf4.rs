//! NF4 quantization against bitsandbytes (fixtures from scripts/make_nf4_fixtures.py): bit-exact
//! codes, scales, nested scales and dequantized values; the transformers 4-bit checkpoint
//! layout; `steptune quantize` end to end.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use steptune::nn::nf4::{self, Absmax, Nf4Tensor};
use steptune::model::is_decoder_projection;
use steptune::nn::weights::{read_file, read_model_dir, Weights};
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    common::repo().join("tests/fixtures/nf4")
}

fn load(name: &str) -> Weights {
    read_file(&fixtures().join(name), None, Device::Cpu, &|_| true).unwrap()
}

struct Case {
    name: String,
    shape: Vec<i64>,
}

fn cases() -> Vec<Case> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap()).unwrap();
    let cs: Vec<Case> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case { name: c["name"].as_str().unwrap().to_string(), shape: c["shape"].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect() })
        .collect();
    assert_eq!(cs.len(), 10);
    cs
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel();
    let mut b = vec![0u8; n * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut b, n);
    b
}

/// Bitwise equality with a message naming what differs and where first.
fn assert_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{what}: kind");
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let (g, w) = (bytes(got), bytes(want));
    if g != w {
        let es = got.kind().elt_size_in_bytes();
        let first = g.iter().zip(&w).position(|(a, b)| a != b).unwrap() / es;
        let flat_g = got.reshape([-1]).to_kind(Kind::Double);
        let flat_w = want.reshape([-1]).to_kind(Kind::Double);
        let diff = g.chunks(es).zip(w.chunks(es)).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {diff} of {} elements differ; first at {first}: got {} want {}",
            got.numel(),
            flat_g.double_value(&[first as i64]),
            flat_w.double_value(&[first as i64])
        );
    }
}

fn fnv1a64(b: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[test]
fn nf4_code_and_dynamic_map_match_bitsandbytes() {
    let c = load("cases.safetensors");
    assert_bits("nf4_code", &nf4::nf4_code(Device::Cpu), &c["nf4_code"]);
    assert_bits("dynamic_map", &nf4::dynamic_map(Device::Cpu), &c["dynamic_map"]);
}

/// bnb's native CPU 8-bit quantizer (double quant's nested codes) is not round-to-nearest; the
/// fixture holds values where it differs from nearest rounding, around its lookup-table cell
/// edges, zeros and tiny values, a scaled block, an all-zero block and a partial block.
#[test]
fn blockwise_8bit_codes_match_bitsandbytes_on_adversarial_values() {
    let f = load("blockwise8.safetensors");
    let (input, want_codes, want_absmax) = (&f["input"], &f["codes"], &f["absmax"]);
    let n = input.size()[0];
    assert!(n > 7000, "{n} values");
    let (codes, absmax) = nf4::quantize_blockwise(input, 256);
    assert_bits("absmax", &absmax, want_absmax);
    assert_bits("codes", &codes, want_codes);
    // The fixture has teeth: round-to-nearest of the normalized values (divided by the block
    // absmax) disagrees with bnb on thousands of them.
    let code = Vec::<f32>::try_from(nf4::dynamic_map(Device::Cpu)).unwrap();
    let x = Vec::<f32>::try_from(input).unwrap();
    let am = Vec::<f32>::try_from(want_absmax).unwrap();
    let want = Vec::<u8>::try_from(want_codes).unwrap();
    let off = (0..x.len())
        .filter(|&i| {
            let a = am[i / 256];
            let v = if a > 0.0 { x[i] / a } else { 0.0 };
            let nearest = (0..256).min_by(|&p, &q| (v - code[p]).abs().total_cmp(&(v - code[q]).abs())).unwrap();
            nearest != want[i] as usize
        })
        .count();
    assert!(off > 3000, "only {off} values where bnb is not round-to-nearest");
    // Same on 2-D input and on a sub-range: codes depend only on the flattened blocks.
    let (c2, a2) = nf4::quantize_blockwise(&input.narrow(0, 0, 512).view([2, 256]), 256);
    assert_bits("2-D codes", &c2, &want_codes.narrow(0, 0, 512));
    assert_bits("2-D absmax", &a2, &want_absmax.narrow(0, 0, 2));
}

#[test]
fn quantize_matches_bitsandbytes_bit_for_bit() {
    let c = load("cases.safetensors");
    for (file, dq) in [("plain.safetensors", false), ("double.safetensors", true)] {
        let ck = load(file);
        for case in cases() {
            let input = &c[&format!("{}.input", case.name)];
            assert_eq!(input.size(), case.shape);
            let q = nf4::quantize(input, 64, dq).unwrap();
            let p = format!("case.{}.weight", case.name);
            let tag = format!("{file} {}", case.name);
            assert_bits(&format!("{tag} packed"), &q.packed, &ck[&p]);
            match &q.absmax {
                Absmax::Plain(a) => {
                    assert!(!dq);
                    assert_bits(&format!("{tag} absmax"), a, &ck[&format!("{p}.absmax")]);
                }
                Absmax::Nested { quantized, nested_absmax, nested_code, offset, nested_blocksize } => {
                    assert!(dq);
                    assert_eq!(*nested_blocksize, 256);
                    assert_bits(&format!("{tag} absmax (8-bit)"), quantized, &ck[&format!("{p}.absmax")]);
                    assert_bits(&format!("{tag} nested_absmax"), nested_absmax, &ck[&format!("{p}.nested_absmax")]);
                    assert_bits(&format!("{tag} nested_quant_map"), nested_code, &ck[&format!("{p}.nested_quant_map")]);
                    let js: serde_json::Value = serde_json::from_slice(&bytes(&ck[&format!("{p}.quant_state.bitsandbytes__nf4")])).unwrap();
                    assert_eq!((js["nested_offset"].as_f64().unwrap() as f32).to_bits(), offset.to_bits(), "{tag} offset");
                    assert_bits(&format!("{tag} absmax_f32"), &q.absmax_f32(), &c[&format!("{}.double.absmax_f32", case.name)]);
                }
            }
            let tag2 = if dq { "double" } else { "plain" };
            let deq = nf4::dequantize(&q);
            assert_bits(&format!("{tag} dequantized"), &deq, &c[&format!("{}.{tag2}.dequant", case.name)]);
        }
    }
}

#[test]
fn checkpoint_tensors_are_byte_identical_to_bitsandbytes() {
    for (file, dq) in [("plain.safetensors", false), ("double.safetensors", true)] {
        let ck = load(file);
        let c = load("cases.safetensors");
        for case in cases() {
            let q = nf4::quantize(&c[&format!("{}.input", case.name)], 64, dq).unwrap();
            let p = format!("case.{}.weight", case.name);
            let ours = nf4::to_checkpoint_tensors(&p, &q);
            let want: Vec<&String> = ck.keys().filter(|k| *k == &p || k.starts_with(&format!("{p}."))).collect();
            assert_eq!(ours.len(), want.len(), "{file} {}: tensor count", case.name);
            for (n, t) in &ours {
                let w = ck.get(n).unwrap_or_else(|| panic!("{file}: bnb wrote no {n}"));
                if n.ends_with("quant_state.bitsandbytes__nf4") {
                    // The JSON blob: exact bytes, as json.dumps writes them.
                    assert_eq!(String::from_utf8(bytes(t)).unwrap(), String::from_utf8(bytes(w)).unwrap(), "{n}");
                }
                assert_bits(&format!("{file} {n}"), t, w);
            }
        }
    }
}

#[test]
fn bitsandbytes_checkpoint_reads_and_dequantizes_exactly() {
    let c = load("cases.safetensors");
    for (file, tag) in [("plain.safetensors", "plain"), ("double.safetensors", "double")] {
        let mut ck = load(file);
        for case in cases() {
            let p = format!("case.{}.weight", case.name);
            let q = nf4::from_checkpoint_tensors(&p, &mut ck).unwrap().expect("quantized");
            assert_eq!(q.shape, case.shape);
            assert_eq!(q.blocksize, 64);
            assert_eq!(q.dtype, c[&format!("{}.input", case.name)].kind());
            assert_eq!(matches!(q.absmax, Absmax::Nested { .. }), tag == "double");
            assert_bits(&format!("{file} {p} read back"), &nf4::dequantize(&q), &c[&format!("{}.{tag}.dequant", case.name)]);
        }
        assert!(ck.is_empty(), "{file}: tensors left unconsumed: {:?}", ck.keys().collect::<Vec<_>>());
    }
    let mut w = Weights::new();
    w.insert("x.weight".into(), Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)));
    assert!(nf4::from_checkpoint_tensors("x.weight", &mut w).unwrap().is_none(), "a plain weight is not 4-bit");
    assert_eq!(w.len(), 1, "a plain weight stays in the map");
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let mut ck = load("double.safetensors");
    let p = "case.f32_33x70.weight";
    ck.remove(&format!("{p}.nested_absmax"));
    let e = format!("{:#}", nf4::from_checkpoint_tensors(p, &mut ck).unwrap_err());
    assert!(e.contains("case.f32_33x70.weight.nested_absmax"), "{e}");

    let mut ck = load("plain.safetensors");
    let p = "case.f32_7x9.weight";
    ck.insert(format!("{p}.absmax"), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
    let e = format!("{:#}", nf4::from_checkpoint_tensors(p, &mut ck).unwrap_err());
    assert!(e.contains("case.f32_7x9.weight.absmax") && e.contains("[1]"), "{e}");

    let mut ck = load("plain.safetensors");
    let p = "case.bf16_5x77.weight";
    ck.remove(p);
    let e = format!("{:#}", nf4::from_checkpoint_tensors(p, &mut ck).unwrap_err());
    assert!(e.contains("no tensor case.bf16_5x77.weight"), "{e}");
}

#[test]
fn round_trip_error_is_bounded_by_half_the_largest_code_gap() {
    tch::manual_seed(3);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
        for &dq in &[false, true] {
            let w = (Tensor::randn([123, 77], (Kind::Float, Device::Cpu)) * 0.02).to_kind(kind);
            let q = nf4::quantize(&w, 64, dq).unwrap();
            let d = nf4::dequantize(&q);
            assert_eq!(d.size(), w.size());
            assert_eq!(d.kind(), kind);
            // Per block, |w - d| <= absmax * (largest gap between NF4 codes) / 2 (+ rounding of
            // the double-quantized scale and the output dtype).
            let absmax = q.absmax_f32();
            let wf = w.to_kind(Kind::Float).reshape([-1]);
            let err = (&wf - d.to_kind(Kind::Float).reshape([-1])).abs();
            let n = wf.numel() as i64;
            let per = absmax.repeat_interleave_self_int(64, 0, None).narrow(0, 0, n);
            let gap = (1.0 - 0.6961928) / 2.0 + 0.01; // the widest gap: -1 .. -0.696
            let ratio = (err / (per + 1e-12)).max().double_value(&[]);
            assert!(ratio <= gap, "{kind:?} dq={dq}: error/absmax {ratio} > {gap}");
            // And it is a real quantization, not the identity: the relative RMS error is small
            // but not zero.
            let rel = (&wf - d.to_kind(Kind::Float).reshape([-1])).square().mean(Kind::Float).sqrt().double_value(&[])
                / wf.square().mean(Kind::Float).sqrt().double_value(&[]);
            assert!(rel > 0.01 && rel < 0.2, "{kind:?} dq={dq}: relative RMS error {rel}");
        }
    }
}

#[test]
fn storage_is_about_0_516_bytes_per_parameter_with_double_quant() {
    let w = Tensor::randn([4096, 4096], (Kind::BFloat16, Device::Cpu));
    let q = nf4::quantize(&w, 64, true).unwrap();
    let per = q.storage_bytes() as f64 / q.numel() as f64;
    // 0.5 (codes) + 1/64 (8-bit scales) + 4/(64*256) (f32 nested scales) + 4 bytes offset.
    let want = 0.5 + 1.0 / 64.0 + 4.0 / (64.0 * 256.0);
    assert!((per - want).abs() < 1e-6, "{per} bytes/param, want {want}");
    assert!((per - 0.5159).abs() < 1e-4, "{per}");
    let p = nf4::quantize(&w, 64, false).unwrap();
    assert_eq!(p.storage_bytes(), 4096 * 4096 / 2 + 4 * 4096 * 4096 / 64);
    assert_eq!(q.packed.size(), [4096 * 4096 / 2, 1]);
    assert_eq!(q.packed.kind(), Kind::Uint8);
}

#[test]
fn non_float_input_is_a_clear_error() {
    let w = Tensor::ones([8, 8], (Kind::Int64, Device::Cpu));
    let e = format!("{:#}", nf4::quantize(&w, 64, true).unwrap_err());
    assert!(e.contains("float32, bfloat16 or float16") && e.contains("Int64"), "{e}");
    let w = Tensor::ones([8, 8], (Kind::Float, Device::Cpu));
    assert!(nf4::quantize(&w, 63, false).is_err(), "blocksize 63");
}

#[test]
fn to_device_and_in_place_quantization_keep_values() {
    let mut w = Weights::new();
    tch::manual_seed(5);
    w.insert("model.layers.0.mlp.up_proj.weight".into(), Tensor::randn([128, 64], (Kind::BFloat16, Device::Cpu)));
    w.insert("model.layers.0.input_layernorm.weight".into(), Tensor::ones([64], (Kind::BFloat16, Device::Cpu)));
    let orig = w["model.layers.0.mlp.up_proj.weight"].copy();
    let q = nf4::quantize_weights_in_place(&mut w, is_decoder_projection, true).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(w.keys().collect::<Vec<_>>(), ["model.layers.0.input_layernorm.weight"]);
    let qt: &Nf4Tensor = &q["model.layers.0.mlp.up_proj.weight"];
    assert_bits("in place", &nf4::dequantize(qt), &nf4::dequantize(&nf4::quantize(&orig, 64, true).unwrap()));
    let moved = qt.to_device(Device::Cpu);
    assert_bits("to_device", &nf4::dequantize(&moved), &nf4::dequantize(qt));
    assert_eq!(moved.storage_bytes(), qt.storage_bytes());
}

#[test]
fn python_float_repr_matches_json_dumps() {
    for (x, s) in [(0.05121093988418579, "0.05121093988418579"), (2.6226248741149902, "2.6226248741149902"), (1e-5, "1e-05"), (1.5e-7, "1.5e-07"), (0.0001, "0.0001"), (3.0, "3.0"), (1e16, "1e+16"), (123456.5, "123456.5")] {
        assert_eq!(nf4::python_float_repr(x), s);
    }
}

fn quantize_qwen3_a(args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let model = common::repo().join("tests/fixtures/models/qwen3_a");
    let mut all = vec!["quantize", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let (rc, _o, e) = common::steptune(&all, tmp.path());
    assert_eq!(rc, 0, "{e}");
    assert!(e.contains("14 weights to NF4"), "{e}");
    (tmp, out)
}

/// `steptune quantize` on qwen3_a writes what transformers + bitsandbytes write for the same
/// model, tensor for tensor (FNV-1a hashes of the raw bytes), with the same quantization_config;
/// every projection reads back to dequantize(quantize(original)) and the rest is byte-identical.
#[test]
fn quantize_command_matches_transformers_checkpoint() {
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("qwen3_a_bnb.json")).unwrap()).unwrap();
    let model = common::repo().join("tests/fixtures/models/qwen3_a");
    let orig = read_model_dir(&model, None, Device::Cpu, &|_| true).unwrap();
    for (tag, args) in [("double", vec![]), ("plain", vec!["--no-double-quant", "--compute-dtype", "f32"])] {
        let (_tmp, out) = quantize_qwen3_a(&args);
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["quantization_config"], fx[tag]["quantization_config"], "{tag}: quantization_config");
        let mut src_config = steptune::model::read_config(&model).unwrap();
        src_config.as_object_mut().unwrap().insert("quantization_config".into(), config["quantization_config"].clone());
        assert_eq!(config, src_config, "{tag}: config.json is the original plus quantization_config");
        assert_eq!(std::fs::read(out.join("generation_config.json")).unwrap(), std::fs::read(model.join("generation_config.json")).unwrap());

        let mut w = read_model_dir(&out, None, Device::Cpu, &|_| true).unwrap();
        let want = fx[tag]["tensors"].as_object().unwrap();
        let names: Vec<&String> = w.keys().collect();
        let want_names: Vec<&String> = want.keys().collect();
        assert_eq!(names, want_names, "{tag}: tensor names");
        let mut differ = Vec::new();
        for (n, t) in &w {
            let e = &want[n];
            assert_eq!(format!("{:?}", t.size()), e["shape"].to_string().replace(',', ", "), "{tag} {n}: shape");
            if fnv1a64(&bytes(t)) != e["fnv1a64"].as_str().unwrap() {
                differ.push(n.as_str());
            }
        }
        // Every tensor, the 8-bit nested absmax codes and the JSON blobs included, is
        // byte-identical to what transformers + bitsandbytes save.
        assert!(differ.is_empty(), "{tag}: tensors whose bytes differ from transformers': {differ:?}");
        let mut seen = BTreeMap::new();
        for (name, t) in &orig {
            if is_decoder_projection(name) {
                let q = nf4::from_checkpoint_tensors(name, &mut w).unwrap().unwrap_or_else(|| panic!("{name} not quantized"));
                assert_eq!(matches!(q.absmax, Absmax::Nested { .. }), tag == "double");
                assert_bits(&format!("{tag} {name}"), &nf4::dequantize(&q), &nf4::dequantize(&nf4::quantize(t, 64, tag == "double").unwrap()));
                seen.insert(name.clone(), ());
            } else {
                assert_bits(&format!("{tag} {name} kept"), &w.remove(name).unwrap(), t);
            }
        }
        assert_eq!(seen.len(), 14);
        assert!(w.is_empty(), "{tag}: extra tensors {:?}", w.keys().collect::<Vec<_>>());
    }
}

#[test]
fn quantize_command_names_a_missing_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let out = tmp.path().join("out");
    let (rc, _o, e) = common::steptune(&["quantize", "--model", missing.to_str().unwrap(), "--out", out.to_str().unwrap()], tmp.path());
    assert_ne!(rc, 0);
    assert!(e.contains(missing.to_str().unwrap()) && e.contains("does not exist"), "{e}");
    let (rc, _o, e) = common::steptune(&["quantize", "--model", common::repo().join("tests/fixtures/models/qwen3_a").to_str().unwrap(), "--out", out.to_str().unwrap(), "--compute-dtype", "int8"], tmp.path());
    assert_ne!(rc, 0);
    assert!(e.contains("--compute-dtype"), "{e}");
}
