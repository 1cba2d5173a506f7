//! Reading and writing safetensors checkpoints: single files or sharded
//! (`model.safetensors.index.json`), memory-mapped, any stored dtype converted to the run's.
//! Names stay exactly as the checkpoint has them.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

/// Named tensors, as a checkpoint holds them.
pub type Weights = BTreeMap<String, Tensor>;

pub(crate) fn kind_of(d: Dtype) -> Result<Kind> {
    Ok(match d {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        other => bail!("unsupported safetensors dtype {other:?}"),
    })
}

pub(crate) fn dtype_of(k: Kind) -> Result<Dtype> {
    Ok(match k {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        other => bail!("cannot store tensors of kind {other:?} in safetensors"),
    })
}

/// Hands each tensor of one safetensors file to `f`, one at a time, as stored (dtype and CPU),
/// copied out of the memory map only when `keep` accepts its name. Memory stays at one tensor
/// beyond what `f` keeps: QLoRA quantizes a checkpoint layer by layer this way.
pub fn visit_file(path: &Path, keep: &dyn Fn(&str) -> bool, f: &mut dyn FnMut(String, Tensor) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the file is opened read-only and not modified while mapped.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e:?}", path.display()))?;
    for (name, view) in st.tensors() {
        if !keep(&name) {
            continue;
        }
        let kind = kind_of(view.dtype()).with_context(|| format!("{}: tensor {name}", path.display()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind).with_context(|| format!("{}: tensor {name}", path.display()))?;
        f(name, t)?;
    }
    Ok(())
}

/// Converts floating-point tensors to `float_kind` (when given) and moves to `device`; integer
/// tensors (NF4 bytes, ids) keep their kind.
pub fn convert(t: Tensor, float_kind: Option<Kind>, device: Device) -> Tensor {
    let t = match float_kind {
        Some(fk) if matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) && t.kind() != fk => t.to_kind(fk),
        _ => t,
    };
    if device == Device::Cpu { t } else { t.to_device(device) }
}

/// Reads one safetensors file. Floating-point tensors are converted to `float_kind` when given;
/// integer tensors (NF4 bytes, ids) keep theirs. `keep` filters names before any copy.
pub fn read_file(path: &Path, float_kind: Option<Kind>, device: Device, keep: &dyn Fn(&str) -> bool) -> Result<Weights> {
    let mut out = Weights::new();
    visit_file(path, keep, &mut |name, t| {
        out.insert(name, convert(t, float_kind, device));
        Ok(())
    })?;
    Ok(out)
}

/// The safetensors files of a model folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`.
pub fn model_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        bail!(
            "{} holds neither model.safetensors nor model.safetensors.index.json (steptune reads safetensors; convert .bin checkpoints with transformers' save_pretrained)",
            dir.display()
        );
    }
    let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?).with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = idx.get("weight_map").and_then(|m| m.as_object()).with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    shards
        .into_iter()
        .map(|shard| {
            let path = dir.join(shard);
            if path.exists() { Ok(path) } else { bail!("shard {} named by {} is missing", path.display(), index.display()) }
        })
        .collect()
}

/// Reads a model folder's weights (single file or shards).
pub fn read_model_dir(dir: &Path, float_kind: Option<Kind>, device: Device, keep: &dyn Fn(&str) -> bool) -> Result<Weights> {
    let mut out = Weights::new();
    for path in model_files(dir)? {
        out.extend(read_file(&path, float_kind, device, keep)?);
    }
    Ok(out)
}

struct View_<'a> {
    data: Vec<u8>,
    shape: Vec<usize>,
    dtype: Dtype,
    _t: std::marker::PhantomData<&'a ()>,
}

impl View for View_<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes tensors as one safetensors file (with `{"format": "pt"}` metadata, which
/// transformers expects), atomically.
pub fn write_file(path: &Path, tensors: &[(String, &Tensor)]) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        views.push((name.clone(), View_ { data, shape: t.size().iter().map(|&s| s as usize).collect(), dtype: dtype_of(t.kind())?, _t: Default::default() }));
    }
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::tensor::serialize(views, &Some(meta)).map_err(|e| anyhow::anyhow!("serialising {}: {e:?}", path.display()))?;
    crate::run::write_atomic(path, &bytes)
}
