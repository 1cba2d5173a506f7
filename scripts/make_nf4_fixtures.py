"""Generate the NF4 reference fixtures for steptune's Rust tests (tests/nf4.rs).

steptune re-implements bitsandbytes' blockwise NF4 quantization (QLoRA's 4-bit weights) on tch
and writes transformers' bitsandbytes 4-bit checkpoint layout. bitsandbytes runs on CPU, so it is
the oracle: these fixtures pin its bytes so that the Rust side is checked bit for bit without
Python in CI.

Writes, relative to the repository root, into tests/fixtures/nf4/:

  cases.json            [{name, shape, dtype, what}] for every case below.
  cases.safetensors     per case C (inputs are stored, so Rust need not reproduce Python's RNG):
      C.input             the weight, in its dtype (float32 / bfloat16 / float16)
      C.plain.dequant     dequantize_4bit(quantize_4bit(w, 64, nf4, compress_statistics=False)),
                          by bnb's generic kernel (cases.json says where bnb 0.50.2's native
                          CPU kernel gives other values: last dim 48, not a multiple of 64)
      C.double.dequant    the same with compress_statistics=True (dtype of the input)
      C.double.absmax_f32 bnb's dequantized nested absmax: dequantize_blockwise(qabsmax, state2)
                          + offset, float32 [blocks] (what dequantize_4bit multiplies by)
    dynamic_map           create_dynamic_map(signed=True), float32 [256]
    nf4_code              get_4bit_type("nf4"), float32 [16]
  plain.safetensors, double.safetensors
      For every case C, `case.C.weight` (the packed uint8 [ceil(n/2), 1]) plus the quant state
      exactly as transformers saves it: QuantState.as_dict(packed=True) under the prefix
      `case.C.weight.` (absmax, quant_map, [nested_absmax, nested_quant_map,]
      quant_state.bitsandbytes__nf4 = the JSON of the non-tensor items as uint8 bytes).
  blockwise8.safetensors
      bnb's native CPU 8-bit blockwise quantizer (the nested quantization of double quant:
      quantize_blockwise(A, code=create_dynamic_map(signed=True), blocksize=256) on float32) on
      a few thousand adversarial values: `input` f32 [n], bnb's `codes` uint8 [n] and `absmax`
      f32 [blocks]. That kernel is not round-to-nearest (it reads a 65536-entry lookup table over
      [-1, 1]), so the values are those of a 2M-point grid over [-1, 1] where bnb's code is not
      the nearest one, values around the table cells where bnb's code changes, each with its
      float32 neighbours, and zeros and tiny values; mostly in blocks whose first value is 1.0
      (absmax 1, so they are the normalized values themselves), then a copy of part of them
      scaled by a non-power-of-two absmax (bnb multiplies by the reciprocal), an all-zero
      block, and a partial last block.
  qwen3_a_bnb.json
      tests/fixtures/models/qwen3_a quantized by transformers itself (from_pretrained with a
      BitsAndBytesConfig on CPU, then save_pretrained) twice: "double" (double quant, compute
      dtype bfloat16) and "plain" (no double quant, compute dtype float32). For each: the
      saved config.json's quantization_config, and for every tensor of model.safetensors its
      dtype, shape and FNV-1a 64-bit hash of its raw little-endian bytes (the checkpoint itself
      is not committed; Rust hashes what `steptune quantize` writes and compares). The script
      also checks that transformers loads the saved folder back as Linear4bit layers that
      dequantize to the same values.

Cases: shapes with element counts that are and are not multiples of 64 and 256, odd counts
(the packed tail pads one zero nibble), odd last dimensions (bnb's CPU dequantize falls back to
its generic path there), 1-D, more than 256 blocks (two nested blocks, the last partial), an
all-zero block and an all-zero partial last block (absmax 0 vs bnb's 1e-38 clamp on the tail),
and values exactly on the midpoints between NF4 codes (bucketize ties go to the lower code).

Regenerate with the pinned reference environment only (scripts/ref-env.sh), from the repository
root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_nf4_fixtures.py

The output is deterministic (fixed seeds, one CPU thread, a single safetensors metadata key).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pins import check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_nf4_fixtures.py", ["torch", "transformers", "bitsandbytes", "safetensors"])

# bnb's generic dequantize is wrapped in torch.compile: run it eagerly (same float ops, no
# recompilation warnings per shape).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)

OUT = Path("tests/fixtures/nf4")
QWEN3_A = Path("tests/fixtures/models/qwen3_a")
META = {"format": "pt"}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def ties_input():
    """[2, 64] float32: row 0 has absmax exactly 1 and every midpoint between adjacent NF4 codes
    (as float32, computed like bnb does) with both signs of the codes themselves; row 1 the same
    scaled by 0.75 (so the scale-by-reciprocal rounding decides)."""
    code = F.get_4bit_type("nf4", device="cpu")
    mids = (code[:-1] + code[1:]) / 2
    row = torch.cat([torch.tensor([1.0]), mids, code, -mids[:8], torch.zeros(64)])[:64]
    return torch.stack([row, row * 0.75]).contiguous()


def zero_blocks_input():
    """[3, 50] float32 = 150 values: blocks of 64, 64, 22; block 0 and the partial block 2 are all
    zero, block 1 random."""
    g = torch.Generator().manual_seed(7)
    w = torch.zeros(150)
    w[64:128] = torch.randn(64, generator=g) * 0.05
    return w.reshape(3, 50)


def random_input(seed, shape, dtype, scale=0.02):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) * scale
    # A few outliers, as real weights have, so block scales differ widely.
    flat = w.view(-1)
    idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 97),), generator=g)
    flat[idx] *= 8.0
    return w.to(dtype)


CASES = [
    # name, shape, dtype, what
    ("f32_32x128", [32, 128], "f32", "4096 values: 64 full blocks, one partial nested block"),
    ("f32_33x70", [33, 70], "f32", "2310 values: last block of 6"),
    ("f32_7x9", [7, 9], "f32", "63 values: odd count, odd last dim, one partial block"),
    ("f32_1001", [1001], "f32", "1-D, odd count"),
    ("bf16_260x64", [260, 64], "bf16", "16640 values: 260 blocks, two nested blocks (last of 4)"),
    ("bf16_5x77", [5, 77], "bf16", "385 values: odd count, odd last dim"),
    ("f16_67x131", [67, 131], "f16", "8777 values: odd count, odd last dim, last block of 9"),
    ("f16_16x48", [16, 48], "f16", "768 values: 12 full blocks"),
    ("f32_ties", [2, 64], "f32", "values on the midpoints between NF4 codes"),
    ("f32_zero_blocks", [3, 50], "f32", "an all-zero full block and an all-zero partial block"),
]


def make_input(i, name, shape, dtype):
    if name == "f32_ties":
        return ties_input()
    if name == "f32_zero_blocks":
        return zero_blocks_input()
    return random_input(1000 + i, shape, DTYPES[dtype])


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def raw_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.uint8 else t.numpy().tobytes()


def quantize_cases():
    cases, plain, double = {}, {}, {}
    meta = []
    for i, (name, shape, dtype, what) in enumerate(CASES):
        w = make_input(i, name, shape, dtype)
        assert list(w.shape) == shape and w.dtype == DTYPES[dtype], name
        cases[f"{name}.input"] = w
        for dq, out in ((False, plain), (True, double)):
            packed, qs = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=dq)
            assert packed.dtype == torch.uint8 and list(packed.shape) == [(w.numel() + 1) // 2, 1]
            native = F.dequantize_4bit(packed, qs, quant_type="nf4")
            # bnb's generic dequantize (the row-major block semantics every backend shares).
            # bnb 0.50.2's native AVX-512 CPU kernel disagrees with it (and with bnb's own
            # quantization) for some even last dims that are not multiples of 64 (48 here);
            # the generic result is the reference, and the disagreement is recorded.
            absmax = qs.absmax
            if dq:
                absmax = F.dequantize_blockwise(qs.absmax, qs.state2)
                absmax += qs.offset
            deq = _dequantize_4bit_compute(packed.reshape(-1), absmax.float(), F.get_4bit_type("nf4", device="cpu"), 64, qs.shape, qs.dtype)
            assert deq.dtype == w.dtype and list(deq.shape) == shape
            native_differs = not torch.equal(native, deq)
            tag = "double" if dq else "plain"
            cases[f"{name}.{tag}.dequant"] = deq.contiguous()
            if dq:
                am = F.dequantize_blockwise(qs.absmax, qs.state2)
                am += qs.offset
                cases[f"{name}.double.absmax_f32"] = am.float().contiguous()
            prefix = f"case.{name}.weight"
            out[prefix] = packed
            for k, v in qs.as_dict(packed=True).items():
                out[f"{prefix}.{k}"] = v.contiguous()
        meta.append({"name": name, "shape": shape, "dtype": dtype, "what": what, "bnb_cpu_native_dequant_differs": native_differs})
    cases["dynamic_map"] = F.create_dynamic_map(signed=True)
    cases["nf4_code"] = F.get_4bit_type("nf4", device="cpu").contiguous()
    # QuantState.as_dict(packed=True) shares no storage between entries except quant_map (the
    # cached NF4 table) across cases: clone everything for safetensors.
    for d in (cases, plain, double):
        for k in d:
            d[k] = d[k].clone()
    save_file(cases, OUT / "cases.safetensors", metadata=META)
    save_file(plain, OUT / "plain.safetensors", metadata=META)
    save_file(double, OUT / "double.safetensors", metadata=META)
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


def nearest_codes(x, code):
    """Round-to-nearest onto the sorted `code` (ties to the lower), for x in [-1, 1]: what bnb's
    8-bit CPU quantizer does *not* do; used only to pick adversarial values."""
    left = (torch.bucketize(x, code, right=True) - 1).clamp(0, 254)
    dl = (x - code[left]).abs()
    dr = (x - code[left + 1]).abs()
    return left + (dr < dl).long()


def neighbours(x, k):
    """x and its k float32 neighbours on either side, within [-1, 1], sorted and unique."""
    out = [x]
    up, down = x.clone(), x.clone()
    for _ in range(k):
        up = torch.nextafter(up, torch.tensor(2.0))
        down = torch.nextafter(down, torch.tensor(-2.0))
        out += [up, down]
    v = torch.unique(torch.cat(out))
    return v[(v >= -1) & (v <= 1)]


def in_unit_blocks(v):
    """[256 * ceil(len/255)] float32: blocks of 256 whose first value is 1.0, then 255 of `v`
    (the last block padded with 0.5)."""
    nb = -(-v.numel() // 255)
    body = torch.full((nb * 255,), 0.5)
    body[: v.numel()] = v
    return torch.cat([torch.ones(nb, 1), body.view(nb, 255)], 1).reshape(-1)


def blockwise8():
    code = F.create_dynamic_map(signed=True)

    def bnb8(a):
        q, st = F.quantize_blockwise(a.contiguous(), code=code, blocksize=256)
        return q, st.absmax

    # 1. A grid of 2M values in [-1, 1]: where bnb's code is not the nearest one.
    grid = torch.linspace(-1, 1, 2_000_001)
    a = in_unit_blocks(grid)
    q, _ = bnb8(a)
    q = q.view(-1, 256)[:, 1:].reshape(-1)[: grid.numel()].long()
    off = grid[q != nearest_codes(grid, code)]
    # 2. Where bnb's code changes between the centres -1 + 2i/65535 of adjacent table cells:
    #    values around the cell edges -1 + (2i - 1)/65535.
    centres = (torch.arange(65536, dtype=torch.float32) * 2) / 65535 - 1
    qc, _ = bnb8(in_unit_blocks(centres))
    qc = qc.view(-1, 256)[:, 1:].reshape(-1)[:65536]
    i = torch.nonzero(qc[1:] != qc[:-1]).reshape(-1) + 1
    edges = ((i.double() * 2 - 1) / 65535 - 1).float()
    tiny = torch.tensor([0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1e-9, -1e-9, 1e-7, -1e-7, 1e-6, -1e-6])
    v = torch.unique(torch.cat([neighbours(off, 1), neighbours(edges, 3), tiny]))
    print(f"blockwise8: {off.numel()} of {grid.numel()} grid values off nearest, {edges.numel()} cell edges, {v.numel()} values")
    # 3. Part of them scaled by an absmax that is not a power of two, an all-zero block, and a
    #    partial last block.
    s = 0.0371
    scaled = torch.cat([torch.tensor([s]), v[:1023] * s]).float()
    partial = torch.cat([torch.tensor([-0.25]), v[::37][:99] * 0.25])
    inp = torch.cat([in_unit_blocks(v), scaled, torch.zeros(256), partial]).contiguous()
    q, absmax = bnb8(inp)
    save_file({"input": inp, "codes": q.contiguous(), "absmax": absmax.contiguous()}, OUT / "blockwise8.safetensors", metadata=META)


def transformers_checkpoints():
    """Quantizes qwen3_a with transformers on CPU, saves it, reloads it, and records the saved
    tensors' hashes and the quantization_config."""
    out = {}
    for tag, dq, compute in (("double", True, torch.bfloat16), ("plain", False, torch.float32)):
        cfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=dq,
            bnb_4bit_compute_dtype=compute,
        )
        model = AutoModelForCausalLM.from_pretrained(QWEN3_A, quantization_config=cfg, device_map="cpu")
        tmp = Path(tempfile.mkdtemp())
        try:
            model.save_pretrained(tmp)
            back = AutoModelForCausalLM.from_pretrained(tmp, device_map="cpu")
            # Every 4-bit weight reloads to the same dequantized values (logits are not compared:
            # the reloaded model may run its 16-bit parts in another dtype).
            for (n1, m1), (n2, m2) in zip(model.named_modules(), back.named_modules()):
                assert n1 == n2
                if isinstance(m1, bnb.nn.Linear4bit):
                    assert isinstance(m2, bnb.nn.Linear4bit), f"{tag}: {n2} not reloaded as 4-bit"
                    a = F.dequantize_4bit(m1.weight.data, m1.weight.quant_state)
                    b = F.dequantize_4bit(m2.weight.data, m2.weight.quant_state)
                    assert torch.equal(a, b), f"{tag}: {n2} reloads to other values"
            config = json.loads((tmp / "config.json").read_text())
            tensors = {}
            with safe_open(tmp / "model.safetensors", "pt") as f:
                for k in sorted(f.keys()):
                    t = f.get_tensor(k)
                    tensors[k] = {
                        "dtype": str(t.dtype).removeprefix("torch."),
                        "shape": list(t.shape),
                        "fnv1a64": fnv1a64(raw_bytes(t)),
                    }
                    if k.endswith(".quant_state.bitsandbytes__nf4"):
                        tensors[k]["json"] = bytes(t.tolist()).decode()
        finally:
            shutil.rmtree(tmp)
        out[tag] = {"quantization_config": config["quantization_config"], "tensors": tensors}
    (OUT / "qwen3_a_bnb.json").write_text(json.dumps(out, indent=1) + "\n")


def main():
    if not QWEN3_A.exists():
        sys.exit("run from the repository root (tests/fixtures/models/qwen3_a is missing)")
    OUT.mkdir(parents=True, exist_ok=True)
    quantize_cases()
    blockwise8()
    transformers_checkpoints()
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
