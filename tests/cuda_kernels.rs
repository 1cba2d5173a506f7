//! The CUDA kernels of csrc/*.cu compile with nvcc for sm_80 (A100) and sm_90 (H100/H200) on every
//! test run, GPU or not: the test command's `STEPTUNE_WITH_NVCC=1 ./libtorch-setup.sh` installs nvcc
//! from PyPI. With `--features cuda` build.rs also links them; their values are tested against
//! the CPU path in tests/qlora.rs where a GPU is present.
use std::path::{Path, PathBuf};
use std::process::Command;

fn nvcc() -> (PathBuf, Vec<PathBuf>) {
    let nvcc = std::env::var("STEPTUNE_NVCC").unwrap_or_else(|_| {
        panic!("STEPTUNE_NVCC is unset: run STEPTUNE_WITH_NVCC=1 ./libtorch-setup.sh (it installs nvcc 13.0 from PyPI and writes .cargo/config.toml)")
    });
    let include = std::env::var("STEPTUNE_CUDA_INCLUDE").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    (PathBuf::from(nvcc), include)
}

#[test]
fn nf4_kernels_compile_for_sm80_and_sm90() {
    let (nvcc, include) = nvcc();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("csrc/nf4_dequant.cu");
    let d = tempfile::tempdir().unwrap();
    let obj = d.path().join("nf4_dequant.o");
    let mut c = Command::new(&nvcc);
    c.args(["-c", "-std=c++17", "-Xptxas", "-v", "-Werror", "all-warnings"]);
    for arch in ["80", "90"] {
        c.arg("-gencode").arg(format!("arch=compute_{arch},code=sm_{arch}"));
    }
    for inc in &include {
        c.arg("-I").arg(inc);
    }
    let out = c.arg("-o").arg(&obj).arg(&src).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nvcc failed on {}:\n{log}", src.display());
    assert!(std::fs::metadata(&obj).unwrap().len() > 0);
    // ptxas reports every kernel it assembled: the eight-values-per-thread kernel and the
    // byte kernel (tails, odd layouts), each for both output types and both architectures, and
    // none spills registers to local memory.
    for arch in ["sm_80", "sm_90"] {
        let funcs: Vec<&str> = log.lines().filter(|l| l.contains("Compiling entry function") && l.contains(arch)).collect();
        assert_eq!(funcs.len(), 4, "{arch}: expected the vec8 and byte kernels for float and bfloat16, ptxas said:\n{log}");
        for (kernel, ty) in [("nf4_dequantize_vec8_kernel", "nv_bfloat16"), ("nf4_dequantize_vec8_kernel", "IfE"), ("nf4_dequantize_kernel", "nv_bfloat16"), ("nf4_dequantize_kernel", "IfE")] {
            assert!(funcs.iter().any(|l| l.contains(kernel) && l.contains(ty)), "{arch}: no {kernel} for {ty}:\n{log}");
        }
    }
    let spills: Vec<&str> = log.lines().filter(|l| l.contains("spill stores")).collect();
    assert_eq!(spills.len(), 8, "{log}");
    assert!(spills.iter().all(|l| l.contains(" 0 bytes spill stores, 0 bytes spill loads")), "{log}");
}
