"""Generate the T5 LoRA reference fixtures: peft on the tiny flan-t5-layout checkpoint.

steptune puts its hand-built LoRA branches on T5's projections through the same adapter code as
for Qwen3 (src/adapt/peft.rs over model::Model). These fixtures pin what peft computes, so an
adapter written by peft for a T5 loads into steptune with the same logits, loss and gradients.

Writes, relative to the repository root, into tests/fixtures/models/t5_tiny_v11/:

  adapter/adapter_config.json, adapter_model.safetensors
      peft LoRA (r 4, alpha 8, dropout 0, task SEQ_2_SEQ_LM) on q, v, wo of every block of
      tests/fixtures/models/t5_tiny_v11 (encoder self-attention, decoder self- and cross-attention,
      feed-forward output), every lora_B redrawn from N(0, 0.02) so the adapter is not a no-op.
      base_model_name_or_path is the repo-relative "tests/fixtures/models/t5_tiny_v11".

  lora_grads.safetensors
      input_ids [2,9] int64, attention_mask [2,9] (second row right-padded), labels [2,6] int64
      (-100 where a target is shorter), logits_head [2,6,512] f32 (the first 512 vocabulary logits,
      teacher-forced, adapter active) and logsumexp [2,6] f32 over all 32,128,
      loss [1] f32 (transformers' seq2seq loss with labels=, dropout off), and the gradient of every LoRA
      tensor after loss.backward(), named as in the adapter file.

Regenerate with the pinned reference environment (scripts/ref-env.sh) from the repository root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_t5_lora_fixtures.py

Deterministic: fixed seeds, one CPU thread, PYTHONHASHSEED=0 (peft writes target_modules from a
set).
"""

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import check_pins  # noqa: E402

check_pins("make_t5_lora_fixtures.py", ["torch", "transformers", "peft", "safetensors"])

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import T5ForConditionalGeneration  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "tests/fixtures/models/t5_tiny_v11"
REL = "tests/fixtures/models/t5_tiny_v11"


def main():
    # The checkpoint's dropout_rate is 0.1; 0 here, and steptune's side runs without dropout, so
    # both compute the same deterministic loss and gradients.
    model = T5ForConditionalGeneration.from_pretrained(str(BASE), dtype=torch.float32, dropout_rate=0.0)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q", "v", "wo"], bias="none",
                     task_type="SEQ_2_SEQ_LM", init_lora_weights=True)
    torch.manual_seed(4242)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.02)
    adapter = BASE / "adapter"
    if adapter.exists():
        shutil.rmtree(adapter)
    peft_model.save_pretrained(str(adapter))
    # A repo-relative base path, as the Qwen3 adapter fixture has.
    cfg_path = adapter / "adapter_config.json"
    text = cfg_path.read_text().replace(str(BASE), REL)
    cfg_path.write_text(text)
    if (adapter / "README.md").exists():
        (adapter / "README.md").unlink()

    g = torch.Generator().manual_seed(77)
    ids = torch.randint(2, 32100, (2, 9), generator=g)
    ids[:, -1] = 1  # eos
    mask = torch.ones(2, 9, dtype=torch.int64)
    ids[1, 6:] = 0
    ids[1, 5] = 1
    mask[1, 6:] = 0
    labels = torch.randint(2, 32100, (2, 6), generator=g)
    labels[:, -1] = 1
    labels[1, 4:] = -100
    labels[1, 3] = 1

    peft_model.train()
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {}
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            assert "lora_" in n, n
            assert p.grad is not None and p.grad.abs().sum() > 0, f"zero grad for {n}"
            grads[n.replace(".default", "")] = p.grad.detach().float().contiguous()
    tensors = {"input_ids": ids, "attention_mask": mask, "labels": labels,
               "logits_head": out.logits.detach().float()[..., :512].contiguous(),
               "logsumexp": out.logits.detach().float().logsumexp(-1).contiguous(), "loss": out.loss.detach().float().reshape(1),
               **grads}
    save_file(tensors, str(BASE / "lora_grads.safetensors"), metadata={"format": "pt"})
    print(f"{len(grads)} LoRA tensors, loss {out.loss.item():.6f}")


if __name__ == "__main__":
    main()
