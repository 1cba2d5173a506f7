"""GGUF fixtures: what llama.cpp's own converter writes, and what llama.cpp generates from it.

Runs llama.cpp's `convert_hf_to_gguf.py` (llama-cpp-python 0.3.36's vendored source, MIT) on tiny
checkpoints and records, per checkpoint and outtype, the file's sha256, every metadata key in order
(scalars and strings as values; arrays as type, length, first items and the sha256 of their GGUF
bytes), and every tensor's name, ggml type, dims and sha256; then llama.cpp's tokenization of a chat
prompt and its greedy tokens on the F32 and F16 files (llama-cpp-python built from that source).
tests/gguf_export.rs requires `steptune export` to write the same files byte for byte, and
steptune's own greedy tokens on the checkpoint to equal llama.cpp's.

The checkpoints are not committed: vocab 151936 (the real Qwen3 tokenizer, which the converter
must recognise) makes each embedding 5-10 MB. Their weights come from a counter-based generator
that tests/gguf_export.rs implements too (`bf16_bits` below); the fixture records each source
tensor's sha256, and the test checks its checkpoint against those hashes before exporting, so both
sides provably read the same bytes. Tokenizer files: ../shared/models/qwen3-8b.

    VENV_PY=$(scripts/gguf-env.sh | tail -n1)
    $VENV_PY scripts/make_gguf_fixtures.py          # writes tests/fixtures/gguf/expected.json
                                                    # and src/export/bpe_pre_hashes.tsv
    $VENV_PY scripts/make_gguf_fixtures.py --checkpoints DIR   # only the checkpoints (live check)

Checkpoints (all bf16, 151936 vocab, rms eps 1e-6 unless said):
  qwen3_tied    Qwen3, hidden 32, 2 layers, 4 heads / 2 kv, head_dim 8, inter 64, tied
  qwen3_untied  Qwen3, hidden 64, 3 layers, 4 heads / 1 kv, head_dim 16, inter 96, untied;
                generation_config.json with sampling settings (general.sampling.* keys)
  qwen2         Qwen2 (q/k/v biases), hidden 32, 2 layers, 4 / 2 kv, inter 64, tied
  llama         Llama 3.1 style: rope_scaling llama3 (rope_freqs.weight), rope_theta 5e5,
                hidden 32, 2 layers, 4 / 2 kv (q/k permuted), inter 64, untied, eps 1e-5;
                a README.md model card (license, base_model, tags, language)
  qwen3_lora    qwen3_tied with a LoRA adapter (r 4, alpha 8, all seven projections) merged as
                peft does, W + (B @ A) * alpha / r in float32, saved as float32: what
                `steptune export --adapter` must write without the merged folder existing.
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOK = ROOT.parent / "shared" / "models" / "qwen3-8b"
OUTTYPES = ["f32", "f16", "bf16", "q8_0"]
PROMPT = "<|im_start|>user\nHow do I reset my password in the xx app?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
GREEDY_TOKENS = 16
MASK64 = (1 << 64) - 1


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def bf16_bits(name: str, n: int, seed: int, norm: bool) -> np.ndarray:
    """n bfloat16 bit patterns for tensor `name`: splitmix64 of (fnv1a64(name) ^ seed) + i·golden,
    i = 1..n. Weights: random sign, exponent 2^-6..2^-3, 7 random mantissa bits (|w| in
    [0.0156, 0.25)). Norm weights: positive, 2^-1..2^0 (in [0.5, 2))."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name) ^ seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    lo, count = (-1, 2) if norm else (-6, 4)
    sign = np.zeros(n, np.uint16) if norm else (z >> np.uint64(63)).astype(np.uint16)
    exp = (np.uint64(127 + lo) + (z >> np.uint64(56)) % np.uint64(count)).astype(np.uint16)
    man = ((z >> np.uint64(40)) & np.uint64(0x7F)).astype(np.uint16)
    return (sign << np.uint16(15)) | (exp << np.uint16(7)) | man


def decoder_tensors(c: dict, qkv_bias: bool, qk_norm: bool) -> list:
    h, nh, nkv, ff, v = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"]
    d = c.get("head_dim", h // nh)
    out = [["model.embed_tokens.weight", [v, h]], ["model.norm.weight", [h]]]
    if not c["tie_word_embeddings"]:
        out.append(["lm_head.weight", [v, h]])
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [[p + "input_layernorm.weight", [h]], [p + "post_attention_layernorm.weight", [h]],
                [p + "self_attn.q_proj.weight", [nh * d, h]], [p + "self_attn.k_proj.weight", [nkv * d, h]],
                [p + "self_attn.v_proj.weight", [nkv * d, h]], [p + "self_attn.o_proj.weight", [h, nh * d]],
                [p + "mlp.gate_proj.weight", [ff, h]], [p + "mlp.up_proj.weight", [ff, h]], [p + "mlp.down_proj.weight", [h, ff]]]
        if qkv_bias:
            out += [[p + "self_attn.q_proj.bias", [nh * d]], [p + "self_attn.k_proj.bias", [nkv * d]], [p + "self_attn.v_proj.bias", [nkv * d]]]
        if qk_norm:
            out += [[p + "self_attn.q_norm.weight", [d]], [p + "self_attn.k_norm.weight", [d]]]
    return out


BASE = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            num_hidden_layers=2, vocab_size=151936, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_theta=1000000.0, hidden_act="silu", bos_token_id=151643, eos_token_id=151645,
            torch_dtype="bfloat16", attention_dropout=0.0, initializer_range=0.02, use_cache=True)
QWEN3_TIED = dict(BASE, architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False, tie_word_embeddings=True)
QWEN3_UNTIED = dict(QWEN3_TIED, hidden_size=64, intermediate_size=96, num_key_value_heads=1, head_dim=16,
                    num_hidden_layers=3, tie_word_embeddings=False)
QWEN2 = dict(BASE, architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=True)
QWEN2.pop("head_dim")
LLAMA = dict(BASE, architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False, mlp_bias=False,
             tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=131072,
             rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                               original_max_position_embeddings=8192))
LLAMA_README = """---
license: llama3.1
base_model: meta-llama/Llama-3.1-8B-Instruct
language:
- en
- id
tags:
- steptune
- procedures
---
# A tiny Llama 3.1 shape for steptune's GGUF tests
"""
QWEN3_GENERATION = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                    "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}
LORA = {"r": 4, "lora_alpha": 8, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}

CHECKPOINTS = [
    dict(name="qwen3_tied", seed=1, config=QWEN3_TIED, tensors=decoder_tensors(QWEN3_TIED, False, True), files={}),
    dict(name="qwen3_untied", seed=2, config=QWEN3_UNTIED, tensors=decoder_tensors(QWEN3_UNTIED, False, True),
         files={"generation_config.json": json.dumps(QWEN3_GENERATION, indent=2)}),
    dict(name="qwen2", seed=3, config=QWEN2, tensors=decoder_tensors(QWEN2, True, False), files={}),
    dict(name="llama", seed=4, config=LLAMA, tensors=decoder_tensors(LLAMA, False, False), files={"README.md": LLAMA_README}),
]
# The adapter on qwen3_tied: lora_A [r, in] and lora_B [out, r] from bf16_bits (seed 5), stored
# float32 (the values are bf16-exact), under peft's names.
ADAPTER = dict(base="qwen3_tied", seed=5, **LORA)


def tensor_bits(ck: dict) -> dict:
    return {name: bf16_bits(name, int(np.prod(shape)), ck["seed"], name.endswith("norm.weight")).reshape(shape)
            for name, shape in ck["tensors"]}


def write_safetensors(path: Path, tensors: dict, dtype: str) -> None:
    """A safetensors file by hand (numpy has no bfloat16): names sorted, data in that order."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def write_checkpoint(ck: dict, out: Path, tensors: dict, dtype: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", tensors, dtype)
    (out / "config.json").write_text(json.dumps(ck["config"], indent=2))
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(SHARED_TOK / f, out / f)
    for name, text in ck["files"].items():
        (out / name).write_text(text)


def adapter_tensors(ad: dict, base: dict) -> dict:
    """peft-named lora_A / lora_B as float32 arrays."""
    cfg = next(c for c in CHECKPOINTS if c["name"] == ad["base"])
    shapes = dict((n, s) for n, s in cfg["tensors"])
    out = {}
    for name, shape in cfg["tensors"]:
        mod = name[: -len(".weight")]
        if not name.endswith(".weight") or mod.split(".")[-1] not in ad["targets"]:
            continue
        o, i = shapes[name]
        for part, sh in (("lora_A", [ad["r"], i]), ("lora_B", [o, ad["r"]])):
            key = f"base_model.model.{mod}.{part}.weight"
            bits = bf16_bits(key, sh[0] * sh[1], ad["seed"], False).astype(np.uint32) << np.uint32(16)
            out[key] = bits.view(np.float32).reshape(sh)
    return out


def merged_lora(ad: dict, base_bits: dict) -> dict:
    import torch
    lora = adapter_tensors(ad, base_bits)
    scaling = ad["lora_alpha"] / ad["r"]
    out = {}
    for name, bits in base_bits.items():
        w = torch.from_numpy(bits.astype(np.int16).copy()).view(torch.bfloat16).to(torch.float32)
        a = lora.get(f"base_model.model.{name[:-len('.weight')]}.lora_A.weight")
        if a is not None:
            b = torch.from_numpy(lora[f"base_model.model.{name[:-len('.weight')]}.lora_B.weight"])
            w = w + (b @ torch.from_numpy(a)) * scaling
        out[name] = w.numpy()
    return out


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def describe(path: Path) -> dict:
    """The file's sha256, its metadata in order and its tensors, read with llama.cpp's gguf-py."""
    from gguf import GGUFReader, GGUFValueType
    r = GGUFReader(path)
    kvs = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        t = GGUFValueType(f.types[0]).name
        if f.types[0] == GGUFValueType.ARRAY:
            item = GGUFValueType(f.types[1]).name
            raw = b"".join(bytes(f.parts[i]) for i in range(5, len(f.parts)))  # past key len, key, type, item type, count
            first = [f.contents(i) for i in range(min(3, len(f.data)))]
            kvs.append({"key": key, "type": t, "item": item, "len": len(f.data), "first": first, "sha256": sha(raw)})
        else:
            v = f.contents()
            kvs.append({"key": key, "type": t, "value": v})
    tensors = [{"name": ti.name, "type": ti.tensor_type.name, "dims": [int(x) for x in ti.shape],
                "sha256": sha(bytes(ti.data.tobytes()))} for ti in r.tensors]
    return {"file_sha256": sha(path.read_bytes()), "bytes": path.stat().st_size, "kv": kvs, "tensors": tensors}


def greedy(path: Path) -> dict:
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=2, seed=0, logits_all=True, verbose=False)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(prompt)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    top = np.argsort(-first, kind="stable")[:5]
    out = []
    for _ in range(GREEDY_TOKENS):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return {"prompt_ids": [int(t) for t in prompt], "greedy": out,
            "first_top5": [[int(i), float(first[i])] for i in top]}


def bpe_pre_table(llama_cpp_dir: Path) -> str:
    """get_vocab_base_pre's (hash, name) pairs in source order; the last match wins there."""
    import re
    src = (llama_cpp_dir / "conversion" / "base.py").read_text()
    body = src[src.index("def get_vocab_base_pre"): src.index("Marker: End get_vocab_base_pre")]
    chktxt = re.search(r"chktxt = '(.*)'\n", body).group(1)
    pairs = re.findall(r'if chkhsh == "([0-9a-f]{64})":\n(?:\s*#.*\n)*\s*res = "([^"]+)"', body)
    assert len(pairs) == body.count("if chkhsh =="), "unparsed entries in get_vocab_base_pre"
    text = eval("'" + chktxt + "'")  # the literal as Python reads it
    lines = ["# From llama.cpp's conversion/base.py get_vocab_base_pre (llama-cpp-python 0.3.36, MIT):",
             "# sha256 of str(tokenizer.encode(chktxt)) -> tokenizer.ggml.pre; the last matching line wins.",
             "# Regenerate with scripts/make_gguf_fixtures.py. chktxt as JSON on the next line.",
             "chktxt\t" + json.dumps(text, ensure_ascii=False)]
    lines += [f"{h}\t{n}" for h, n in pairs]
    return "\n".join(lines) + "\n"


def write_checkpoints(out: Path) -> None:
    """Only the tiny checkpoints (and the adapter, for steptune to merge) into `out`: for
    scripts/gguf-live-check.sh."""
    for ck in CHECKPOINTS:
        bits = tensor_bits(ck)
        write_checkpoint(ck, out / ck["name"], bits, "BF16")
        if ck["name"] == ADAPTER["base"]:
            lora = adapter_tensors(ADAPTER, bits)
            ad = out / "qwen3_lora"
            ad.mkdir(parents=True, exist_ok=True)
            write_safetensors(ad / "adapter_model.safetensors", lora, "F32")
            (ad / "adapter_config.json").write_text(json.dumps({
                "peft_type": "LORA", "r": ADAPTER["r"], "lora_alpha": ADAPTER["lora_alpha"], "lora_dropout": 0.0,
                "target_modules": ADAPTER["targets"], "task_type": "CAUSAL_LM", "base_model_name_or_path": str(out / ck["name"])}, indent=2))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--checkpoints":
        write_checkpoints(Path(sys.argv[2]))
        return
    llama_cpp_dir = Path(os.environ.get("LLAMA_CPP_DIR", Path.home() / ".cache/steptune/llama-cpp-python-0.3.36/vendor/llama.cpp"))
    convert = llama_cpp_dir / "convert_hf_to_gguf.py"
    sys.path.insert(0, str(llama_cpp_dir / "gguf-py"))
    import transformers
    assert transformers.__version__ == "4.57.6", "run with the python that scripts/gguf-env.sh prints"
    (ROOT / "src/export/bpe_pre_hashes.tsv").write_text(bpe_pre_table(llama_cpp_dir))

    record = {"generator": "scripts/make_gguf_fixtures.py", "llama_cpp_python": "0.3.36", "transformers": transformers.__version__,
              "prompt": PROMPT, "greedy_tokens": GREEDY_TOKENS, "checkpoints": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = []
        for ck in CHECKPOINTS:
            bits = tensor_bits(ck)
            write_checkpoint(ck, work / ck["name"], bits, "BF16")
            src = {n: sha(np.ascontiguousarray(b).tobytes()) for n, b in bits.items()}
            jobs.append((ck, work / ck["name"], {"source_sha256": src}))
            if ck["name"] == ADAPTER["base"]:
                merged = merged_lora(ADAPTER, bits)
                lora = adapter_tensors(ADAPTER, bits)
                mck = dict(ck, name="qwen3_lora", config=dict(ck["config"], torch_dtype="float32"))
                write_checkpoint(mck, work / "qwen3_lora", merged, "F32")
                jobs.append((mck, work / "qwen3_lora", {"base": ck["name"], "adapter": {k: v for k, v in ADAPTER.items() if k != "base"},
                                                        "adapter_sha256": {n: sha(a.tobytes()) for n, a in lora.items()}}))
        for ck, folder, extra in jobs:
            entry = {"name": ck["name"], "seed": ck["seed"], "config": ck["config"], "tensors": ck["tensors"], "files": ck["files"], **extra, "outtypes": {}}
            for ot in OUTTYPES:
                out = work / f"{ck['name']}.{ot}.gguf"
                subprocess.run([sys.executable, str(convert), str(folder), "--outtype", ot, "--outfile", str(out)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                d = describe(out)
                if ot in ("f32", "f16"):
                    d["llama_cpp"] = greedy(out)
                entry["outtypes"][ot] = d
                print(f"{ck['name']} {ot}: {d['bytes']} bytes, {len(d['kv'])} keys, {len(d['tensors'])} tensors"
                      + (f", greedy {d['llama_cpp']['greedy'][:6]}..." if "llama_cpp" in d else ""))
            record["checkpoints"].append(entry)
    out = ROOT / "tests/fixtures/gguf/expected.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out.relative_to(ROOT)} and src/export/bpe_pre_hashes.tsv")


if __name__ == "__main__":
    main()
