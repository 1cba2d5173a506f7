"""Generate the QLoRA reference fixtures: transformers + bitsandbytes + peft on CPU.

steptune's QLoRA path quantizes a checkpoint's projections to NF4 (src/nn/nf4.rs), runs them
through a C++ autograd function (csrc/nf4.cpp) and puts its own LoRA branches beside them. These
fixtures pin what the reference stack computes for the same checkpoint and batch.

Writes, relative to the repository root:

  tests/fixtures/models/qwen3_a_bnb4bit/config.json, generation_config.json, model.safetensors
      tests/fixtures/models/qwen3_a loaded by transformers with
      BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute float32) on CPU and written
      with save_pretrained: a real `*-bnb-4bit` checkpoint (projections packed 4-bit with their
      quant state; embeddings and norms float32).

  tests/fixtures/models/qwen3_a_bnb4bit/qlora_grads.safetensors
      On that 4-bit model with the peft adapter of qwen3_a/adapter (r 4, alpha 8, all seven
      projections) and the batch of qwen3_a/lora_grads.safetensors (lora_input_ids,
      lora_labels):
      qlora_logits [2,10,512] f32   logits, adapter active (train mode, dropout 0: see below)
      qlora_loss [1] f32            the causal-LM loss (mean over labelled tokens)
      and the gradient of every LoRA tensor after one loss.backward(), named as in the adapter
      file (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight, ...).
      dequantized.<name> f32        every projection as bitsandbytes dequantizes it.

Regenerate with the pinned reference environment (scripts/ref-env.sh) from the repository root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_qlora_fixtures.py

Deterministic: no random draws (the weights, adapter and batch are committed fixtures); one
CPU thread.
"""

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import check_pins  # noqa: E402

check_pins("make_qlora_fixtures.py", ["torch", "transformers", "peft", "bitsandbytes", "safetensors"])

import torch  # noqa: E402
import bitsandbytes.functional as bnbf  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests/fixtures/models/qwen3_a"
OUT = ROOT / "tests/fixtures/models/qwen3_a_bnb4bit"
META = {"format": "pt"}


def peft_key(name):
    # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight → adapter-file name
    return name.replace(".default", "")


def main():
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(SRC), quantization_config=q, dtype=torch.float32,
                                                 device_map="cpu")
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(str(OUT), safe_serialization=True)
    for extra in ("README.md",):
        if (OUT / extra).exists():
            (OUT / extra).unlink()

    dequantized = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if w is not None and getattr(w, "quant_state", None) is not None:
            dequantized[f"dequantized.{name}.weight"] = bnbf.dequantize_4bit(w.data, w.quant_state).float().contiguous()
    assert len(dequantized) == 14, len(dequantized)

    peft_model = PeftModel.from_pretrained(model, str(SRC / "adapter"), is_trainable=True)
    batch = load_file(str(SRC / "lora_grads.safetensors"))
    ids, mask, labels = batch["lora_input_ids"], batch["lora_attention_mask"], batch["lora_labels"]

    # Train mode throughout (dropout is 0 in this adapter and in Qwen3's attention, so the logits
    # equal eval mode's). In eval mode, on a CPU with AVX512-BF16, bitsandbytes 0.50.2's Linear4bit
    # repacks its weight in place into an inference-only layout on the first no-grad forward, and
    # keeps it after .train(): the input gradient through the base layer is then silently lost
    # (gemv_4bit has no autograd kernel) and forward runs through a bf16 kernel.
    peft_model.train()
    with torch.no_grad():
        logits = peft_model(input_ids=ids, attention_mask=mask).logits.float()
    peft_model.zero_grad(set_to_none=True)
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()

    grads = {}
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            assert "lora_" in n, n
            assert p.grad is not None and p.grad.abs().sum() > 0, f"zero grad for {n}"
            grads[peft_key(n)] = p.grad.detach().float().contiguous()
    assert len(grads) == 28, len(grads)

    # Cross-check bitsandbytes' backward (it warns that gemv_4bit has no autograd kernel): the
    # same adapter on a float32 model holding the dequantized weights gives the same gradients.
    dense = AutoModelForCausalLM.from_pretrained(str(SRC), dtype=torch.float32)
    with torch.no_grad():
        for key, w in dequantized.items():
            name = key[len("dequantized."):-len(".weight")]
            dense.get_submodule(name).weight.copy_(w)
    dense_peft = PeftModel.from_pretrained(dense, str(SRC / "adapter"), is_trainable=True)
    dense_peft.train()
    dense_out = dense_peft(input_ids=ids, attention_mask=mask, labels=labels)
    dense_out.loss.backward()
    worst = 0.0
    for n, p in dense_peft.named_parameters():
        if p.requires_grad:
            want = grads[peft_key(n)]
            worst = max(worst, ((p.grad - want).abs().max() / want.abs().max()).item())
    assert worst < 1e-5 and abs(dense_out.loss.item() - out.loss.item()) < 1e-6, (worst, dense_out.loss.item())

    tensors = {"qlora_logits": logits.contiguous(), "qlora_loss": out.loss.detach().float().reshape(1), **grads,
               **dequantized}
    save_file(tensors, str(OUT / "qlora_grads.safetensors"), metadata=META)
    # The 16-bit LoRA loss on the same batch, for scale: how much 4 bits move the loss.
    print(json.dumps({"qlora_loss": out.loss.item(), "lora_loss_16bit": batch["lora_loss"].item(),
                      "bnb_vs_dequantized_dense_worst_rel_grad": worst,
                      "files": sorted(os.listdir(OUT))}, indent=1))


if __name__ == "__main__":
    main()
