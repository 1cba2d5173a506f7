//! QLoRA: the 4-bit linear of csrc/nf4.cpp (forward and backward), and the QLoRA loss and LoRA
//! gradients against transformers + peft + bitsandbytes. Fixtures:
//! scripts/make_qlora_fixtures.py (qwen3_a_bnb4bit) and scripts/make_model_fixtures.py.
use std::path::PathBuf;

use steptune::nn::linear::LoraBranch;
use steptune::nn::nf4::{self, Absmax, Nf4Tensor};
use steptune::adapt::peft;
use steptune::model::{load_decoder_4bit, QuantSpec};
use steptune::nn::weights;
use tch::{Device, Kind, Tensor};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn max_rel(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1e-12);
    (got - want).abs().max().double_value(&[]) / scale
}

/// An NF4 state drawn at random (not from a quantizer): every code and scale is exercised.
fn random_state(out: i64, inp: i64, nested: bool) -> Nf4Tensor {
    let n = out * inp;
    let blocks = (n + 63) / 64;
    let packed = Tensor::randint(256, [(n + 1) / 2, 1], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
    let absmax = if nested {
        let blocks2 = (blocks + 255) / 256;
        Absmax::Nested {
            quantized: Tensor::randint(256, [blocks], (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8),
            nested_absmax: Tensor::rand([blocks2], (Kind::Float, Device::Cpu)) * 0.05 + 0.01,
            nested_code: Tensor::linspace(-1.0, 1.0, 256, (Kind::Float, Device::Cpu)),
            offset: 0.07,
            nested_blocksize: 256,
        }
    } else {
        Absmax::Plain(Tensor::rand([blocks], (Kind::Float, Device::Cpu)) * 0.1 + 0.01)
    };
    Nf4Tensor { packed, absmax, shape: vec![out, inp], dtype: Kind::Float, blocksize: 64 }
}

/// What the weight must dequantize to, computed here element by element from the layout.
fn reference_dequantize(q: &Nf4Tensor) -> Tensor {
    let code: Vec<f32> = Vec::try_from(&nf4::nf4_code(Device::Cpu)).unwrap();
    let bytes: Vec<u8> = Vec::try_from(&q.packed.reshape([-1])).unwrap();
    let n = q.shape.iter().product::<i64>() as usize;
    let absmax: Vec<f32> = match &q.absmax {
        Absmax::Plain(a) => Vec::try_from(a).unwrap(),
        Absmax::Nested { quantized, nested_absmax, nested_code, offset, nested_blocksize } => {
            let (qs, a2, c2): (Vec<u8>, Vec<f32>, Vec<f32>) = (Vec::try_from(quantized).unwrap(), Vec::try_from(nested_absmax).unwrap(), Vec::try_from(nested_code).unwrap());
            qs.iter().enumerate().map(|(b, &v)| c2[v as usize] * a2[b / *nested_blocksize as usize] + offset).collect()
        }
    };
    let vals: Vec<f32> = (0..n)
        .map(|i| {
            let byte = bytes[i / 2];
            let c = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
            code[c as usize] * absmax[i / q.blocksize as usize]
        })
        .collect();
    Tensor::from_slice(&vals).view(q.shape.as_slice())
}

#[test]
fn nf4_dequantize_follows_the_bitsandbytes_layout() {
    tch::manual_seed(1);
    // 37 × 45 = 1665 values: odd, and neither a multiple of 64 nor of 256 blocks.
    for (out, inp, nested) in [(37, 45, false), (37, 45, true), (64, 512, true), (3, 7, false)] {
        let q = random_state(out, inp, nested);
        let got = nf4::dequantize(&q);
        let want = reference_dequantize(&q);
        assert_eq!(got.size(), [out, inp]);
        assert!(got.equal(&want), "[{out}, {inp}] nested={nested}: differs by {}", (&got - &want).abs().max().double_value(&[]));
        // bfloat16 / float16 outputs are the float32 values rounded once.
        for kind in [Kind::BFloat16, Kind::Half] {
            let qk = Nf4Tensor { dtype: kind, ..q.to_device(Device::Cpu) };
            assert!(nf4::dequantize(&qk).equal(&want.to_kind(kind)), "{kind:?}");
        }
    }
}

#[test]
fn nf4_linear_forward_and_backward_equal_the_dense_product() {
    tch::manual_seed(2);
    for nested in [false, true] {
        let q = random_state(48, 80, nested);
        let w = nf4::dequantize(&q); // [48, 80]
        let x = Tensor::randn([3, 5, 80], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = nf4::linear(&x, &q);
        assert_eq!(y.size(), [3, 5, 48]);
        assert!(y.equal(&x.linear::<Tensor>(&w, None)), "forward differs from x Wᵀ");
        let g = Tensor::randn([3, 5, 48], (Kind::Float, Device::Cpu));
        (&y * &g).sum(Kind::Float).backward();
        let want = g.matmul(&w);
        let r = max_rel(&x.grad(), &want);
        assert!(r < 1e-6, "input gradient differs by {r:e}");
    }
    // The weight takes no gradient and a wrong input width is an error, not a crash.
    let q = random_state(4, 64, false);
    let err = steptune::ffi::nf4_linear(&Tensor::zeros([2, 63], (Kind::Float, Device::Cpu)), &q.parts()).unwrap_err().to_string();
    assert!(err.contains("63") && err.contains("64"), "{err}");
}

#[test]
fn nf4_linear_runs_in_bfloat16_like_bitsandbytes() {
    tch::manual_seed(3);
    let q = Nf4Tensor { dtype: Kind::BFloat16, ..random_state(16, 64, true) };
    let x = Tensor::randn([2, 64], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let y = nf4::linear(&x, &q);
    assert_eq!(y.kind(), Kind::BFloat16);
    assert!(y.equal(&x.linear::<Tensor>(&nf4::dequantize(&q), None)));
}

#[test]
fn qlora_loss_and_lora_gradients_equal_peft_with_bitsandbytes() {
    let f = weights::read_file(&models().join("qwen3_a_bnb4bit/qlora_grads.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    let batch = weights::read_file(&models().join("qwen3_a/lora_grads.safetensors"), None, Device::Cpu, &|_| true).unwrap();
    let spec = QuantSpec { blocksize: 64, double_quant: true, compute: Kind::Float };
    // Three ways in: the checkpoint transformers wrote in 4 bits, the 16-bit checkpoint quantized
    // by steptune as it loads, and `steptune quantize`'s folder. All must hold bitsandbytes'
    // weights exactly.
    let tmp = tempfile::tempdir().unwrap();
    let opts = steptune::adapt::quantize::QuantizeOptions { double_quant: true, compute_dtype: "float32".into() };
    steptune::adapt::quantize::quantize_model_dir(&models().join("qwen3_a"), tmp.path(), &opts).unwrap();
    let quantized = tmp.path().display().to_string();
    for dir in ["qwen3_a_bnb4bit", "qwen3_a", quantized.as_str()] {
        let mut model = load_decoder_4bit(&models().join(dir), spec, Kind::Float, Device::Cpu).unwrap();
        for (i, layer) in model.layers.iter().enumerate() {
            for (name, lin) in model.linears_of(layer) {
                assert!(lin.dense_weight().is_none(), "{dir}: {name} is not 4-bit");
                let want = &f[&format!("dequantized.model.layers.{i}.{name}.weight")];
                assert!(lin.weight().equal(want), "{dir}: layer {i} {name} dequantizes differently from bitsandbytes");
            }
        }
        assert_eq!(model.embed_tokens.kind(), Kind::Float, "embeddings stay 16/32-bit");
        peft::load_adapter(&mut model, &models().join("qwen3_a/adapter")).unwrap();
        let (ids, labels) = (&batch["lora_input_ids"], &batch["lora_labels"]);
        let logits = tch::no_grad(|| model.forward(ids));
        let d = max_rel(&logits, &f["qlora_logits"]);
        assert!(d < 1e-5, "{dir}: logits differ by {d:e} relative");
        let (sum, n) = model.loss_sum(ids, labels, true).unwrap();
        let loss = sum / n as f64;
        let (got, want) = (loss.double_value(&[]), f["qlora_loss"].double_value(&[0]));
        assert!(((got - want) / want).abs() < 1e-5, "{dir}: loss {got} vs peft+bitsandbytes {want}");
        loss.backward();
        let named = peft::named_lora(&model);
        assert_eq!(named.len(), 28);
        let mut worst = 0.0f64;
        for (name, t) in &named {
            let r = max_rel(&t.grad(), &f[name]);
            worst = worst.max(r);
            assert!(r < 1e-5, "{dir}: {name} gradient differs by {r:e} relative");
        }
        eprintln!("{dir}: loss rel diff {:e}, worst LoRA gradient rel diff {worst:e}", ((got - want) / want).abs());
    }
}

#[test]
fn lora_branch_beside_a_4bit_base_starts_at_the_base_output() {
    // peft's init (B = 0) leaves the quantized model's output unchanged.
    tch::manual_seed(5);
    let q = random_state(32, 64, true);
    let x = Tensor::randn([4, 64], (Kind::Float, Device::Cpu));
    let mut lin = steptune::nn::linear::Linear::quantized(q, Kind::Float, None);
    let before = lin.forward(&x, false);
    lin.lora = Some(LoraBranch::new(64, 32, 8, 16.0, 0.0, Kind::Float, Device::Cpu));
    assert!(lin.forward(&x, true).equal(&before));
}

/// Where a GPU is lent (`--features cuda` builds are for GPU machines): the CUDA kernel gives the
/// CPU path's values bit for bit (float32 and bfloat16, plain and double-quantized absmax), the
/// 4-bit linear runs on the GPU, and the kernel's bandwidth is printed for the benchmark notes.
#[cfg(feature = "cuda")]
#[test]
fn cuda_dequantize_equals_the_cpu_path() {
    assert!(tch::Cuda::is_available(), "this --features cuda build needs a visible GPU for its CUDA tests");
    let gpu = Device::Cuda(0);
    tch::manual_seed(9);
    for nested in [false, true] {
        for kind in [Kind::Float, Kind::BFloat16] {
            let q = Nf4Tensor { dtype: kind, ..random_state(301, 77, nested) };
            let cpu = nf4::dequantize(&q);
            let on_gpu = nf4::dequantize(&q.to_device(gpu)).to_device(Device::Cpu);
            assert!(cpu.equal(&on_gpu), "nested={nested} {kind:?}: the kernel differs from the CPU path");
        }
    }
    let q = random_state(256, 512, true);
    let x = Tensor::randn([4, 512], (Kind::Float, Device::Cpu));
    let want = nf4::linear(&x, &q);
    let xg = x.to_device(gpu).set_requires_grad(true);
    let y = nf4::linear(&xg, &q.to_device(gpu));
    assert!(max_rel(&y.to_device(Device::Cpu), &want) < 1e-5);
    y.sum(Kind::Float).backward();
    assert_eq!(xg.grad().size(), [4, 512]);
    // Bandwidth: an 8B-sized projection (4096 × 14336), bytes read + written per second.
    let big = Nf4Tensor { dtype: Kind::BFloat16, ..random_state(4096, 14336, true) }.to_device(gpu);
    let _ = nf4::dequantize(&big);
    tch::Cuda::synchronize(0);
    let start = std::time::Instant::now();
    let reps = 50;
    for _ in 0..reps {
        let _ = nf4::dequantize(&big);
    }
    tch::Cuda::synchronize(0);
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    let n = (4096 * 14336) as f64;
    let bytes = n * 0.5 + n / 64.0 + n * 2.0;
    eprintln!("nf4 dequantize 4096x14336 → bf16: {:.1} µs, {:.0} GB/s", secs * 1e6, bytes / secs / 1e9);
}
