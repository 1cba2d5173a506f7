"""Generate the model-stage reference fixtures for steptune's Rust tests.

steptune re-implements the Qwen3 decoder (and its Qwen2 / Llama relatives) on tch,
with hand-built LoRA, AdamW, gradient clipping and learning-rate schedules. These
fixtures pin what the reference libraries (transformers, peft, torch) compute, so the
Rust side can be checked numerically without Python in CI.

Writes, relative to the repository root, into tests/fixtures/models/:

  <name>/config.json, generation_config.json, model.safetensors
      Tiny random checkpoints saved with `save_pretrained(safe_serialization=True)`,
      fp32, vocab 512. Weights come from transformers' own init (initializer_range
      0.02); then N(0, 0.02) noise is added to every RMSNorm weight (so they are not
      all ones) and to every bias (Qwen2's q/k/v biases init to zeros otherwise), so
      that a forgotten norm weight or bias shows up in the logits.
        qwen3_a  Qwen3, hidden 64, 2 layers, 4 heads / 2 kv (GQA 2:1), head_dim 16,
                 inter 128, tied embeddings, rope_theta 1e6, eps 1e-6
        qwen3_b  Qwen3, hidden 96, 3 layers, 6 heads / 1 kv (GQA 6:1), head_dim 20
                 (heads*head_dim = 120 != hidden), inter 160, untied, rope_theta 1e6
        qwen3_c  Qwen3, hidden 64, 2 layers, 4 heads / 4 kv (MHA), head_dim 32
                 (heads*head_dim = 128 != hidden), inter 128, untied, rope_theta 1e4
        qwen2_d  Qwen2 (q/k/v bias, no q_norm/k_norm), hidden 64, 2 layers, 4 / 2 kv,
                 inter 128, tied, rope_theta 1e6
        llama_e  Llama (no bias, no q/k norm), hidden 64, 2 layers, 4 / 2 kv, inter 128,
                 untied, rope_theta 5e5 (no rope_scaling), rms_norm_eps 1e-5
        llama31_f  Llama 3.1 shape: llama3 RoPE (factor 8, original_max 64), GQA, untied
        llama32_g  Llama 3.2 shape: llama3 RoPE (factor 32), MQA, tied
        gemma3_a   gemma3_text, transformers 5 keys, window 8, layers s,s,f,s, linear RoPE x8
        gemma3_b   gemma3_text, config rewritten to the 4.x keys, MQA, soft-capping set
        gemma3_mm  gemma3 (multimodal), text weights only, language_model.model.* names
      (details beside MODELS below). The Llama 3.x and Gemma 3 ones use longer sequences
      (LENS) and leave out the per-step logits.
      All: max_position_embeddings 256 (Llama 3.x: 512), bos/eos/pad ids unset.

  <name>/expected.safetensors
      input_ids [2,12] int64        right-padded batch (lengths 12 and 9, pad id 0)
      attention_mask [2,12] int64
      logits [2,12,512] f32         model(input_ids, attention_mask).logits; positions
                                    where attention_mask == 0 are set to 0 (compare
                                    only valid positions)
      greedy_prompt [1,7] int64
      greedy_output [1,39] int64    generate(max_new_tokens=32, greedy, use_cache=True,
                                    no eos, pad_token_id=0): prompt + 32 new ids
      greedy_step_logits [32,512] f32   raw logits each decode step produced (step 0 =
                                    last prompt position of the prefill; then KV-cache
                                    decode steps)
      batch_prompt [2,7] int64      left-padded prompts (lengths 7 and 4, pad id 0)
      batch_mask [2,7] int64
      batch_output [2,39] int64     batched greedy generation with attention_mask
      batch_step_logits [2,32,512] f32

  qwen3_a/adapter/adapter_config.json, adapter_model.safetensors
      peft LoRA (r=4, alpha=8, dropout 0, all 7 linear projections) on qwen3_a, with
      every lora_B re-drawn from N(0, 0.02) so the adapter is non-trivial and the
      lora_A gradients are non-zero. adapter_config.json's base_model_name_or_path is
      the repo-relative "tests/fixtures/models/qwen3_a".

  gemma3_a/adapter/, gemma3_a/lora_grads.safetensors
      The same for gemma3_a (16 tokens, longer than its window; 4 layers x 7 projections).

  qwen3_a/lora_grads.safetensors
      lora_input_ids [2,10] int64, lora_attention_mask [2,10] int64 (all ones),
      lora_labels [2,10] int64 (-100 on the first 4 positions of each row),
      lora_loss [1] f32 (transformers causal-LM loss: shift by one, mean over labelled
      tokens), lora_logits [2,10,512] f32 (adapter active), merged_logits [2,10,512] f32
      (after merge_and_unload), and the gradient of every LoRA parameter after one
      loss.backward(), named as in the saved adapter, e.g.
      base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight [4,64].

  lr_schedules.json
      transformers.get_scheduler("linear" | "cosine" | "constant_with_warmup"),
      base lr 1e-3, 7 warm-up steps, 50 training steps: the lr at steps 0..50.

  adamw.json
      torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) on two
      fixed tensors ([3,4] and [4]) with fixed gradients for 3 steps: initial params,
      the grads and the params after each step; and clip_grad_norm_(max_norm=0.5) on each
      step's grads: total norm and clipped grads.

The fixtures are committed so that CI needs no Python. Regenerate them with the pinned
reference environment only (scripts/ref-env.sh), from the repository root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_model_fixtures.py
    $VENV_PY scripts/make_model_fixtures.py --only gemma3_a,gemma3_b   # some of them

The output is deterministic (fixed seeds, fixed configs, one CPU thread,
PYTHONHASHSEED=0 via a re-exec, a single safetensors metadata key): running it twice on the same
machine gives byte-identical files. Other CPUs may differ in the last bits of the floats.
"""

import copy
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pins import check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_model_fixtures.py", ["torch", "transformers", "peft", "safetensors"])

# peft writes target_modules from a Python set: re-exec once with a pinned string hash
# seed so that adapter_config.json lists them in the same order on every run.
PINNED_ENV = {"PYTHONHASHSEED": "0"}
if any(os.environ.get(k) != v for k, v in PINNED_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED_ENV})

import torch  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SiglipVisionConfig,
)

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

OUT = Path("tests/fixtures/models")
VOCAB = 512
PAD = 0
MAX_NEW = 32
# One metadata key only: safetensors writes the metadata map in hash order.
META = {"format": "pt"}

COMMON = dict(
    vocab_size=VOCAB,
    initializer_range=0.02,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    attention_dropout=0.0,
    hidden_act="silu",
)

# name -> (config class, model class, seed, config kwargs)
MODELS = {
    "qwen3_a": (Qwen3Config, Qwen3ForCausalLM, 1001, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=128, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        use_sliding_window=False,
    )),
    "qwen3_b": (Qwen3Config, Qwen3ForCausalLM, 1002, dict(
        hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=1,
        head_dim=20, intermediate_size=160, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        use_sliding_window=False,
    )),
    "qwen3_c": (Qwen3Config, Qwen3ForCausalLM, 1003, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        head_dim=32, intermediate_size=128, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
        use_sliding_window=False,
    )),
    "qwen2_d": (Qwen2Config, Qwen2ForCausalLM, 1004, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        use_sliding_window=False,
    )),
    "llama_e": (LlamaConfig, LlamaForCausalLM, 1005, dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
        rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
    )),
    # Llama 3.1 shape: llama3 RoPE scaling (factor 8), GQA 2:1, untied, head_dim 16 (hidden 32). original_max 64 with
    # head_dim 16 and theta 5e5 puts the 8 frequencies in all three bands: wavelength 6.3 under
    # 64/4 (kept), 32.5 between (smoothed), the rest over 64 (divided by the factor).
    "llama31_f": (LlamaConfig, LlamaForCausalLM, 1006, dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=64, tie_word_embeddings=False, max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
    )),
    # Llama 3.2 shape: tied embeddings, llama3 scaling with factor 32, MQA, head_dim 32
    # (16 frequencies: 2 kept, 1 smoothed, 13 divided).
    "llama32_g": (LlamaConfig, LlamaForCausalLM, 1007, dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=32, intermediate_size=64, tie_word_embeddings=True, max_position_embeddings=512,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
    )),
    # Gemma 3 text (transformers 5 config keys: layer_types, rope_parameters per layer type):
    # 4 layers sliding, sliding, full, sliding (pattern 3); window 8; GQA 2:1; head_dim 12 !=
    # 32/4; query_pre_attn_scalar 16 != head_dim; linear RoPE scaling x8 on the full layer only.
    "gemma3_a": (Gemma3TextConfig, Gemma3ForCausalLM, 1011, dict(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=12, intermediate_size=64, query_pre_attn_scalar=16, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                         "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
        tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh", hidden_act=None,
    )),
    # Gemma 3 text, config.json rewritten to the 4.x keys Hub checkpoints carry
    # (sliding_window_pattern 2, rope_theta, rope_local_base_freq, rope_scaling): MQA 4:1,
    # head_dim 16, query_pre_attn_scalar 24, window 6, hidden 32, 3 layers (sliding, full,
    # sliding); final_logit_softcapping 30 and attn_logit_softcapping 50 set (transformers 5.23's
    # Gemma 3 applies the first and ignores the second).
    "gemma3_b": (Gemma3TextConfig, Gemma3ForCausalLM, 1012, dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
        head_dim=16, intermediate_size=64, query_pre_attn_scalar=24, sliding_window=6,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                         "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}},
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
        tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh", hidden_act=None,
    )),
}

# Gemma 3 multimodal (`gemma3`, Gemma3ForConditionalGeneration): the text model is a 2-layer
# (sliding, full) Gemma 3, hidden 32, window 5, 2 heads / 1 kv, head_dim 16; a 1-layer SigLIP
# vision config.
# Only the text weights are kept in the folder (language_model.model.*): the vision tower and
# projector are left out to keep it small; steptune skips them anyway.
MM_NAME = "gemma3_mm"
MM_SEED = 1013
MM_TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=16, intermediate_size=64, query_pre_attn_scalar=16,
    sliding_window=5, layer_types=["sliding_attention", "full_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                     "full_attention": {"rope_type": "default", "rope_theta": 1e6}},
    max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.02,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)
MM_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 image_size=28, patch_size=14)

# Longer sequences where position matters more: the llama3 frequency bands and the sliding
# windows. (logits length, second row's length, greedy prompt, short batch row)
LENS_DEFAULT = (12, 9, 7, 4)
LENS = {"llama31_f": (32, 24, 16, 9), "llama32_g": (32, 24, 16, 9),
        "gemma3_a": (20, 14, 12, 6), "gemma3_b": (20, 14, 12, 6), MM_NAME: (20, 14, 12, 6)}

# Config keys rewritten after saving: gemma3_b shows the 4.x keys real checkpoints carry.
def gemma_4x_config(cfg):
    cfg = dict(cfg)
    del cfg["layer_types"], cfg["_sliding_window_pattern"]
    rp = cfg.pop("rope_parameters")
    cfg["sliding_window_pattern"] = 2
    cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": rp["full_attention"]["factor"]}
    return cfg

REWRITE_CONFIG = {"gemma3_b": gemma_4x_config}
# Fixtures written without the per-step logits (the Llama 3.x and Gemma 3 ones).
LEAN = {"llama31_f", "llama32_g", "gemma3_a", "gemma3_b", MM_NAME}

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(cfg_cls, model_cls, seed, kwargs):
    torch.manual_seed(seed)
    common = dict(COMMON)
    if cfg_cls is Gemma3TextConfig:
        del common["hidden_act"]  # Gemma 3 names it hidden_activation
    cfg = cfg_cls(**{**common, **{k: v for k, v in kwargs.items() if v is not None}})
    model = model_cls(cfg).to(torch.float32)
    # Perturb RMSNorm weights (init: ones) and biases (init: zeros) so bugs show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn(p.shape) * 0.02)
    model.eval()
    return model


def generate(model, ids, mask):
    out = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=MAX_NEW,
        min_new_tokens=MAX_NEW,
        do_sample=False,
        num_beams=1,
        eos_token_id=None,
        pad_token_id=PAD,
        repetition_penalty=1.0,
        use_cache=True,
        return_dict_in_generate=True,
        output_logits=True,
    )
    seq = out.sequences
    assert seq.shape == (ids.shape[0], ids.shape[1] + MAX_NEW), seq.shape
    step_logits = torch.stack(out.logits, dim=1).float()  # [B, MAX_NEW, V]
    # The argmax of each step's raw logits must be the generated token (no processors).
    assert torch.equal(step_logits.argmax(-1), seq[:, ids.shape[1]:])
    top2 = step_logits.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    return seq, step_logits, margin


def build_multimodal():
    torch.manual_seed(MM_SEED)
    cfg = Gemma3Config(text_config=Gemma3TextConfig(**MM_TEXT),
                       vision_config=SiglipVisionConfig(**MM_VISION), mm_tokens_per_image=4)
    model = Gemma3ForConditionalGeneration(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn(p.shape) * 0.02)
    model.eval()
    return model


def keep_text_weights(d):
    # The multimodal folder keeps only the language model's tensors, names unchanged
    # (save_pretrained in transformers 5.23 writes them as language_model.model.*, reversing its
    # load-time renaming to model.language_model.*).
    path = d / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        kept = {k: f.get_tensor(k) for k in f.keys() if k.startswith("language_model.")}
    assert kept and len(kept) < 200, len(kept)
    save_file(kept, str(path), metadata=META)


def make_model_fixture(name, cfg_cls, model_cls, seed, kwargs):
    model = build_multimodal() if name == MM_NAME else build_model(cfg_cls, model_cls, seed, kwargs)
    d = OUT / name
    model.save_pretrained(d, safe_serialization=True)
    if name in REWRITE_CONFIG:
        cfg_path = d / "config.json"
        cfg_path.write_text(json.dumps(REWRITE_CONFIG[name](json.loads(cfg_path.read_text())),
                                       indent=2, sort_keys=True) + "\n")
    if name == MM_NAME:
        keep_text_weights(d)
    n_len, n_short, n_prompt, n_bshort = LENS.get(name, LENS_DEFAULT)

    g = torch.Generator().manual_seed(seed + 50)
    # Right-padded batch (valid ids never use the pad id).
    input_ids = torch.randint(1, VOCAB, (2, n_len), generator=g)
    attention_mask = torch.ones(2, n_len, dtype=torch.int64)
    input_ids[1, n_short:] = PAD
    attention_mask[1, n_short:] = 0
    with torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits.float()
    logits = torch.where(attention_mask[..., None].bool(), logits, torch.zeros((), dtype=logits.dtype))

    # Single-prompt greedy generation.
    greedy_prompt = torch.randint(1, VOCAB, (1, n_prompt), generator=g)
    greedy_output, greedy_step_logits, m1 = generate(
        model, greedy_prompt, torch.ones_like(greedy_prompt))
    # Same result without the KV cache (sanity).
    nocache = model.generate(greedy_prompt, attention_mask=torch.ones_like(greedy_prompt),
                             max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                             pad_token_id=PAD, use_cache=False)
    assert torch.equal(nocache, greedy_output), f"{name}: cache/no-cache greedy differ"

    # Left-padded batch generation (lengths n_prompt and n_bshort).
    batch_prompt = torch.randint(1, VOCAB, (2, n_prompt), generator=g)
    batch_mask = torch.ones(2, n_prompt, dtype=torch.int64)
    batch_prompt[1, :n_prompt - n_bshort] = PAD
    batch_mask[1, :n_prompt - n_bshort] = 0
    batch_output, batch_step_logits, m2 = generate(model, batch_prompt, batch_mask)
    # Does each row match the same prompt generated alone, unpadded? (Recorded only.)
    rows_match = []
    for r in range(2):
        valid = batch_prompt[r][batch_mask[r].bool()][None]
        alone, _, _ = generate(model, valid, torch.ones_like(valid))
        rows_match.append(torch.equal(alone[0, -MAX_NEW:], batch_output[r, -MAX_NEW:]))

    # Sanity: the saved checkpoint (rewritten config, text-only weights) reloads to the same
    # logits; eager attention agrees.
    cls = Gemma3ForConditionalGeneration if name == MM_NAME else AutoModelForCausalLM
    reloaded = cls.from_pretrained(d, dtype=torch.float32).eval()
    eager = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        l2 = reloaded(input_ids, attention_mask=attention_mask).logits
        l3 = eager(input_ids, attention_mask=attention_mask).logits
    valid = attention_mask.bool()
    assert torch.equal(l2[valid], logits[valid]), f"{name}: reload changes logits"
    eager_diff = (l3[valid] - logits[valid]).abs().max().item()
    assert eager_diff < 1e-5, f"{name}: eager vs sdpa {eager_diff}"

    tensors = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "logits": logits.contiguous(),
        "greedy_prompt": greedy_prompt,
        "greedy_output": greedy_output,
        "greedy_step_logits": greedy_step_logits[0].contiguous(),
        "batch_prompt": batch_prompt,
        "batch_mask": batch_mask,
        "batch_output": batch_output,
        "batch_step_logits": batch_step_logits.contiguous(),
    }
    if name in LEAN:
        # Not read by the Rust tests; left out to keep these folders small.
        del tensors["greedy_step_logits"], tensors["batch_step_logits"]
    save_file(tensors, str(d / "expected.safetensors"), metadata=META)
    info = dict(min_greedy_margin=min(m1, m2), eager_vs_sdpa=eager_diff, batch_rows_match_alone=rows_match)
    return model, tensors, info


def peft_key(name):
    # named_parameters() names carry the adapter name (".lora_A.default.weight");
    # the saved adapter (get_peft_model_state_dict) drops it.
    return name.replace(".default.", ".")


def make_lora_fixture(name="qwen3_a", seed=2001, seq=10):
    base_dir = OUT / name
    # Load by the repo-relative path so adapter_config.json records a portable
    # base_model_name_or_path.
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS,
                     bias="none", task_type="CAUSAL_LM", init_lora_weights=True)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, cfg)
    gb = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=gb) * 0.02)
    adapter_dir = base_dir / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    readme = adapter_dir / "README.md"
    if readme.exists():
        readme.unlink()

    g = torch.Generator().manual_seed(seed + 2)
    ids = torch.randint(1, VOCAB, (2, seq), generator=g)
    mask = torch.ones(2, seq, dtype=torch.int64)
    labels = ids.clone()
    labels[:, :4] = -100

    peft_model.eval()
    with torch.no_grad():
        lora_logits = peft_model(input_ids=ids, attention_mask=mask).logits.float()

    peft_model.train()
    peft_model.zero_grad(set_to_none=True)
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels)
    loss = out.loss
    loss.backward()
    # Cross-check the loss definition: shift by one, mean over labelled tokens.
    ref = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, VOCAB).float(), labels[:, 1:].reshape(-1),
        ignore_index=-100)
    assert torch.allclose(ref, loss, rtol=0, atol=1e-6)

    grads = {}
    n_trainable = 0
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            n_trainable += 1
            assert "lora_" in n, n
            assert p.grad is not None and p.grad.abs().sum() > 0, f"zero grad for {n}"
            grads[peft_key(n)] = p.grad.detach().float().contiguous()
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        saved_keys = set(f.keys())
    assert saved_keys == set(grads), (sorted(saved_keys ^ set(grads)))[:4]

    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, attention_mask=mask).logits.float()
    merge_diff = (merged_logits - lora_logits).abs().max().item()
    assert merge_diff < 1e-5, merge_diff

    tensors = {
        "lora_input_ids": ids,
        "lora_attention_mask": mask,
        "lora_labels": labels,
        "lora_loss": loss.detach().float().reshape(1),
        "lora_logits": lora_logits.contiguous(),
        "merged_logits": merged_logits.contiguous(),
        **grads,
    }
    save_file(tensors, str(base_dir / "lora_grads.safetensors"), metadata=META)

    # A second adapter with dropout, only to show which fields peft writes.
    base2 = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    cfg2 = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=LORA_TARGETS,
                      bias="none", task_type="CAUSAL_LM", init_lora_weights=True)
    with tempfile.TemporaryDirectory() as td:
        get_peft_model(base2, cfg2).save_pretrained(td)
        cfg2_text = (Path(td) / "adapter_config.json").read_text()
    info = dict(loss=loss.item(), n_lora_params=n_trainable, merged_vs_lora=merge_diff)
    return tensors, info, cfg2_text


def make_lr_schedules():
    res = {"base_lr": 1e-3, "num_warmup_steps": 7, "num_training_steps": 50,
           "note": "lr[i] is the learning rate in effect for optimizer step i "
                   "(scheduler.get_last_lr() after i scheduler.step() calls), i = 0..50"}
    for kind in ("linear", "cosine", "constant_with_warmup"):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=1e-3)
        sched = transformers.get_scheduler(kind, opt, num_warmup_steps=7, num_training_steps=50)
        lrs = []
        for _ in range(51):
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        res[kind] = lrs
    (OUT / "lr_schedules.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def make_adamw():
    w0 = torch.tensor([[0.10, -0.20, 0.30, -0.40],
                       [0.50, -0.60, 0.70, -0.80],
                       [0.90, -1.00, 1.10, -1.20]], dtype=torch.float32)
    b0 = torch.tensor([0.05, -0.15, 0.25, -0.35], dtype=torch.float32)
    grads = [
        (torch.tensor([[0.01, 0.02, -0.03, 0.04], [-0.05, 0.06, 0.07, -0.08],
                       [0.09, -0.10, 0.11, 0.12]]),
         torch.tensor([0.20, -0.10, 0.05, 0.00])),
        (torch.tensor([[-0.30, 0.10, 0.00, 0.25], [0.15, -0.35, 0.05, 0.10],
                       [-0.05, 0.20, -0.40, 0.30]]),
         torch.tensor([-0.50, 0.40, 0.30, -0.20])),
        (torch.tensor([[0.002, -0.004, 0.006, -0.008], [1.00, -0.50, 0.25, -0.125],
                       [0.00, 0.00, 0.00, 0.00]]),
         torch.tensor([0.01, 0.01, -0.01, 0.70])),
    ]
    w = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(b0.clone())
    opt = torch.optim.AdamW([w, b], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01, foreach=False)
    steps = []
    for gw, gb in grads:
        w.grad = gw.clone()
        b.grad = gb.clone()
        opt.step()
        steps.append({"grads": [gw.tolist(), gb.tolist()],
                      "params_after": [w.detach().tolist(), b.detach().tolist()]})
    clips = []
    for gw, gb in grads:
        cw = torch.nn.Parameter(torch.zeros(3, 4))
        cb = torch.nn.Parameter(torch.zeros(4))
        cw.grad, cb.grad = gw.clone(), gb.clone()
        total = torch.nn.utils.clip_grad_norm_([cw, cb], max_norm=0.5)
        clips.append({"grads": [gw.tolist(), gb.tolist()], "total_norm": total.item(),
                      "clipped_grads": [cw.grad.tolist(), cb.grad.tolist()]})
    res = {
        "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                      "impl": "torch.optim.AdamW(foreach=False), fp32 params"},
        "param_shapes": [[3, 4], [4]],
        "initial_params": [w0.tolist(), b0.tolist()],
        "steps": steps,
        "clip_grad_norm": {"max_norm": 0.5, "norm_type": 2.0,
                           "note": "clip_grad_norm_ applied to each step's grads on their own",
                           "per_step": clips},
    }
    (OUT / "adamw.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def dir_size(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


# name -> (LoRA seed, sequence length) of the peft fixtures (adapter/, lora_grads.safetensors).
LORA_FIXTURES = {"qwen3_a": (2001, 10), "gemma3_a": (2011, 16)}


def main():
    if not Path("Cargo.toml").exists() or not Path("scripts").is_dir():
        sys.exit("run from the repository root")
    # `--only a,b` regenerates only those checkpoints (and their LoRA fixtures), leaving the
    # others and the lr/AdamW files untouched.
    only = None
    if len(sys.argv) == 3 and sys.argv[1] == "--only":
        only = sys.argv[2].split(",")
        unknown = [n for n in only if n not in MODELS and n != MM_NAME]
        if unknown:
            sys.exit(f"--only: unknown fixtures {unknown}; known: {[*MODELS, MM_NAME]}")
    elif len(sys.argv) != 1:
        sys.exit("usage: make_model_fixtures.py [--only NAME,NAME]")
    torch.set_num_threads(1)
    models = {**MODELS, MM_NAME: (Gemma3Config, Gemma3ForConditionalGeneration, MM_SEED, {})}
    if only is not None:
        models = {n: m for n, m in models.items() if n in only}
    # Only this script's outputs: tests/fixtures/models also holds make_t5_fixtures.py's.
    for name in models:
        if (OUT / name).exists():
            shutil.rmtree(OUT / name)
    OUT.mkdir(parents=True, exist_ok=True)

    summary = {}
    for name, (cfg_cls, model_cls, seed, kwargs) in models.items():
        _, tensors, info = make_model_fixture(name, cfg_cls, model_cls, seed, kwargs)
        summary[name] = (tensors, info)
    loras = {}
    for name, (seed, seq) in LORA_FIXTURES.items():
        if name in models:
            loras[name] = make_lora_fixture(name, seed, seq)
    lr = make_lr_schedules() if only is None else None
    adamw = make_adamw() if only is None else None

    print("== tests/fixtures/models ==")
    for name, (tensors, info) in summary.items():
        print(f"{name}/  {dir_size(OUT / name) / 1024:.1f} KiB  "
              f"min greedy top1-top2 margin {info['min_greedy_margin']:.3g}  "
              f"eager-vs-sdpa {info['eager_vs_sdpa']:.2g}  "
              f"batch rows == unpadded runs {info['batch_rows_match_alone']}")
        for f in sorted((OUT / name).rglob("*")):
            if f.is_file():
                print(f"    {f.relative_to(OUT / name)}  {f.stat().st_size} B")
        print("    expected.safetensors:")
        for k, v in tensors.items():
            print(f"      {k:20s} {str(v.dtype):14s} {list(v.shape)}")
    cfg2_text = None
    for name, (lora_tensors, lora_info, cfg2_text) in loras.items():
        print(f"{name}/lora_grads.safetensors: loss {lora_info['loss']:.6f}, "
              f"{lora_info['n_lora_params']} LoRA params, merged-vs-lora {lora_info['merged_vs_lora']:.2g}")
        for k, v in lora_tensors.items():
            if "layers.0" in k or not k.startswith("base_model"):
                print(f"      {k:70s} {str(v.dtype):14s} {list(v.shape)}")
        print("      ... (same for every layer)")
    if lr is not None:
        print("lr_schedules.json: " + ", ".join(
            f"{k}: lr[7]={lr[k][7]:.3g} lr[50]={lr[k][50]:.3g}"
            for k in ("linear", "cosine", "constant_with_warmup")))
        print(f"adamw.json: {len(adamw['steps'])} steps, clip totals "
              f"{[round(c['total_norm'], 6) for c in adamw['clip_grad_norm']['per_step']]}")
    if cfg2_text is not None:
        print("adapter_config.json written by peft for lora_dropout=0.1 (not kept):")
        print(cfg2_text)
    total = dir_size(OUT)
    print(f"total size of {OUT}: {total / 1024 / 1024:.2f} MiB")
    assert total < 10 * 1024 * 1024


if __name__ == "__main__":
    main()
