//! The NCCL backend of csrc/dist.cpp (c10d's ProcessGroupNCCL, `STEPTUNE_NCCL`) compiles on every
//! test run, GPU or not, the way tests/cuda_kernels.rs compiles the CUDA kernels: the test command's
//! `STEPTUNE_WITH_NVCC=1 ./libtorch-setup.sh` fetches the headers it needs (nccl.h of
//! nvidia-nccl-cu13==2.28.9; cuBLAS, cuSPARSE, cuSOLVER; nvcc's cuda_runtime.h, crt/, nv/target).
//! With `--features cuda` build.rs compiles it so and links ProcessGroupNCCL from libtorch_cuda.so.
use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "run STEPTUNE_WITH_NVCC=1 ./libtorch-setup.sh (it fetches nvcc 13.0 and the NCCL 2.28.9 headers \
                     from PyPI and writes .cargo/config.toml)";

fn env_path(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: {SETUP}"))
}

/// NCCL_MAJOR.MINOR.PATCH of an nccl.h.
fn nccl_version(header: &str) -> String {
    ["MAJOR", "MINOR", "PATCH"]
        .iter()
        .map(|p| {
            let def = format!("#define NCCL_{p} ");
            header.lines().find_map(|l| l.strip_prefix(def.as_str())).map_or("?", str::trim).to_string()
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn dist_cpp_compiles_with_nccl() {
    let libtorch = PathBuf::from(env_path("LIBTORCH"));
    let cuda_include: Vec<PathBuf> = std::env::split_paths(&env_path("STEPTUNE_CUDA_INCLUDE")).collect();
    let nccl_include = PathBuf::from(env_path("STEPTUNE_NCCL_INCLUDE"));

    // torch 2.11.0 is built with NCCL 2.28.9, whose version macros shape ProcessGroupNCCL::Options.
    let header = std::fs::read_to_string(nccl_include.join("nccl.h"))
        .unwrap_or_else(|e| panic!("{}/nccl.h: {e}: {SETUP}", nccl_include.display()));
    assert_eq!(nccl_version(&header), "2.28.9", "{}/nccl.h", nccl_include.display());
    assert!(header.contains("#define NCCL_VERSION_CODE 22809"), "{}/nccl.h", nccl_include.display());

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("csrc/dist.cpp");
    let d = tempfile::tempdir().unwrap();
    let obj = d.path().join("dist.o");
    let mut c = Command::new("c++");
    c.args(["-c", "-std=c++17", "-D_GLIBCXX_USE_CXX11_ABI=1", "-DUSE_C10D_GLOO", "-DUSE_C10D_NCCL", "-DSTEPTUNE_NCCL"]);
    let mut includes = vec![
        libtorch.join("include"),
        libtorch.join("include/torch/csrc/api/include"),
        root.join("csrc/third_party/gloo"),
    ];
    for inc in &cuda_include {
        includes.push(inc.clone());
        if inc.join("cccl").is_dir() {
            includes.push(inc.join("cccl"));
        }
    }
    includes.push(nccl_include);
    for inc in &includes {
        c.arg("-isystem").arg(inc);
    }
    let out = c.arg("-o").arg(&obj).arg(&src).output().unwrap_or_else(|e| panic!("cannot run c++: {e}"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "c++ failed on {} with NCCL ({c:?}):\n{log}", src.display());
    assert!(std::fs::metadata(&obj).unwrap().len() > 0);

    // The NCCL branch was compiled, not #ifdef'd away: the object calls into ProcessGroupNCCL, whose
    // symbols libtorch_cuda.so defines at link time. (eagerConnectSingleDevice and shutdown are
    // virtual calls through the vtable: they leave no symbol behind.)
    let nm = Command::new("nm").args(["-C", "--undefined-only"]).arg(&obj).output().expect("cannot run nm");
    assert!(nm.status.success(), "nm failed: {}", String::from_utf8_lossy(&nm.stderr));
    let undefined = String::from_utf8_lossy(&nm.stdout);
    for sym in ["c10d::ProcessGroupNCCL::ProcessGroupNCCL(", "c10d::ProcessGroupNCCL::Options::Options("] {
        assert!(undefined.lines().any(|l| l.contains(sym)), "{} does not reference {sym}:\n{undefined}", obj.display());
    }
}
