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
    // gloo's headers (vendored: the wheel lacks them), which c10d's ProcessGroupGloo.hpp includes.
    let gloo_include = PathBuf::from("csrc/third_party/gloo");

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

    // The CUDA kernels first: the C++ wrappers around them are compiled only when they exist.
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    let (cuda_include, kernels) = if cuda {
        if !has_cuda_lib {
            panic!(
                "--features cuda needs a libtorch with CUDA (libtorch_cuda.so), and {} has none: run ./libtorch-setup.sh cuda",
                lib_dir.display()
            );
        }
        let cuda_include = cuda_include();
        let kernels = compile_cuda(&cuda_include);
        (cuda_include, kernels)
    } else {
        (Vec::new(), false)
    };

    let cpp = sources(Path::new("csrc"), "cpp");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        // NF4 dequantization must round exactly like bitsandbytes' separate multiply and add.
        .flag("-ffp-contract=off")
        // Without it c10d's ProcessGroupGloo.hpp is empty (csrc/dist.cpp).
        .define("USE_C10D_GLOO", None)
        .files(&cpp);
    build.flag(format!("-isystem{}", gloo_include.display()));
    for inc in &includes {
        // -isystem: libtorch's own headers should not drown our warnings.
        build.flag(format!("-isystem{}", inc.display()));
    }
    // c10/cuda headers (current stream, device guard) include cuda_runtime_api.h; c10d's
    // ProcessGroupNCCL.hpp also crt/host_config.h, <nv/target> (cccl) and cuBLAS/cuSPARSE/cuSOLVER's.
    for inc in &cuda_include {
        build.flag(format!("-isystem{}", inc.display()));
        if inc.join("cccl").is_dir() {
            build.flag(format!("-isystem{}", inc.join("cccl").display()));
        }
    }
    if kernels {
        build.define("STEPTUNE_CUDA_KERNELS", None);
    }
    if cuda {
        // csrc/dist.cpp's NCCL backend: ProcessGroupNCCL lives in libtorch_cuda.so, linked above.
        build.define("USE_C10D_NCCL", None).define("STEPTUNE_NCCL", None);
        // csrc/cuda_memory.cpp: the caching allocator's statistics (c10::cuda headers).
        build.define("STEPTUNE_CUDA", None);
        build.flag(format!("-isystem{}", nccl_include().display()));
    }
    build.compile("steptune_csrc");
    if kernels {
        // The wrappers call c10::cuda (stream, guard): c10_cuda is linked directly, not only
        // through libtorch_cuda.so.
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        link_cudart(&lib_dir);
        println!("cargo:rustc-cfg=steptune_cuda_kernels");
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
    println!("cargo:rerun-if-env-changed=STEPTUNE_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=STEPTUNE_NCCL_INCLUDE");
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

/// The folders holding cuda_runtime.h and the other CUDA headers: $STEPTUNE_CUDA_INCLUDE
/// (':'-separated, set by `./libtorch-setup.sh cuda`), else the toolkit's include beside bin/nvcc.
fn cuda_include() -> Vec<PathBuf> {
    let nvcc = nvcc();
    let cuda_include: Vec<PathBuf> = match std::env::var("STEPTUNE_CUDA_INCLUDE") {
        Ok(v) if !v.is_empty() => std::env::split_paths(&v).collect(),
        _ => {
            let nvcc_path = which(&nvcc).unwrap_or_else(|| PathBuf::from(&nvcc));
            nvcc_path.parent().and_then(Path::parent).map(|t| vec![t.join("include")]).unwrap_or_default()
        }
    };
    if !cuda_include.iter().any(|d| d.join("cuda_runtime.h").exists()) {
        panic!(
            "cuda_runtime.h not found in {cuda_include:?} (nvcc {nvcc}): run ./libtorch-setup.sh cuda, \
             or set STEPTUNE_NVCC and STEPTUNE_CUDA_INCLUDE"
        );
    }
    cuda_include
}

/// The folder holding the nccl.h of nvidia-nccl-cu13==2.28.9, for csrc/dist.cpp: exactly the NCCL
/// torch 2.11.0 is built with, since its version macros change ProcessGroupNCCL::Options' layout.
fn nccl_include() -> PathBuf {
    let dir = std::env::var("STEPTUNE_NCCL_INCLUDE").map(PathBuf::from).unwrap_or_default();
    let header = std::fs::read_to_string(dir.join("nccl.h")).unwrap_or_else(|_| {
        panic!(
            "--features cuda compiles csrc/dist.cpp with NCCL and needs nccl.h 2.28.9, which STEPTUNE_NCCL_INCLUDE \
             ({}) lacks: run ./libtorch-setup.sh cuda",
            dir.display()
        )
    });
    let version: Vec<&str> = ["MAJOR", "MINOR", "PATCH"]
        .iter()
        .map(|p| {
            let def = format!("#define NCCL_{p} ");
            header.lines().find_map(|l| l.strip_prefix(def.as_str())).map_or("?", str::trim)
        })
        .collect();
    if version != ["2", "28", "9"] {
        panic!("{}/nccl.h is NCCL {}, torch 2.11.0 needs 2.28.9: run ./libtorch-setup.sh cuda", dir.display(), version.join("."));
    }
    dir
}

fn nvcc() -> String {
    std::env::var("STEPTUNE_NVCC").unwrap_or_else(|_| "nvcc".to_string())
}

/// nvcc for sm_80 (A100) and sm_90 (H100/H200); found as $STEPTUNE_NVCC (set by
/// `./libtorch-setup.sh cuda`), else `nvcc` on PATH. Returns false when there is no .cu file.
///
/// nvcc from PyPI (nvidia-cuda-nvcc, -crt, nvidia-nvvm, nvidia-cuda-runtime, one shared
/// `nvidia/cu13` tree) needs no extra flags: its bin/nvcc.profile points at ../nvvm/bin (cicc),
/// ../nvvm/libdevice and ../include (crt/ and cuda_runtime.h) relative to itself. The host
/// compiler is the `c++`/`g++` on PATH (gcc up to 15 is supported by nvcc 13.0).
fn compile_cuda(cuda_include: &[PathBuf]) -> bool {
    let kernels = sources(Path::new("csrc"), "cu");
    if kernels.is_empty() {
        return false;
    }
    let mut build = cc::Build::new();
    // cudart "none": the kernels use the shared libcudart.so.13 that libtorch_cuda.so already
    // loads (link_cudart), not a second, static runtime.
    // cc takes nvcc from $NVCC (`.compiler()` would be taken for the host compiler, and get gcc flags).
    std::env::set_var("NVCC", nvcc());
    build.cuda(true).cudart("none").pic(true).std("c++17");
    // The .cu files are pure CUDA runtime code: no libtorch headers.
    for inc in cuda_include {
        build.include(inc);
    }
    for arch in ["80", "90"] {
        build.flag("-gencode").flag(format!("arch=compute_{arch},code=sm_{arch}"));
    }
    build.files(&kernels).compile("steptune_cuda");
    true
}

/// Links the shared CUDA runtime the kernels' launches call into: the libcudart.so.13 that
/// libtorch_cuda.so itself resolves (the wheel's nvidia/cu13/lib beside torch/, or libtorch's own
/// lib/), else the one installed with nvcc; with an rpath, so that it is the same file at run time.
fn link_cudart(lib_dir: &Path) {
    let mut candidates = vec![
        lib_dir.join("../../nvidia/cu13/lib"),
        lib_dir.join("../../nvidia/cuda_runtime/lib"),
        lib_dir.to_path_buf(),
    ];
    if let Ok(nvcc) = std::env::var("STEPTUNE_NVCC") {
        if let Some(toolkit) = Path::new(&nvcc).parent().and_then(Path::parent) {
            candidates.push(toolkit.join("lib"));
        }
    }
    let dir = candidates
        .into_iter()
        .find(|d| d.join("libcudart.so.13").exists())
        .unwrap_or_else(|| panic!("libcudart.so.13 not found beside libtorch ({}) nor nvcc", lib_dir.display()));
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib:+verbatim=libcudart.so.13");
    if dir != lib_dir {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(prog)).find(|p| p.is_file())
}
