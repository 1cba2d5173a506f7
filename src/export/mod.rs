//! The last stage: a tuned model out of steptune, into the tools that run models locally.
//! `steptune export --format gguf` writes what llama.cpp's own converter (convert_hf_to_gguf.py)
//! writes for the same checkpoint, byte for byte (tests/gguf_export.rs against
//! scripts/make_gguf_fixtures.py), merging a LoRA adapter on the way, and an Ollama Modelfile
//! beside it.
pub mod gguf;
pub mod modelfile;
pub mod naming;
pub mod vocab;

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::SafeTensors;
use serde_json::Value as Json;
use tch::{Kind, Tensor};

use crate::model::is_decoder_projection;
use crate::nn::{nf4, weights};
use gguf::{GgmlType, GgufWriter, TensorInfo, Value};

/// `--outtype`: the type of every matrix (norms, biases and rope factors stay F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl OutType {
    pub fn parse(s: &str) -> Result<OutType> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::Bf16,
            "q8_0" => OutType::Q8_0,
            other => bail!("--outtype {other}: choose f16, bf16, f32 or q8_0 (for Q4_K_M and the like, run llama.cpp's llama-quantize on the f16 file)"),
        })
    }
    fn matrix_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::Bf16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }
    /// general.file_type (llama.cpp's LlamaFileType).
    fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 => 7,
            OutType::Bf16 => 32,
        }
    }
}

pub struct ExportOptions {
    pub model: PathBuf,
    pub adapter: Option<PathBuf>,
    pub outtype: OutType,
    pub out: PathBuf,
    /// The adapter was trained on the NF4 base (QLoRA): merge into dequant(quant(W)) with this
    /// (blocksize, double quantization), the base the adapter saw, instead of into W.
    pub qlora: Option<(i64, bool)>,
    /// tokenizer.ggml.pre when llama.cpp does not recognise the tokenizer by its hash.
    pub tokenizer_pre: Option<String>,
    /// Written into the Modelfile's SYSTEM line.
    pub system_prompt: Option<String>,
}

pub struct ExportReport {
    pub tensors: usize,
    pub bytes: u64,
    pub params: u64,
    pub merged: usize,
    pub modelfile: PathBuf,
}

/// The llama.cpp architecture of a config, or why it cannot be exported.
fn gguf_arch(config: &Json, dir: &Path) -> Result<&'static str> {
    let arch = config.pointer("/architectures/0").and_then(Json::as_str).unwrap_or_default();
    let arch = if arch.is_empty() && config.get("model_type").and_then(Json::as_str) == Some("t5") { "T5ForConditionalGeneration" } else { arch };
    Ok(match arch {
        "Qwen3ForCausalLM" => "qwen3",
        "Qwen2ForCausalLM" => "qwen2",
        "LlamaForCausalLM" => "llama",
        "T5ForConditionalGeneration" => bail!(
            "{}: T5 export is not implemented: llama.cpp's t5 architecture needs the SentencePiece vocabulary (spiece.model) written as a `t5` tokenizer, which steptune does not write yet; use llama.cpp's convert_hf_to_gguf.py on a merged folder (`steptune merge`)",
            dir.display()
        ),
        other => bail!(
            "{}: architecture {other:?} cannot be exported to GGUF by steptune (it writes Qwen3ForCausalLM, Qwen2ForCausalLM and LlamaForCausalLM)",
            dir.display()
        ),
    })
}

/// The converter's `tensor_map` for these three architectures: HF module → GGUF name.
fn gguf_name(hf: &str) -> Option<String> {
    let (stem, suffix) = hf.rsplit_once('.')?;
    if !matches!(suffix, "weight" | "bias") {
        return None;
    }
    let mapped = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (n, module) = rest.split_once('.')?;
            n.parse::<u32>().ok()?;
            let g = match module {
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            format!("blk.{n}.{g}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

fn get_u64(c: &Json, k: &str) -> Option<u64> {
    c.get(k).and_then(Json::as_u64)
}

/// llama3 RoPE's per-frequency factors (the converter's generate_extra_tensors), in the float32
/// arithmetic torch does there: `a / t` as reciprocal(t)·a, `t / a` as a true division.
fn llama3_rope_factors(config: &Json, rope: &Json) -> Result<Vec<f32>> {
    let base = rope.get("rope_theta").and_then(Json::as_f64).unwrap_or(10000.0);
    let nh = get_u64(config, "num_attention_heads").context("num_attention_heads")?;
    let dim = get_u64(config, "head_dim").unwrap_or(get_u64(config, "hidden_size").context("hidden_size")? / nh);
    let factor = rope.get("factor").and_then(Json::as_f64).unwrap_or(8.0) as f32;
    let low = rope.get("low_freq_factor").and_then(Json::as_f64).unwrap_or(1.0) as f32;
    let high = rope.get("high_freq_factor").and_then(Json::as_f64).unwrap_or(4.0) as f32;
    let old_ctx = rope.get("original_max_position_embeddings").and_then(Json::as_f64).unwrap_or(8192.0);
    let low_wavelen = (old_ctx / low as f64) as f32;
    let high_wavelen = (old_ctx / high as f64) as f32;
    let span = (high as f64 - low as f64) as f32;
    // freqs = 1 / base ** (arange(0, dim, 2) / dim), through libtorch as the converter does.
    let e = Tensor::arange_start_step(0, dim as i64, 2, (Kind::Float, tch::Device::Cpu)) / dim as f64;
    let freqs = Tensor::pow_scalar(base, &e).reciprocal();
    let freqs: Vec<f32> = Vec::<f32>::try_from(&freqs)?;
    let mut out = Vec::new();
    for freq in freqs {
        let wavelen = (1.0f32 / freq) * (2.0 * PI) as f32;
        if wavelen < high_wavelen {
            out.push(1.0);
        } else if wavelen > low_wavelen {
            out.push(factor);
        } else {
            let smooth = ((1.0f32 / wavelen) * old_ctx as f32 - low) / span;
            out.push(1.0f32 / ((1.0 - smooth) / factor + smooth));
        }
    }
    Ok(out)
}

/// One tensor of the output: where it comes from and how it is changed on the way.
struct Planned {
    info: TensorInfo,
    source: Source,
}

enum Source {
    Generated(Vec<f32>),
    Checkpoint { file: usize, name: String, permute_heads: Option<i64> },
}

/// A PEFT LoRA adapter: per module, (A [r, in], B [out, r]) and the scaling alpha / r.
struct Adapter {
    pairs: HashMap<String, (Tensor, Tensor)>,
    scaling: f64,
}

fn read_adapter(dir: &Path) -> Result<Adapter> {
    let spec = crate::adapt::peft::read_adapter_config(dir)?;
    let w = weights::read_file(&dir.join("adapter_model.safetensors"), Some(Kind::Float), tch::Device::Cpu, &|_| true)?;
    let mut a_parts: HashMap<String, Tensor> = HashMap::new();
    let mut b_parts: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in w {
        let n = name.replace(".default.weight", ".weight");
        let module = n.strip_prefix("base_model.model.").unwrap_or(&n);
        if let Some(m) = module.strip_suffix(".lora_A.weight") {
            a_parts.insert(m.to_string(), t);
        } else if let Some(m) = module.strip_suffix(".lora_B.weight") {
            b_parts.insert(m.to_string(), t);
        } else {
            bail!("{}: unexpected tensor {name} (LoRA adapters hold lora_A / lora_B only)", dir.display());
        }
    }
    let mut pairs = HashMap::new();
    for (m, a) in a_parts {
        let b = b_parts.remove(&m).with_context(|| format!("{}: {m} has lora_A but no lora_B", dir.display()))?;
        pairs.insert(m, (a, b));
    }
    if let Some(m) = b_parts.keys().next() {
        bail!("{}: {m} has lora_B but no lora_A", dir.display());
    }
    Ok(Adapter { pairs, scaling: spec.alpha / spec.r as f64 })
}

/// `permute(w, n_head)` of the converter for Llama's q/k: rows regrouped from HF's rotate-half
/// layout to llama.cpp's interleaved one.
fn permute_heads(w: &Tensor, n_head: i64) -> Tensor {
    let size = w.size();
    let mut shape = vec![n_head, 2, size[0] / n_head / 2];
    shape.extend_from_slice(&size[1..]);
    w.reshape(shape.as_slice()).transpose(1, 2).reshape(size.as_slice())
}

/// What a run folder (or an adapter inside one) says about its export: the base model (from
/// adapter_config.json), QLoRA's quantization and the system prompt (from the run's recipe.yaml).
pub struct RunContext {
    pub model: Option<PathBuf>,
    pub qlora: Option<(i64, bool)>,
    pub system_prompt: Option<String>,
}

pub fn run_context(adapter: Option<&Path>, run: Option<&Path>) -> Result<RunContext> {
    let mut ctx = RunContext { model: None, qlora: None, system_prompt: None };
    if let Some(a) = adapter {
        let cfg_path = a.join("adapter_config.json");
        let cfg: Json = serde_json::from_str(&std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {} (is {} an adapter folder?)", cfg_path.display(), a.display()))?)
            .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
        ctx.model = cfg.get("base_model_name_or_path").and_then(Json::as_str).map(PathBuf::from).filter(|p| p.join("config.json").is_file());
    }
    let recipe_path = run.map(|r| r.join("recipe.yaml")).or_else(|| adapter.and_then(Path::parent).map(|p| p.join("recipe.yaml")));
    if let Some(p) = recipe_path.filter(|p| p.is_file()) {
        let r = crate::recipe::LoadedRecipe::load(&p).with_context(|| format!("reading the run's recipe {}", p.display()))?;
        ctx.system_prompt = r.recipe.model.system_prompt.clone();
        if r.recipe.finetune.method == crate::recipe::Method::Qlora {
            let q = &r.recipe.finetune.quantization;
            ctx.qlora = Some((q.blocksize as i64, q.bnb_4bit_use_double_quant));
        }
    }
    Ok(ctx)
}

/// Writes `opts.out` (GGUF v3) and a Modelfile beside it.
pub fn export_gguf(opts: &ExportOptions) -> Result<ExportReport> {
    let dir = &opts.model;
    let config_path = dir.join("config.json");
    let config: Json = serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?)
        .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    if crate::model::is_bnb_4bit(&config) {
        bail!("{}: the checkpoint is stored in 4-bit; export from the 16-bit model it was quantized from (with --qlora when the adapter was trained on it)", dir.display());
    }
    let arch = gguf_arch(&config, dir)?;
    let adapter = opts.adapter.as_deref().map(read_adapter).transpose()?;

    // hparams as TextModel reads them: text_config merged over the top level.
    let hp = match config.get("text_config") {
        Some(Json::Object(t)) => {
            let mut m = config.as_object().cloned().unwrap_or_default();
            m.extend(t.clone());
            Json::Object(m)
        }
        _ => config.clone(),
    };
    let n_head = get_u64(&hp, "num_attention_heads").context("config.json has no num_attention_heads")? as i64;
    let n_kv = get_u64(&hp, "num_key_value_heads").map(|x| x as i64);
    let mut rope = hp.get("rope_parameters").or_else(|| hp.get("rope_scaling")).filter(|v| v.is_object()).cloned().unwrap_or(Json::Object(Default::default()));
    if let Some(obj) = rope.as_object_mut() {
        if !obj.contains_key("full_attention") && !obj.contains_key("sliding_attention") {
            if !obj.contains_key("rope_theta") {
                if let Some(t) = hp.get("rope_theta").filter(|v| !v.is_null()) {
                    obj.insert("rope_theta".into(), t.clone());
                }
            }
            if !obj.contains_key("rope_type") {
                if let Some(t) = obj.get("type").cloned() {
                    obj.insert("rope_type".into(), t);
                }
            }
        }
    }
    let rope_type = rope.get("rope_type").and_then(Json::as_str).map(str::to_string);
    match rope_type.as_deref() {
        None | Some("default") => {}
        Some(t) if t.eq_ignore_ascii_case("llama3") && arch == "llama" => {}
        Some(t) => bail!("{}: RoPE type {t:?} is not exported by steptune (it writes default RoPE, and llama3 for Llama)", config_path.display()),
    }

    // The plan: generated tensors first, then each file's tensors in name order (the converter's).
    let files = weights::model_files(dir)?;
    let maps: Vec<memmap2::Mmap> = files
        .iter()
        .map(|p| {
            let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            // SAFETY: read-only mapping of a file nobody modifies during the export.
            unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("cannot map {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let sts: Vec<SafeTensors> = maps
        .iter()
        .zip(&files)
        .map(|(m, p)| SafeTensors::deserialize(m).map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", p.display())))
        .collect::<Result<_>>()?;
    let mtype = opts.outtype.matrix_type();
    let mut plan: Vec<Planned> = Vec::new();
    if rope_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        let f = llama3_rope_factors(&hp, &rope)?;
        plan.push(Planned { info: TensorInfo { name: "rope_freqs.weight".into(), shape: vec![f.len() as u64], ty: GgmlType::F32 }, source: Source::Generated(f) });
    }
    let mut used_lora = 0usize;
    for (fi, st) in sts.iter().enumerate() {
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        for name in names {
            if name.ends_with(".attention.masked_bias") || name.ends_with(".attention.bias") || name.ends_with(".rotary_emb.inv_freq") {
                continue;
            }
            let g = gguf_name(&name).with_context(|| format!("{}: cannot map tensor {name} to a llama.cpp name", files[fi].display()))?;
            let view = st.tensor(&name).map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            let ty = if shape.len() <= 1 || g.ends_with("_norm.weight") || !(g.ends_with(".weight")) {
                GgmlType::F32
            } else if mtype == GgmlType::Q8_0 && shape.last().copied().unwrap_or(0) % 32 != 0 {
                GgmlType::F16 // gguf-py's QuantError fallback
            } else {
                mtype
            };
            let permute = if arch == "llama" && (name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias")) {
                Some(n_head)
            } else if arch == "llama" && (name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias")) {
                Some(n_kv.unwrap_or(n_head))
            } else {
                None
            };
            if let Some(a) = &adapter {
                if name.strip_suffix(".weight").is_some_and(|m| a.pairs.contains_key(m)) {
                    used_lora += 1;
                }
            }
            plan.push(Planned { info: TensorInfo { name: g, shape, ty }, source: Source::Checkpoint { file: fi, name, permute_heads: permute } });
        }
    }
    if let Some(a) = &adapter {
        if used_lora != a.pairs.len() {
            let names: std::collections::HashSet<&str> = plan.iter().filter_map(|p| if let Source::Checkpoint { name, .. } = &p.source { Some(name.as_str()) } else { None }).collect();
            let missing: Vec<&String> = a.pairs.keys().filter(|m| !names.contains(format!("{m}.weight").as_str())).take(3).collect();
            bail!("{}: {} adapter modules match no weight of {} (for example {missing:?})", opts.adapter.as_ref().unwrap().display(), a.pairs.len() - used_lora, dir.display());
        }
    }
    let total_params: u64 = plan.iter().map(|p| p.info.numel()).sum();

    // Metadata in the converter's order.
    let name_dir = opts.adapter.as_deref().unwrap_or(dir);
    let mut meta = naming::Metadata::load(dir, name_dir, total_params as i64)?;
    if meta.size_label.is_none() && total_params > 0 {
        meta.size_label = Some(naming::size_label(total_params));
    }
    let mut kv: Vec<(String, Value)> = vec![("general.architecture".into(), Value::Str(arch.into())), ("general.type".into(), Value::Str("model".into()))];
    kv.extend(meta.keys());
    let u32_of = |keys: &[&str]| keys.iter().find_map(|k| get_u64(&hp, k)).map(|v| Value::U32(v as u32));
    let mut push = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            kv.push((format!("{arch}.{k}"), v));
        }
    };
    push("block_count", u32_of(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"]));
    push("context_length", u32_of(&["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"]));
    push("embedding_length", u32_of(&["hidden_size", "n_embd", "dim"]));
    push("feed_forward_length", u32_of(&["prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner", "hidden_dim"]));
    push("attention.head_count", u32_of(&["num_attention_heads", "n_head", "n_heads"]));
    push("attention.head_count_kv", u32_of(&["num_key_value_heads", "n_kv_heads"]));
    push("rope.freq_base", rope.get("rope_theta").and_then(Json::as_f64).map(|t| Value::F32(t as f32)));
    push("attention.layer_norm_rms_epsilon", ["rms_norm_eps", "norm_eps"].iter().find_map(|k| hp.get(*k).and_then(Json::as_f64)).map(|e| Value::F32(e as f32)));
    if let Some(d) = get_u64(&hp, "head_dim") {
        push("attention.key_length", Some(Value::U32(d as u32)));
        push("attention.value_length", Some(Value::U32(d as u32)));
    }
    kv.push(("general.file_type".into(), Value::U32(opts.outtype.file_type())));
    if arch == "llama" {
        let vocab = get_u64(&hp, "vocab_size").context("config.json has no vocab_size")?;
        kv.push(("llama.vocab_size".into(), Value::U32(vocab as u32)));
        let rope_dim = get_u64(&hp, "head_dim").unwrap_or(get_u64(&hp, "hidden_size").context("hidden_size")? / n_head as u64);
        kv.push(("llama.rope.dimension_count".into(), Value::U32(rope_dim as u32)));
    }
    kv.push(("general.quantization_version".into(), Value::U32(2)));
    if arch == "llama" {
        let tc = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok().and_then(|s| serde_json::from_str::<Json>(&s).ok());
        if let Some(b) = tc.as_ref().and_then(|c| c.get("add_prefix_space")).and_then(Json::as_bool) {
            kv.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(b)));
        }
    }
    let vocab_size = get_u64(&hp, "vocab_size").context("config.json has no vocab_size")? as usize;
    kv.extend(vocab::keys(dir, vocab_size, opts.tokenizer_pre.as_deref())?);

    // Tensors, one at a time, into a temporary file renamed at the end: an interrupted export
    // never leaves a truncated .gguf under the final name.
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = opts.out.with_extension("gguf.partial");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let infos: Vec<TensorInfo> = plan.iter().map(|p| p.info.clone()).collect();
    let result = (|| -> Result<u64> {
        let mut w = GgufWriter::begin(BufWriter::with_capacity(1 << 20, file), &kv, infos)?;
        let _guard = tch::no_grad_guard();
        for p in &plan {
            let values: Vec<f32> = match &p.source {
                Source::Generated(v) => v.clone(),
                Source::Checkpoint { file, name, permute_heads: perm } => {
                    let view = sts[*file].tensor(name).map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
                    let kind = weights::kind_of(view.dtype()).with_context(|| format!("{}: tensor {name}", files[*file].display()))?;
                    let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
                    let mut t = Tensor::f_from_data_size(view.data(), &shape, kind)?.to_kind(Kind::Float);
                    let module = name.strip_suffix(".weight").unwrap_or(name);
                    let lora = adapter.as_ref().and_then(|a| a.pairs.get(module).map(|pair| (pair, a.scaling)));
                    if let Some((blocksize, double_quant)) = opts.qlora.filter(|_| is_decoder_projection(name)) {
                        let q = nf4::quantize(&t, blocksize, double_quant).with_context(|| format!("NF4 round trip of {name}"))?;
                        t = nf4::dequantize(&q).to_kind(Kind::Float);
                    }
                    if let Some(((a, b), scaling)) = lora {
                        if a.size() != [a.size()[0], shape[1]] || b.size() != [shape[0], a.size()[0]] {
                            bail!("{module}: adapter shapes {:?} / {:?} do not fit the weight {:?}", a.size(), b.size(), shape);
                        }
                        // peft's merge: W + (B @ A) · scaling, in float32.
                        t = t + b.matmul(a) * scaling;
                    }
                    if let Some(n) = perm {
                        t = permute_heads(&t, *n);
                    }
                    let t = t.contiguous();
                    let n = t.numel();
                    let mut v = vec![0f32; n];
                    t.f_copy_data(&mut v, n)?;
                    if v.iter().any(|x| !x.is_finite()) {
                        bail!("{}: tensor {name} holds NaN or infinite values; the checkpoint (or the merge) is broken", files[*file].display());
                    }
                    v
                }
            };
            w.write_tensor(&gguf::encode(&values, p.info.ty))?;
        }
        let out = w.finish()?;
        let file = out.into_inner().map_err(|e| anyhow::anyhow!("flushing {}: {e}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
        Ok(file.metadata()?.len())
    })();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("exporting {} (nothing was written at {})", dir.display(), opts.out.display())));
        }
    };
    std::fs::rename(&tmp, &opts.out).with_context(|| format!("renaming {} to {}", tmp.display(), opts.out.display()))?;

    let modelfile = modelfile::write_beside(&opts.out, dir, opts.system_prompt.as_deref())?;
    Ok(ExportReport { tensors: plan.len(), bytes, params: total_params, merged: used_lora, modelfile })
}
