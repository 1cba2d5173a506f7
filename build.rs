//! Links libtorch with an rpath (binaries and tests run without LD_LIBRARY_PATH) and compiles the
//! C++ in `csrc/` against libtorch's headers; with the `cuda` feature, `csrc/*.cu` through nvcc.
use std::path::{Path, PathBuf};

fn main() {
    // torch-sys declares `links = "tch"` and publishes the lib dir it linked against.
    let lib_dir = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "DEP_TCH_LIBTORCH_LIB is unset: torch-sys did not find libtorch. Run ./libtorch-setup.sh first.",
    ));
    let root = lib_dir.parent().expect("libtorch lib dir has a parent").to_path_buf();
    let includes = [root.join("include"), root.join("include/torch/csrc/api/include")];

    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    let has_cuda_lib = lib_dir.join("libtorch_cuda.so").exists();
    if has_cuda_lib {
        // Without this the linker drops libtorch_cuda.so (no symbol of it is referenced) and CUDA is
        // silently unavailable at run time.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        // The NVIDIA libraries libtorch_cuda needs live beside it (wheel layout); resolve at run time.
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
        println!("cargo:rustc-cfg=steptune_torch_cuda");
    }
    println!("cargo:rustc-check-cfg=cfg(steptune_torch_cuda)");
    println!("cargo:rustc-check-cfg=cfg(steptune_cuda_kernels)");

    let cpp = sources(Path::new("csrc"), "cpp");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .files(&cpp);
    for inc in &includes {
        // -isystem: libtorch's own headers should not drown our warnings.
        build.flag(format!("-isystem{}", inc.display()));
    }
    build.compile("steptune_csrc");

    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_cuda(&includes);
    }
    // The commit a binary was built from goes into every run folder.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STEPTUNE_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=STEPTUNE_NVCC");
}

fn sources(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == ext));
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    files
}

/// nvcc for sm_80 (A100) and sm_90 (H100/H200); found as $STEPTUNE_NVCC (set by
/// `./libtorch-setup.sh cuda`), else `nvcc` on PATH.
fn compile_cuda(includes: &[PathBuf]) {
    let kernels = sources(Path::new("csrc"), "cu");
    if kernels.is_empty() {
        return;
    }
    let nvcc = std::env::var("STEPTUNE_NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let nvcc_path = PathBuf::from(&nvcc);
    let mut build = cc::Build::new();
    build.cuda(true).compiler(&nvcc).pic(true).std("c++17").define("_GLIBCXX_USE_CXX11_ABI", "1");
    // nvcc from PyPI keeps the CUDA runtime headers in the sibling nvidia/cu13/include.
    if let Some(toolkit) = nvcc_path.parent().and_then(Path::parent) {
        build.include(toolkit.join("include"));
    }
    for inc in includes {
        build.include(inc);
    }
    for arch in ["80", "90"] {
        build.flag("-gencode").flag(format!("arch=compute_{arch},code=sm_{arch}"));
    }
    build.files(&kernels).compile("steptune_cuda");
    println!("cargo:rustc-cfg=steptune_cuda_kernels");
}
