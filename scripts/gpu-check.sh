#!/usr/bin/env bash
# gpu-check.sh: everything a GPU must show, in one run of a few minutes, with every figure printed
# and written to one JSON file.
#
#   scripts/gpu-check.sh          # on a GPU machine (an H200: peaks 4.8 TB/s and 989 bf16 TFLOPS)
#   scripts/gpu-check.sh --cpu    # the same checks on tiny shapes on the CPU (CI: tests/gpu_check.rs)
#
# 1. nf4:      NF4 dequantization on the device equals the CPU path bit for bit (float32, bfloat16,
#              float16 outputs; blocksize 64; plain and double-quantized absmax; odd sizes), and
#              the CPU path equals bitsandbytes (tests/fixtures/nf4); the kernel's bandwidth
#              against the peak.
# 2. logits:   tiny Qwen3 and T5 checkpoints (tests/fixtures/models): float32 on the device vs the
#              CPU and transformers (bound 1e-4 × max |logit|), bfloat16 vs float32 (1e-1 ×).
# 3. bench:    steptune bench-train, QLoRA + gradient checkpointing, bf16, batch 1 and 4, on the
#              Qwen3-8B shape with random weights drawn (and quantized) on the GPU, sequence 2048
#              (--cpu: a 2-layer shape, sequence 64, batch 1 and 2): tokens/s, the CUDA caching
#              allocator's peaks, model-FLOPs utilisation; `steptune estimate` against the peak.
# 4. hf:       the same steps with transformers + peft (+ bitsandbytes when it imports), ratios.
#
# Exits 1 when any check fails. Environment:
#   STEPTUNE_BIN      the binary (default: dist/steptune, else target/release/steptune)
#   STEPTUNE_PYTHON   the Python with torch (GPU: python3; --cpu: the reference venv if it exists)
#   OUT               where gpu-check.json and the logs go (default: a new temp folder)
#   GPU_CHECK_STEPS (GPU 4, --cpu 2), GPU_CHECK_WARMUP (2 / 1): timed and untimed steps
#   GPU_CHECK_BATCHES ("1 4" / "1 2"), GPU_CHECK_SEQ (2048 / 64), GPU_CHECK_HF (1; 0 skips it)
#   GPU_CHECK_HF_BATCHES (all / --cpu: the first) the batch sizes transformers runs
#   GPU_CHECK_DEADLINE (480 / 600): seconds for the whole run; steps are cut short to fit it and
#                     those left out are failures (steptune's steps run before transformers')
#
# On a machine with torch 2.11.0+cu130 installed by pip but no Rust, the script puts that torch's
# lib folder and its nvidia/*/lib folders on LD_LIBRARY_PATH before starting the binary.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
case "${1:-}" in
  --cpu) mode=cpu ;;
  "") ;;
  -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
  *) echo "gpu-check: unknown argument '$1' (use --cpu or nothing)" >&2; exit 2 ;;
esac

t0=$SECONDS
out=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$out/logs"
txt=$out/gpu-check.txt
json=$out/gpu-check.json
: >"$txt"
say() { printf '%s\n' "$*" | tee -a "$txt"; }
failures=()
fail() { failures+=("$1"); say "FAILED: $1"; }
# A JSON string literal of $1 (quotes, backslashes, control characters escaped).
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t\r' '   ')"; }
# The first number (or null/true/false) under "KEY": in a one-line JSON file; empty if absent.
jnum() { grep -o "\"$2\":[^,}]*" "$1" 2>/dev/null | head -n1 | cut -d: -f2-; }
# awk arithmetic on the figures: calc FORMAT EXPR VAR=VALUE... (fmt FORMAT NUMBER for one number).
calc() {
  local f=$1 e=$2 a=() v; shift 2
  for v in "$@"; do a+=(-v "$v"); done
  awk "${a[@]}" "BEGIN { printf \"$f\", $e }" 2>/dev/null
}
fmt() { calc "$1" x x="$2"; }
show_tail() { sed '/^[[:space:]]*$/d' "$1" | tail -n "${2:-8}" | sed 's/^/    /' | tee -a "$txt"; }

if [[ $mode == gpu ]]; then
  device=cuda; steps=${GPU_CHECK_STEPS:-4}; warmup=${GPU_CHECK_WARMUP:-2}; batches=${GPU_CHECK_BATCHES:-"1 4"}
  seq=${GPU_CHECK_SEQ:-2048}; recipe=scripts/gpu-check/qwen3-8b-qlora.yaml
  nf4_args=(--bench-shape 12288x4096 --iters 200 --peak-gbps 4800); peak_tflops=989; threads=8
  t_check=120; t_bench=240; t_hf=300; deadline=${GPU_CHECK_DEADLINE:-480}
else
  device=cpu; steps=${GPU_CHECK_STEPS:-2}; warmup=${GPU_CHECK_WARMUP:-1}; batches=${GPU_CHECK_BATCHES:-"1 2"}
  seq=${GPU_CHECK_SEQ:-64}; recipe=scripts/gpu-check/tiny-qlora.yaml
  nf4_args=(--bench-shape 512x1024 --iters 3); peak_tflops=""; threads=2
  t_check=120; t_bench=120; t_hf=180; deadline=${GPU_CHECK_DEADLINE:-600}
fi
# Seconds a step may take: its own limit, cut to what is left of the whole run's deadline; fails
# (prints nothing) when under 15 s are left, so a short GPU session ends with the figures it has.
budget() {
  local left=$(( deadline - (SECONDS - t0) ))
  (( left >= 15 )) || return 1
  echo $(( $1 < left ? $1 : left ))
}

# ---- the binary and the torch libraries it runs against -------------------------------------------
bin=${STEPTUNE_BIN:-}
if [[ -z $bin ]]; then
  for c in dist/steptune target/release/steptune; do [[ -x $c ]] && { bin=$c; break; }; done
fi
[[ -n $bin && -x $bin ]] || { echo "gpu-check: no steptune binary (set STEPTUNE_BIN, or build dist/steptune: see README, 'Checking a GPU')" >&2; exit 2; }

# torch's lib folder and the nvidia/*/lib folders beside it (pip's layout), on LD_LIBRARY_PATH.
py=""
use_python_torch() {
  local tdir site libs d
  tdir=$("$1" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) || return 1
  [[ -f $tdir/lib/libtorch_cpu.so ]] || return 1
  site=$(dirname "$tdir"); libs=$tdir/lib
  for d in "$site"/nvidia/*/lib; do [[ -d $d ]] && libs=$libs:$d; done
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "torch libraries: $tdir/lib (and $site/nvidia/*/lib) from $1"
}
ref_venv=${STEPTUNE_REF_VENV:-$HOME/.cache/steptune/ref-venv}
if [[ $mode == gpu ]]; then
  py=${STEPTUNE_PYTHON:-python3}
  use_python_torch "$py" || say "note: no torch in $py; the binary runs against its rpath's libtorch"
elif [[ -n ${STEPTUNE_PYTHON:-} ]]; then
  py=$STEPTUNE_PYTHON
elif [[ -x $ref_venv/bin/python ]]; then
  py=$ref_venv/bin/python
fi
# `steptune version` prints pretty JSON: kept on one line, without spaces (none in its values).
version() { "$bin" version 2>"$out/logs/version.err" | tr -d '\n ' >"$out/logs/version.json" && [[ -s $out/logs/version.json ]]; }
if ! version; then
  # A CPU run whose binary cannot find libtorch (its rpath is another machine's): try python's.
  if [[ $mode == cpu && -n $py ]] && use_python_torch "$py" && version; then :; else
    say "gpu-check: $bin does not start:"; show_tail "$out/logs/version.err"; exit 2
  fi
fi
versions=$(cat "$out/logs/version.json")
gpu_info=null
if [[ $mode == gpu ]]; then
  [[ $(jnum "$out/logs/version.json" libtorch_cuda) == true ]] || fail "binary: $bin sees no CUDA: a libtorch without CUDA (see README: ./libtorch-setup.sh cuda, --features cuda), or no GPU or driver (nvidia-smi)"
  [[ $(jnum "$out/logs/version.json" cuda_kernels) == true ]] || fail "binary: $bin was built without --features cuda (no NF4 CUDA kernel)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpu_info=$(jstr "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n1)")
  fi
fi
say "gpu-check ($mode): $bin: libtorch $(jnum "$out/logs/version.json" libtorch | tr -d '"') (cuda $(jnum "$out/logs/version.json" libtorch_cuda), kernels $(jnum "$out/logs/version.json" cuda_kernels)), commit $(jnum "$out/logs/version.json" git_commit | tr -d '"'); figures in $out"
[[ $gpu_info != null ]] && say "device: ${gpu_info//\"/}"

nf4=null; logits=null; bench=(); hf_note=""

write_json() {
  local b="" e
  for e in "${bench[@]}"; do b=${b:+$b,}$e; done
  local f="" x
  for x in "${failures[@]}"; do f=${f:+$f,}$(jstr "$x"); done
  printf '{"mode":"%s","binary":%s,"versions":%s,"gpu":%s,"seq":%s,"steps":%s,"warmup":%s,"nf4":%s,"logits":%s,"bench":[%s],"hf_note":%s,"failures":[%s],"ok":%s}\n' \
    "$mode" "$(jstr "$bin")" "$versions" "$gpu_info" "$seq" "$steps" "$warmup" "$nf4" "$logits" "$b" "$(jstr "$hf_note")" "$f" \
    "$([[ ${#failures[@]} == 0 ]] && echo true || echo false)" >"$json"
}

# A device-check section: its summary lines printed, its JSON line in $REPLY (null on failure).
device_check() {
  local what=$1; shift
  local o=$out/logs/$what.json e=$out/logs/$what.err
  local limit rc
  REPLY=null
  limit=$(budget "$t_check") || { fail "$what: not run, out of time"; return; }
  timeout "$limit" "$bin" device-check "$what" --device "$device" "$@" >"$o" 2>"$e"
  rc=$?
  grep '^device-check' "$e" | sed 's/^device-check //' | tee -a "$txt"
  if [[ $rc != 0 ]]; then
    fail "$what: exit $rc$([[ $rc == 124 ]] && echo " (timed out after ${limit}s)")"; show_tail "$e"
  fi
  [[ -s $o ]] && REPLY=$(tail -n1 "$o")
}

# ---- 1. NF4 ---------------------------------------------------------------------------------------
device_check nf4 "${nf4_args[@]}"; nf4=$REPLY
if [[ $nf4 != null ]]; then
  f=$out/logs/nf4.json
  say "nf4: mismatches $(jnum "$f" mismatches) over $(jnum "$f" weights) weights ($(jnum "$f" values) values): vs bitsandbytes $(jnum "$f" mismatch_vs_bitsandbytes), vs tensor-op reference $(jnum "$f" mismatch_vs_reference), device vs cpu $(jnum "$f" mismatch_device_vs_cpu | sed 's/null/n\/a/')"
  r=$(jnum "$f" ratio_to_peak)
  say "nf4: bandwidth $(fmt '%.1f' "$(jnum "$f" gbps)") GB/s on $device ($(jnum "$f" kernel_gbps | grep -q null && echo 'full path' || echo kernel)), $([[ $r == null || -z $r ]] && echo 'peak n/a' || echo "ratio to the $(jnum "$f" peak_gbps) GB/s peak $(fmt '%.3f' "$r")")"
fi
write_json

# ---- 2. logits ------------------------------------------------------------------------------------
device_check logits; logits=$REPLY
write_json

# ---- 3 and 4. training steps: steptune, estimate, transformers --------------------------------------
vocab=$(awk '/vocab_size:/ {print $2; exit}' "$recipe")
has_estimate=0
"$bin" help estimate >/dev/null 2>&1 && has_estimate=1

hf_method=""
if [[ ${GPU_CHECK_HF:-1} == 0 ]]; then
  hf_note="skipped: GPU_CHECK_HF=0"
elif [[ -z $py ]]; then
  hf_note="skipped: no Python with torch (--cpu uses the reference venv $ref_venv when it exists; scripts/ref-env.sh makes one)"
elif ! err=$("$py" -c 'import torch, transformers, peft, yaml' 2>&1); then
  hf_note="skipped: $py cannot import torch, transformers, peft and yaml: $(printf '%s' "$err" | tail -n1)"
elif [[ $mode == gpu ]] && ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  hf_note="skipped: torch in $py sees no GPU"
elif err=$("$py" -c 'import bitsandbytes' 2>&1); then
  hf_method=qlora; hf_note="transformers + peft + bitsandbytes (QLoRA nf4, double quant, bf16 compute)"
else
  hf_method=lora
  hf_note="bitsandbytes does not import ($(printf '%s' "$err" | tail -n1)): transformers + peft LoRA on the bf16 base instead of QLoRA"
fi
say "hf: $hf_note"

# Per batch size: its data file, and each side's JSON line and figures.
declare -A st_json est_json hf_json tps peak mfu
for b in $batches; do
  st_json[$b]=null; est_json[$b]=null; hf_json[$b]=null
  # Rows of $seq random token ids, every one labelled; the same file for both sides.
  awk -v rows="$(( (steps + warmup) * b ))" -v len="$seq" -v vocab="$vocab" -v seed="$b" 'BEGIN {
    srand(seed)
    for (r = 0; r < rows; r++) {
      s = ""
      for (i = 0; i < len; i++) s = s (i ? "," : "") int(rand() * vocab)
      printf "{\"input_ids\":[%s],\"labels\":[%s]}\n", s, s
    }
  }' >"$out/data-b$b.jsonl"
done
bench_json() {
  bench=()
  for b in $batches; do bench+=("{\"batch\":$b,\"steptune\":${st_json[$b]},\"estimate\":${est_json[$b]},\"hf\":${hf_json[$b]}}"); done
  write_json
}

# steptune first for every batch size (what a short session must not miss), with the estimate.
for b in $batches; do
  o=$out/logs/bench-b$b.json; e=$out/logs/bench-b$b.err
  limit=$(budget "$t_bench") || { fail "bench batch $b: not run, out of time"; continue; }
  timeout "$limit" "$bin" bench-train "$recipe" --prepared "$out/data-b$b.jsonl" --mode ordered --steps "$steps" --warmup-steps "$warmup" \
    --method qlora --gradient-checkpointing true --set training.per_device_train_batch_size="$b" --set training.device="$device" \
    ${peak_tflops:+--peak-tflops "$peak_tflops"} --json >"$o" 2>"$e"
  rc=$?
  if [[ $rc == 0 && -s $o ]]; then
    st_json[$b]=$(tail -n1 "$o"); tail -n1 "$o" >"$o.last"; o=$o.last
    tps[$b]=$(jnum "$o" tokens_per_second); peak[$b]=$(jnum "$o" peak_bytes); mfu[$b]=$(jnum "$o" mfu)
    say "bench: batch $b seq $seq: steptune $(fmt '%.1f' "${tps[$b]}") tokens/s, $(fmt '%.3f' "$(jnum "$o" seconds_per_step)") s/step, peak ${peak[$b]} bytes = $(calc '%.3f' 'x/1073741824' x="${peak[$b]}") GiB ($(jnum "$o" peak_bytes_source | tr -d '"'))$(
      [[ $mode == gpu ]] && echo ", peak reserved $(calc '%.3f' 'x/1073741824' x="$(jnum "$o" peak_reserved_bytes)") GiB, training peak $(calc '%.3f' 'x/1073741824' x="$(jnum "$o" peak_allocated_train_bytes)") GiB"), $(fmt '%.4g' "$(jnum "$o" model_tflops_per_second)") model TFLOPS, MFU $([[ ${mfu[$b]} == null ]] && echo 'n/a (no peak for this device)' || calc '%.2f%%' 'x*100' x="${mfu[$b]}")"
    awk '$1 > 0 {ok=1} END {exit !ok}' <<<"${tps[$b]}" || fail "bench batch $b: tokens/s is ${tps[$b]}"
    awk '$1 > 0 {ok=1} END {exit !ok}' <<<"${peak[$b]}" || fail "bench batch $b: peak is ${peak[$b]}"
  else
    fail "bench batch $b: steptune bench-train exit $rc$([[ $rc == 124 ]] && echo " (timed out after ${limit}s)")"; show_tail "$e"
  fi

  # steptune estimate, against the measured peak
  if [[ $has_estimate == 0 ]]; then
    say "estimate: not available in this build"
  else
    eo=$out/logs/estimate-b$b.json
    if timeout 60 "$bin" estimate "$recipe" --seq "$seq" --batch "$b" --set training.device="$device" --json >"$eo" 2>"$out/logs/estimate-b$b.err" \
        && total=$(jnum "$eo" total_bytes) && [[ $total =~ ^[0-9.eE+-]+$ ]]; then
      est_json[$b]=$(tail -n1 "$eo")
      if [[ ${st_json[$b]} != null ]]; then
        # The allocator's (or RSS's) peak counts tensors: compare the plan's tensors with it; the
        # total adds the CUDA context (or the CPU runtime) and the allocator's slack.
        tensors=$(jnum "$eo" tensor_bytes)
        say "estimate: batch $b: tensors $tensors vs measured peak ${peak[$b]}: ratio measured/estimate $(calc '%.3f' 'b/a' a="$tensors" b="${peak[$b]}"); total with runtime and slack $total ($(calc '%.2f' 'x/1073741824' x="$total") GiB)"
      else
        say "estimate: batch $b: total_bytes $total (no measured peak)"
      fi
    else
      fail "estimate batch $b: steptune estimate failed or printed no total_bytes"; show_tail "$out/logs/estimate-b$b.err"
    fi
  fi
  bench_json
done

# transformers + peft (+ bitsandbytes) on the same rows; --cpu: the first batch size only (each
# run imports torch, transformers, peft and bitsandbytes: 10-20 s on 2 cores).
hf_batches=${GPU_CHECK_HF_BATCHES:-$([[ $mode == cpu ]] && echo "${batches%% *}" || echo "$batches")}
for b in $hf_batches; do
  [[ -n $hf_method ]] || break
  ho=$out/logs/hf-b$b.json; he=$out/logs/hf-b$b.err
  limit=$(budget "$t_hf") || { fail "hf batch $b: not run, out of time"; continue; }
  timeout "$limit" "$py" scripts/bench_hf.py train --random-recipe "$recipe" --device "$device" --prepared "$out/data-b$b.jsonl" \
    --method "$hf_method" --dtype bf16 --compute-dtype bf16 --lora-r 16 --lora-alpha 32 --lora-dropout 0.0 --batch-size "$b" \
    --steps "$steps" --warmup-steps "$warmup" --threads "$threads" --lr 2e-4 --mode ordered --gradient-checkpointing >"$ho" 2>"$he"
  rc=$?
  if [[ $rc == 0 && -s $ho ]]; then
    hf_json[$b]=$(tail -n1 "$ho"); tail -n1 "$ho" >"$ho.last"; ho=$ho.last
    htps=$(jnum "$ho" tokens_per_second)
    # GPU: the allocators' training peaks of both sides (the HF load peak is its 16-bit model,
    # built before quantizing); CPU: the anonymous-memory peaks (HF's include the imports).
    if [[ $mode == gpu ]]; then
      hpeak=$(jnum "$ho" peak_allocated_train_bytes); stpeak=$(jnum "$out/logs/bench-b$b.json.last" peak_allocated_train_bytes); what="training peak"
    else
      hpeak=$(calc '%.0f' '(a>b?a:b)*1048576' a="$(jnum "$ho" peak_anon_load_mib)" b="$(jnum "$ho" peak_anon_train_mib)"); stpeak=${peak[$b]:-}; what="peak"
    fi
    line="hf: batch $b: $hf_method $(fmt '%.1f' "$htps") tokens/s, $what $hpeak bytes = $(calc '%.3f' 'x/1073741824' x="$hpeak") GiB"
    if [[ ${st_json[$b]} != null ]]; then
      line="$line; steptune/hf: tokens/s $(calc '%.3f' 'a/b' a="${tps[$b]}" b="$htps"), $what $(calc '%.3f' 'a/b' a="$stpeak" b="$hpeak")"
      [[ ${mfu[$b]} != null ]] && line="$line; hf MFU $(calc '%.2f%%' 'm*b/a*100' m="${mfu[$b]}" a="${tps[$b]}" b="$htps") (same model FLOPs per token)"
    fi
    say "$line"
  else
    fail "hf batch $b: bench_hf.py exit $rc$([[ $rc == 124 ]] && echo " (timed out after ${limit}s)")"; show_tail "$he" 12
  fi
  bench_json
done

bench_json
if [[ ${#failures[@]} == 0 ]]; then
  say "gpu-check: all checks passed; figures in $json"
  exit 0
fi
say "gpu-check: ${#failures[@]} check(s) FAILED: ${failures[*]}; figures in $json"
exit 1
