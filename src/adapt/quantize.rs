//! `steptune quantize`: an HF decoder folder to transformers' bitsandbytes NF4 layout, one
//! tensor at a time. Each checkpoint tensor is read from the memory map, quantized (or passed
//! through byte for byte) and its bytes appended to a data file at once, so memory holds one
//! full-precision weight at most; the safetensors header, known only at the end, is written
//! in front of the data last.
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

use crate::model::is_decoder_projection;
use crate::nn::nf4;
use crate::nn::weights;

/// What `steptune quantize` does.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// bitsandbytes' `bnb_4bit_use_double_quant`.
    pub double_quant: bool,
    /// `bnb_4bit_compute_dtype` written into the config: "bfloat16", "float16" or "float32".
    pub compute_dtype: String,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions { double_quant: true, compute_dtype: "bfloat16".into() }
    }
}

/// What was written.
#[derive(Debug, Default)]
pub struct QuantizeReport {
    pub quantized: usize,
    pub kept: usize,
    /// Parameters of the quantized weights and the bytes they now take.
    pub quantized_params: i64,
    pub quantized_bytes: i64,
}

/// `--compute-dtype` spellings to transformers' names.
pub fn compute_dtype_name(s: &str) -> Result<&'static str> {
    Ok(match s {
        "bf16" | "bfloat16" => "bfloat16",
        "f16" | "fp16" | "float16" => "float16",
        "f32" | "fp32" | "float32" => "float32",
        other => bail!("--compute-dtype must be bf16, f16 or f32, got `{other}`"),
    })
}

/// The `quantization_config` block transformers' `BitsAndBytesConfig.to_dict()` writes into
/// config.json (keys sorted, as transformers saves them). `llm_int8_skip_modules` stays null
/// as transformers writes it: on load it skips lm_head (the output embedding) by itself.
pub fn quantization_config(opts: &QuantizeOptions) -> Result<Value> {
    Ok(json!({
        "_load_in_4bit": true,
        "_load_in_8bit": false,
        "bnb_4bit_compute_dtype": compute_dtype_name(&opts.compute_dtype)?,
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": opts.double_quant,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": null,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": true,
        "load_in_8bit": false,
        "quant_method": "bitsandbytes"
    }))
}


/// The dtype's name in a safetensors header ("BF16", "U8", ...), as the format serialises it.
fn dtype_str(d: Dtype) -> Result<String> {
    match serde_json::to_value(d)? {
        Value::String(name) => Ok(name),
        other => bail!("unexpected safetensors dtype name {other}"),
    }
}

/// The kind a projection weight is read in: only floats can be NF4-quantized.
fn float_kind_of(d: Dtype) -> Result<Kind> {
    match weights::kind_of(d)? {
        k @ (Kind::BFloat16 | Kind::Half | Kind::Float) => Ok(k),
        _ => bail!("a projection weight stored as {d:?} cannot be NF4-quantized (float32, bfloat16 or float16 only)"),
    }
}

fn kind_str(k: Kind) -> Result<String> {
    dtype_str(weights::dtype_of(k)?)
}

/// Appends tensors to a data file and remembers their header entries, so a safetensors file is
/// written without holding its tensors.
struct StreamingWriter {
    data: BufWriter<std::fs::File>,
    data_path: PathBuf,
    offset: usize,
    header: Map<String, Value>,
}

impl StreamingWriter {
    fn new(data_path: PathBuf) -> Result<Self> {
        let f = std::fs::File::create(&data_path).with_context(|| format!("cannot create {}", data_path.display()))?;
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        Ok(StreamingWriter { data: BufWriter::new(f), data_path, offset: 0, header })
    }

    fn add_raw(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: &[u8]) -> Result<()> {
        ensure!(!self.header.contains_key(name), "tensor {name} appears twice in the checkpoint");
        self.data.write_all(bytes)?;
        let end = self.offset + bytes.len();
        self.header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [self.offset, end]}));
        self.offset = end;
        Ok(())
    }

    fn add_tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        self.add_raw(name, &kind_str(t.kind())?, &shape, &bytes)
    }

    /// Writes `path` = 8-byte header length, the header JSON (space-padded to 8 bytes), the data.
    fn finish(mut self, path: &Path) -> Result<()> {
        self.data.flush()?;
        drop(self.data);
        let mut header = serde_json::to_vec(&Value::Object(self.header))?;
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let tmp = path.with_extension("safetensors.tmp");
        {
            let mut out = BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?);
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(&header)?;
            let mut data = std::fs::File::open(&self.data_path)?;
            std::io::copy(&mut data, &mut out)?;
            out.flush()?;
        }
        std::fs::remove_file(&self.data_path)?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Files copied unchanged next to the quantized weights.
const COPIED: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
];

/// Quantizes every decoder projection of the model folder `model` into `out` (NF4, blocks of
/// 64; see [`is_decoder_projection`]) and copies everything else: the other tensors byte for
/// byte, config.json with a `quantization_config`, generation_config.json and the tokenizer.
pub fn quantize_model_dir(model: &Path, out: &Path, opts: &QuantizeOptions) -> Result<QuantizeReport> {
    ensure!(model.is_dir(), "model folder {} does not exist", model.display());
    let mut config = crate::model::read_config(model)?;
    // A multimodal Gemma 3: its language model's projections (named `language_model.model.*` or
    // `model.language_model.*`) are quantized; the vision tower passes through.
    let multimodal = config.get("model_type").and_then(Value::as_str) == Some("gemma3");
    let obj = config.as_object_mut().with_context(|| format!("{}/config.json is not a JSON object", model.display()))?;
    ensure!(!obj.contains_key("quantization_config"), "{} is already quantized (its config.json has a quantization_config)", model.display());
    obj.insert("quantization_config".into(), quantization_config(opts)?);
    let files = weights::model_files(model)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut writer = StreamingWriter::new(out.join("model.safetensors.data.tmp"))?;
    let mut report = QuantizeReport::default();
    let _guard = tch::no_grad_guard();
    for path in &files {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display()))?;
        let mut names = st.names();
        names.sort_unstable();
        for name in names {
            let view = st.tensor(name).map_err(|e| anyhow::anyhow!("{}: tensor {name}: {e:?}", path.display()))?;
            let text_name = if multimodal { crate::model::gemma3::text_weight_name(name) } else { Some(name.to_string()) };
            if text_name.as_deref().is_some_and(is_decoder_projection) {
                let kind = float_kind_of(view.dtype()).with_context(|| format!("{}: tensor {name}", path.display()))?;
                let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
                let w = Tensor::f_from_data_size(view.data(), &shape, kind)?;
                let q = nf4::quantize(&w, 64, opts.double_quant).with_context(|| format!("quantizing {name}"))?;
                drop(w);
                report.quantized += 1;
                report.quantized_params += q.numel();
                report.quantized_bytes += q.storage_bytes();
                for (n, t) in nf4::to_checkpoint_tensors(name, &q) {
                    writer.add_tensor(&n, &t)?;
                }
            } else {
                report.kept += 1;
                writer.add_raw(name, &dtype_str(view.dtype())?, view.shape(), view.data())?;
            }
        }
    }
    ensure!(report.quantized > 0, "{}: no model.layers.N.{{self_attn,mlp}}.*_proj.weight tensors to quantize", model.display());
    writer.finish(&out.join("model.safetensors"))?;
    crate::run::write_atomic(&out.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    for f in COPIED {
        let src = model.join(f);
        if src.exists() {
            std::fs::copy(&src, out.join(f)).with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(report)
}
