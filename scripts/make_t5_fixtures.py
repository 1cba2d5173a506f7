"""Generate the T5 / flan-t5 reference fixtures for steptune's Rust tests (tests/t5_parity.rs).

Full-size random checkpoints (t5-small 60M, flan-t5-small 77M parameters) are far too large to
commit, so their weights are not stored: they are drawn from a seed, in the same order, by
torch here and by tch in the test. Both call libtorch 2.11's CPU generator
(`torch.manual_seed(s); torch.randn(shape)` == `tch::manual_seed(s); Tensor::randn(shape)`), so
the Rust side rebuilds the identical checkpoint; `randn_probe` in each fixture pins that.

Writes, relative to the repository root, into tests/fixtures/models/:

  t5_small_seeded/, flan_t5_small_seeded/
    fixture.json
      config        the real config.json of ../shared/models/{t5-small,flan-t5-small}
                    (all layers and dimensions; vocab 32128)
      seed          torch.manual_seed before the first tensor
      weights       [[name, shape, mean, std], ...] in drawing order; each tensor is
                    fp32 `torch.randn(shape) * std + mean`. Stds are transformers'
                    `_init_weights` for T5 (factor 1), except: layer norms mean 1 std 0.1 (so a
                    forgotten norm weight shows), relative_attention_bias std 1.0 (so a wrong
                    bucket shows), and flan's untied lm_head std 1.0 as in _init_weights.
      eos_ids       the eos ids used for the batch generation (1 and a token row 1 emits
                    mid-sequence, so that stopping rows early is exercised)
      stats         eager-vs-sdpa difference, minimal greedy top-1/top-2 margin (recorded only)
    expected.safetensors
      randn_probe [64] f32       torch.manual_seed(seed + 1); torch.randn(64)
      input_ids [2,40] int64     encoder inputs, row 1 right-padded to 29 real tokens (ends in eos 1)
      attention_mask [2,40] int64
      labels [2,24] int64        row 1: -100 after 17 labels
      enc_sum, enc_sumsq [2,40] f32   encoder last_hidden_state summed / squared-summed over d
      enc_head [2,40,16] f32     its first 16 dims
      vocab_index [K] int64      vocabulary columns whose logits are stored
      logits_at [2,24,K] f32     teacher-forced logits (labels=) at those columns
      logits_lse, logits_max [2,24] f32, logits_argmax [2,24] int64   over the full vocabulary
      loss [1] f32               transformers' loss with labels= (mean over labelled tokens)
      grad_norms [P] f32         L2 norm of the loss gradient of every weight, in
                                 fixture.json's `weights` order (the head's too when untied)
      grad.<name>[<rows>]        gradient slices: shared.weight rows `grad_rows`, the first
                                 4 rows of one wo and one EncDecAttention.q, both relative
                                 biases in full, one layer norm in full
      grad_rows [8] int64
      gen_ids [3,L] int64, gen_mask [3,L] int64    right-padded prompts of 3 lengths
      gen_out [3,24] int64       generate(do_sample=False, num_beams=1, max_new_tokens=24,
                                 eos_token_id=eos_ids) new tokens, -1 after a row's eos
      single_ids [1,L1], single_out [1,24]        one unpadded prompt, eos 1 only

  t5_tiny_orig/, t5_tiny_v11/
    config.json, generation_config.json (written by transformers), model.safetensors (bf16)
      Tiny checkpoints for fast end-to-end tests: vocab 32128 so the real tokenizer of
      ../shared/models/flan-t5-small works with them, d_model 8, d_kv 4, 2 heads, d_ff 16,
      2 encoder and 2 decoder blocks (transformers 5.23 generate() fails on unequal counts:
      its cache is sized by num_layers). orig: relu, head tied to shared, scaled; v11: gated-gelu,
      own lm_head, not scaled. Weights drawn as above and stored in bf16 to stay small
      (the vocabulary dominates: 32128 x 8 x 2 bytes = 0.5 MB per matrix).
    expected.safetensors
      prompt_ids [3,L], prompt_mask [3,L]   the flan-t5 tokenizer on `prompts` (fixture.json)
      labels [3,T]               the tokenizer on `targets`, -100 padded
      logits_at/lse/argmax, loss as above (weights upcast to fp32)
      gen_out [3,16]             greedy, eos 1, -1 after eos
    fixture.json   prompts, targets

The fixtures are committed so that CI needs no Python. Regenerate them with the pinned
reference environment only (scripts/ref-env.sh), from the repository root:

    VENV_PY=$(scripts/ref-env.sh | tail -n1)
    $VENV_PY scripts/make_t5_fixtures.py

Deterministic (fixed seeds, one CPU thread): running it twice gives byte-identical files.
"""

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

from pins import check_pins  # noqa: E402  (scripts/ is on sys.path)

check_pins("make_t5_fixtures.py", ["torch", "transformers", "tokenizers", "safetensors"])

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration  # noqa: E402

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

OUT = Path("tests/fixtures/models")
SHARED = Path("../shared/models")
META = {"format": "pt"}
MAX_NEW = 24


def weight_specs(cfg, norm_std=0.1, bias_std=1.0):
    """(name, shape, mean, std) in drawing order; mirrors src/model/t5.rs `weight_specs`
    (transformers' _init_weights stds), with the fixture's norm and bias perturbations."""
    f = cfg.get("initializer_factor", 1.0)
    d, dk, nh = cfg["d_model"], cfg["d_kv"], cfg["num_heads"]
    ff = cfg["d_ff"]
    inner = nh * dk
    gated = cfg.get("feed_forward_proj", "relu").startswith("gated-")
    n_enc = cfg["num_layers"]
    n_dec = cfg.get("num_decoder_layers") or n_enc
    nb = cfg.get("relative_attention_num_buckets", 32)
    out = [("shared.weight", [cfg["vocab_size"], d], 0.0, f * 1.0)]

    def attn(name, first):
        out.append((f"{name}.q.weight", [inner, d], 0.0, f * (d * dk) ** -0.5))
        out.append((f"{name}.k.weight", [inner, d], 0.0, f * d ** -0.5))
        out.append((f"{name}.v.weight", [inner, d], 0.0, f * d ** -0.5))
        out.append((f"{name}.o.weight", [d, inner], 0.0, f * inner ** -0.5))
        if first:
            out.append((f"{name}.relative_attention_bias.weight", [nb, nh], 0.0, bias_std))

    for stack, n, dec in (("encoder", n_enc, False), ("decoder", n_dec, True)):
        for i in range(n):
            p = f"{stack}.block.{i}.layer"
            attn(f"{p}.0.SelfAttention", i == 0)
            out.append((f"{p}.0.layer_norm.weight", [d], 1.0, norm_std))
            fl = 1
            if dec:
                attn(f"{p}.1.EncDecAttention", False)
                out.append((f"{p}.1.layer_norm.weight", [d], 1.0, norm_std))
                fl = 2
            q = f"{p}.{fl}.DenseReluDense"
            if gated:
                out.append((f"{q}.wi_0.weight", [ff, d], 0.0, f * d ** -0.5))
                out.append((f"{q}.wi_1.weight", [ff, d], 0.0, f * d ** -0.5))
            else:
                out.append((f"{q}.wi.weight", [ff, d], 0.0, f * d ** -0.5))
            out.append((f"{q}.wo.weight", [d, ff], 0.0, f * ff ** -0.5))
            out.append((f"{p}.{fl}.layer_norm.weight", [d], 1.0, norm_std))
        out.append((f"{stack}.final_layer_norm.weight", [d], 1.0, norm_std))
    if T5Config.from_dict(cfg).scale_decoder_outputs is False:
        out.append(("lm_head.weight", [cfg["vocab_size"], d], 0.0, f * 1.0))
    return out


def draw(specs, seed):
    torch.manual_seed(seed)
    return {name: torch.randn(shape) * std + mean for name, shape, mean, std in specs}


def load(cfg, state, dtype=None, attn="sdpa"):
    """Writes config + weights to a temporary folder and loads them as transformers would a
    checkpoint (so a distinct lm_head.weight stays untied)."""
    with tempfile.TemporaryDirectory() as td:
        (Path(td) / "config.json").write_text(json.dumps(cfg))
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(td) / "model.safetensors"), metadata=META)
        model = T5ForConditionalGeneration.from_pretrained(td, dtype=torch.float32, attn_implementation=attn)
    model.eval()
    sd = model.state_dict()
    for k, v in state.items():
        assert torch.equal(sd[k], v.float()), f"{k} did not load as written"
    untied = "lm_head.weight" in state
    assert (model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()) == untied
    return model


def generate(model, ids, mask, eos, max_new):
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False, num_beams=1,
                         eos_token_id=eos, pad_token_id=0, decoder_start_token_id=0, use_cache=True,
                         return_dict_in_generate=True, output_logits=True)
    seq = out.sequences[:, 1:]  # drop the start token
    rows = torch.full((ids.shape[0], max_new), -1, dtype=torch.int64)
    margin = math.inf
    for r in range(ids.shape[0]):
        for j in range(seq.shape[1]):
            tok = seq[r, j].item()
            rows[r, j] = tok
            top2 = out.logits[j][r].float().topk(2).values
            margin = min(margin, (top2[0] - top2[1]).item())
            assert out.logits[j][r].argmax().item() == tok
            if tok in eos:
                break
    return rows, margin


def logits_summary(logits, vocab_index):
    return {
        "logits_at": logits[..., vocab_index].contiguous(),
        "logits_lse": logits.logsumexp(-1).contiguous(),
        "logits_max": logits.max(-1).values.contiguous(),
        "logits_argmax": logits.argmax(-1).contiguous(),
    }


def seeded_fixture(name, src, seed):
    cfg = json.loads((SHARED / src / "config.json").read_text())
    specs = weight_specs(cfg)
    state = draw(specs, seed)
    model = load(cfg, state)
    eager = load(cfg, state, attn="eager")
    V = cfg["vocab_size"]

    g = torch.Generator().manual_seed(seed + 2)
    input_ids = torch.randint(2, 32100, (2, 40), generator=g)
    mask = torch.ones(2, 40, dtype=torch.int64)
    input_ids[0, -1] = 1
    input_ids[1, 28] = 1
    input_ids[1, 29:] = 0
    mask[1, 29:] = 0
    labels = torch.randint(2, 32100, (2, 24), generator=g)
    labels[0, -1] = 1
    labels[1, 16] = 1
    labels[1, 17:] = -100

    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    logits = out.logits.detach().float()
    with torch.no_grad():
        enc = model.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        ref = torch.nn.functional.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)
        eager_logits = eager(input_ids=input_ids, attention_mask=mask, labels=labels).logits
    assert torch.allclose(ref, out.loss.detach(), rtol=0, atol=1e-6)
    # (no-grad and grad paths may pick different attention kernels: close, not equal)
    assert torch.allclose(enc, out.encoder_last_hidden_state.detach(), rtol=0, atol=1e-5)
    enc = out.encoder_last_hidden_state.detach()
    eager_diff = (eager_logits - logits).abs().max().item()

    params = dict(model.named_parameters())
    grads = {n: params[n].grad for n, _, _, _ in specs}
    assert all(g is not None for g in grads.values())
    grad_rows = torch.cat([input_ids[0, :4], labels[0, :4]])
    n_dec = cfg.get("num_decoder_layers") or cfg["num_layers"]
    wo = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
    cq = f"decoder.block.{n_dec - 1}.layer.1.EncDecAttention.q.weight"
    ln = "decoder.block.2.layer.0.layer_norm.weight"
    slices = {
        "grad.shared.weight": grads["shared.weight"][grad_rows],
        f"grad.{wo}": grads[wo][:4],
        f"grad.{cq}": grads[cq][:4],
        "grad.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
            grads["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        "grad.decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
            grads["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        f"grad.{ln}": grads[ln],
    }
    if "lm_head.weight" in grads:
        slices["grad.lm_head.weight"] = grads["lm_head.weight"][grad_rows]

    vocab_index = torch.unique(torch.cat([torch.arange(0, V, 125), labels[labels >= 0]]))

    # Generation: a right-padded batch of 3 (lengths 40, 23, 9) and one unpadded prompt.
    gen_ids = torch.randint(2, 32100, (3, 40), generator=g)
    gen_mask = torch.ones(3, 40, dtype=torch.int64)
    for r, n in enumerate((40, 23, 9)):
        gen_ids[r, n - 1] = 1
        gen_ids[r, n:] = 0
        gen_mask[r, n:] = 0
    with torch.no_grad():
        first, _ = generate(model, gen_ids, gen_mask, [1], MAX_NEW)
        stop = first[1, 6].item()  # row 1 now stops after 7 tokens
        eos_ids = [1, stop]
        gen_out, m1 = generate(model, gen_ids, gen_mask, eos_ids, MAX_NEW)
        single_ids = gen_ids[2:3, :9].clone()
        single_out, m2 = generate(model, single_ids, torch.ones_like(single_ids), [1], MAX_NEW)
        # Sanity: the batch rows equal the same prompts generated alone (recorded).
        alone_equal = []
        for r, n in enumerate((40, 23, 9)):
            alone, _ = generate(model, gen_ids[r:r + 1, :n], torch.ones(1, n, dtype=torch.int64), eos_ids, MAX_NEW)
            alone_equal.append(torch.equal(alone[0], gen_out[r]))

    torch.manual_seed(seed + 1)
    probe = torch.randn(64)
    tensors = {
        "randn_probe": probe,
        "input_ids": input_ids, "attention_mask": mask, "labels": labels,
        "enc_sum": enc.sum(-1), "enc_sumsq": enc.pow(2).sum(-1), "enc_head": enc[..., :16].contiguous(),
        "vocab_index": vocab_index,
        **logits_summary(logits, vocab_index),
        "loss": out.loss.detach().reshape(1),
        "grad_norms": torch.stack([grads[n].norm() for n, _, _, _ in specs]),
        "grad_rows": grad_rows,
        **{k: v.detach().contiguous() for k, v in slices.items()},
        "gen_ids": gen_ids, "gen_mask": gen_mask, "gen_out": gen_out,
        "single_ids": single_ids, "single_out": single_out,
    }
    d = OUT / name
    d.mkdir(parents=True)
    stats = {"eager_vs_sdpa_logits": eager_diff, "min_greedy_margin": min(m1, m2),
             "batch_rows_equal_alone": alone_equal, "loss": out.loss.item()}
    fixture = {"source": f"../shared/models/{src}/config.json", "config": cfg, "seed": seed,
               "rule": "torch.manual_seed(seed); for each weight in order: torch.randn(shape) * std + mean (fp32)",
               "weights": [[n, s, m, sd] for n, s, m, sd in specs], "eos_ids": eos_ids, "stats": stats}
    (d / "fixture.json").write_text(json.dumps(fixture, indent=1) + "\n")
    save_file(tensors, str(d / "expected.safetensors"), metadata=META)
    return stats


TINY = dict(vocab_size=32128, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_layers=2, num_decoder_layers=2,
            relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
            layer_norm_epsilon=1e-6, initializer_factor=1.0, decoder_start_token_id=0, pad_token_id=0,
            eos_token_id=1, is_encoder_decoder=True)
PROMPTS = [
    "How do I reset my password?",
    "summarize: I ordered a blue jacket last week, it arrived in red, and I would like to exchange it for the right colour.",
    "Cancel order",
]
TARGETS = [
    "1. Open settings. 2. Choose reset.",
    "1. Contact support.",
    "1. Go to orders. 2. Select the order. 3. Click cancel.",
]


def tiny_fixture(name, ffp, seed):
    d = OUT / name
    d.mkdir(parents=True)
    T5Config(**TINY, feed_forward_proj=ffp, tie_word_embeddings=(ffp == "relu")).save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    state = {k: v.to(torch.bfloat16) for k, v in draw(weight_specs(cfg, bias_std=(TINY["d_model"] ** -0.5)), seed).items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"), metadata=META)
    model = T5ForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v.float()), k
    model.generation_config.save_pretrained(d)

    tok = AutoTokenizer.from_pretrained(str(SHARED / "flan-t5-small"))
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    lab = tok(TARGETS, padding=True, return_tensors="pt")
    labels = lab.input_ids.masked_fill(lab.attention_mask == 0, -100)
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels)
        gen_out, margin = generate(model, enc.input_ids, enc.attention_mask, [1], 16)
    V = cfg["vocab_size"]
    vocab_index = torch.unique(torch.cat([torch.arange(0, V, 125), labels[labels >= 0]]))
    tensors = {"prompt_ids": enc.input_ids, "prompt_mask": enc.attention_mask, "labels": labels,
               "vocab_index": vocab_index, **logits_summary(out.logits.float(), vocab_index),
               "loss": out.loss.reshape(1), "gen_out": gen_out}
    save_file(tensors, str(d / "expected.safetensors"), metadata=META)
    (d / "fixture.json").write_text(json.dumps({"prompts": PROMPTS, "targets": TARGETS, "seed": seed,
                                                "tokenizer": "../shared/models/flan-t5-small",
                                                "min_greedy_margin": margin}, indent=1) + "\n")
    return {"loss": out.loss.item(), "min_greedy_margin": margin}


def dir_size(p):
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def main():
    if not Path("Cargo.toml").exists() or not SHARED.is_dir():
        sys.exit("run from the repository root, with ../shared beside it")
    torch.set_num_threads(1)
    names = ["t5_small_seeded", "flan_t5_small_seeded", "t5_tiny_orig", "t5_tiny_v11"]
    for n in names:
        if (OUT / n).exists():
            shutil.rmtree(OUT / n)
    stats = {
        "t5_small_seeded": seeded_fixture("t5_small_seeded", "t5-small", 5101),
        "flan_t5_small_seeded": seeded_fixture("flan_t5_small_seeded", "flan-t5-small", 5102),
        "t5_tiny_orig": tiny_fixture("t5_tiny_orig", "relu", 5103),
        "t5_tiny_v11": tiny_fixture("t5_tiny_v11", "gated-gelu", 5104),
    }
    total = 0
    for n in names:
        size = dir_size(OUT / n)
        total += size
        print(f"{n}/ {size / 1024:.1f} KiB  {stats[n]}")
    print(f"total {total / 1024 / 1024:.2f} MiB")
    assert total < 2 * 1024 * 1024


if __name__ == "__main__":
    main()
