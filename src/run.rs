//! The run folder: every file a stage writes lands here, written to a temporary name and renamed,
//! so a crash or a full disk never leaves a half-written file behind a good name.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::recipe::LoadedRecipe;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        let hint = if e.raw_os_error() == Some(28) { " (the disk is full: free space or set output_dir elsewhere; earlier files are intact)" } else { "" };
        return Err(e).with_context(|| format!("cannot write {}{hint}", path.display()));
    }
    Ok(())
}

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn create(root: PathBuf) -> Result<RunDir> {
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create the run folder {}", root.display()))?;
        Ok(RunDir { root })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The resolved recipe and what produced this run (versions, seed, command), so a result can
    /// be reproduced.
    pub fn write_provenance(&self, recipe: &LoadedRecipe, stage: &str) -> Result<()> {
        write_atomic(&self.path("recipe.yaml"), recipe.recipe.to_yaml().as_bytes())?;
        let info = json!({
            "stage": stage,
            "recipe_file": recipe.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded quickstart.yaml".into()),
            "seed": recipe.recipe.seed,
            "ranks": crate::dist::world().size,
            "command": std::env::args().collect::<Vec<_>>(),
            "written_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "versions": versions(),
        });
        write_atomic(&self.path(&format!("run_{stage}.json")), serde_json::to_string_pretty(&info)?.as_bytes())
    }
}

pub fn versions() -> serde_json::Value {
    json!({
        "steptune": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("STEPTUNE_GIT_COMMIT"),
        "libtorch": crate::ffi::torch_version(),
        "libtorch_cuda": crate::ffi::torch_has_cuda(),
        // Whether the NF4 CUDA kernel is compiled in (`--features cuda`).
        "cuda_kernels": cfg!(steptune_cuda_kernels),
        "tch": "0.24",
        "tokenizers": "0.22",
    })
}
