#!/usr/bin/env python3
"""The transformers side of scripts/bench_qlora.sh and scripts/bench_t5.sh (steptune
`bench-train` is the other side), plus the helpers both benchmarks share.

    python scripts/bench_hf.py make-qwen3 --recipe scripts/bench_qlora.yaml --out DIR [--tokenizer TOKDIR]
    python scripts/bench_hf.py make-t5 --config CONFIG.json --tokenizer TOKDIR --out DIR
    python scripts/bench_hf.py make-data --out FILE --rows N --length T --vocab V [--seed 0]
    python scripts/bench_hf.py train --model-dir DIR --prepared FILE --method qlora|lora|full ...
    python scripts/bench_hf.py train --random-recipe RECIPE.yaml --device cuda --prepared FILE ...
    python scripts/bench_hf.py table --kind qlora|t5 FILE.json ...

make-qwen3 / make-t5: a random checkpoint (torch.manual_seed(seed), transformers' own init),
saved as safetensors (Qwen3 in bf16, T5 in fp32) with the tokenizer files beside it, so that both
sides load the very same weights (and QLoRA quantizes the very same 16-bit tensors).

make-data: N rows of T random token ids with every label set (`input_ids` == `labels`): a
prepared jsonl both sides read.

train: one training run on a prepared jsonl, printed as one JSON line (logs on stderr).
  * rows in file order; step i takes rows (i*B + j) mod n for j < B. `--mode ordered` pads each
    batch to its own longest row (dynamic padding); `padded` pads every batch to the file's
    longest. Decoder-only: ids right-padded with 0, labels -100 there; T5 (seq2seq): sources and
    targets padded apart (labels -100), HF builds decoder inputs by shifting the labels.
  * qlora: from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit, nf4,
    double quant, compute dtype), dtype=--dtype); lora: from_pretrained(dtype=--dtype); then
    peft's get_peft_model(LoraConfig(r, alpha, dropout, targets)). full: every parameter trains.
    The model stays in train() mode from load to the end (bitsandbytes' CPU Linear4bit repacks
    its weight into an inference layout on the first no-grad forward in eval mode).
  * --random-recipe (scripts/gpu-check.sh): no checkpoint; the decoder is built from the recipe's
    model.config with transformers' own init directly on --device in --dtype (from_config under
    `with torch.device(...)`), and for qlora each targeted projection is then replaced by a
    bitsandbytes Linear4bit (nf4, double quant, --compute-dtype) quantized from that weight, one
    at a time. The load peak is therefore the 16-bit model, unlike from_pretrained's; the
    training peaks below are taken after loading and are comparable.
  * --device cuda: batches on the GPU, every timer stops after torch.cuda.synchronize(), and the
    JSON adds torch.cuda.max_memory_allocated / max_memory_reserved over loading and over the
    timed steps (peaks reset after the optimizer exists), as steptune's bench-train reports them.
  * --gradient-checkpointing: model.gradient_checkpointing_enable(use_reentrant False).
  * torch.optim.AdamW(trainable, lr, weight_decay 0), constant lr; warmup steps untimed, then
    --steps timed ones, each timed around forward + backward + step + zero_grad.
  * memory: VmRSS before loading (after the imports), VmRSS after loading, VmHWM after loading
    (the peak so far, which includes the imports), the process's VmHWM at the end.
  * weights: for every bnb Linear4bit, the packed 4-bit bytes + its absmax (uint8 with double
    quant) + the nested fp32 absmax + the 4-byte offset, the way steptune's
    Nf4Tensor::storage_bytes counts; for dense projections numel * element size.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time


def log(*a):
    print("bench_hf.py:", *a, file=sys.stderr, flush=True)


def status_mib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class AnonPeak:
    """The peak of RssAnon (the process's own memory, not file pages a memory map touched),
    sampled every 10 ms by a thread; take_mib() returns the peak since the last call."""

    def __init__(self):
        import threading
        self.peak = status_mib("RssAnon:")
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, status_mib("RssAnon:"))
            time.sleep(0.01)

    def take_mib(self):
        now = status_mib("RssAnon:")
        peak, self.peak = max(self.peak, now), now
        return peak


def copy_tokenizer(src, out):
    if not src:
        return
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json",
                 "vocab.json", "merges.txt"):
        p = os.path.join(src, name)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(out, name))


def make_qwen3(args):
    import torch
    import yaml
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = dict(yaml.safe_load(open(args.recipe))["model"]["config"])
    c.setdefault("architectures", ["Qwen3ForCausalLM"])
    c["use_cache"] = False
    config = Qwen3Config(**c)
    torch.manual_seed(args.seed)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    copy_tokenizer(args.tokenizer, args.out)
    n = sum(p.numel() for p in model.parameters())
    log(f"wrote {args.out}: Qwen3 {config.num_hidden_layers} layers, hidden {config.hidden_size}, {n:,} parameters, bf16")


def make_t5(args):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    config = T5Config.from_json_file(args.config)
    torch.manual_seed(args.seed)
    model = T5ForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(args.out, safe_serialization=True)
    copy_tokenizer(args.tokenizer, args.out)
    n = sum(p.numel() for p in model.parameters())
    log(f"wrote {args.out}: T5 {config.num_layers}+{config.num_decoder_layers} layers, d_model {config.d_model}, {n:,} parameters, fp32")


def make_data(args):
    import random
    rng = random.Random(args.seed)
    with open(args.out, "w") as f:
        for _ in range(args.rows):
            ids = [rng.randrange(args.low, args.vocab) for _ in range(args.length)]
            f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
    log(f"wrote {args.out}: {args.rows} rows of {args.length} random ids")


def weight_bytes(model, targets):
    """(4-bit bytes, 4-bit params, projection bytes, projection params) over the targeted projections."""
    import torch
    bnb = sys.modules.get("bitsandbytes")  # imported only for qlora: no import here, it costs memory
    lin4 = bnb.nn.Linear4bit if bnb is not None else ()
    qb = qn = pb = pn = 0
    for name, m in model.named_modules():
        if name.rsplit(".", 1)[-1] not in targets or not isinstance(m, torch.nn.Linear):
            continue
        if lin4 and isinstance(m, lin4):
            w = m.weight
            qs = w.quant_state
            b = w.numel() * w.element_size() + qs.absmax.numel() * qs.absmax.element_size()
            if getattr(qs, "nested", False) and qs.state2 is not None:
                b += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + 4
            n = 1
            for s in qs.shape:
                n *= s
            qb += b
            qn += n
            pb += b
            pn += n
        elif isinstance(m, torch.nn.Linear):
            pb += m.weight.numel() * m.weight.element_size()
            pn += m.weight.numel()
    return qb, qn, pb, pn


def random_decoder(args, dtype, compute, device):
    """The recipe's model.config built on `device` in `dtype` with transformers' init; for qlora
    every targeted projection of the decoder layers becomes a bitsandbytes Linear4bit (nf4,
    double quant, `compute`) quantized from that weight, layer by layer."""
    import torch
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM
    c = dict(yaml.safe_load(open(args.random_recipe))["model"]["config"])
    config = AutoConfig.for_model(c.pop("model_type"), **c)
    config.use_cache = False
    torch.manual_seed(0)
    # The default dtype, not a from_config keyword (`dtype` in transformers 5, `torch_dtype` in 4):
    # the weights are made in `dtype` on `device`, never as a float32 copy.
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(old)
    model.to(dtype)
    if args.method == "qlora":
        import bitsandbytes as bnb
        targets = {t for t in args.targets.split(",") if t}
        for layer in model.model.layers:
            for parent in (layer.self_attn, layer.mlp):
                for name, m in list(parent.named_children()):
                    if name not in targets or not isinstance(m, torch.nn.Linear):
                        continue
                    q = bnb.nn.Linear4bit(m.in_features, m.out_features, bias=m.bias is not None,
                                          compute_dtype=compute, compress_statistics=True, quant_type="nf4",
                                          device="meta")
                    q.weight = bnb.nn.Params4bit(m.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4").to(device)
                    if m.bias is not None:
                        q.bias = torch.nn.Parameter(m.bias.data, requires_grad=False)
                    setattr(parent, name, q)
                    del m
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return model


def train(args):
    import torch
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    import transformers
    from transformers import AutoConfig
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
    dtype, compute = dtypes[args.dtype], dtypes[args.compute_dtype or args.dtype]
    if args.method != "full":
        import peft  # noqa: F401  (imported before the first measurement, as the others)
    if args.method == "qlora":
        import bitsandbytes  # noqa: F401

    # ---- data ---------------------------------------------------------------------------
    rows = []
    with open(args.prepared) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((r["input_ids"], r["labels"]))
    if not rows:
        sys.exit(f"{args.prepared}: no rows")
    if (args.model_dir is None) == (args.random_recipe is None):
        sys.exit("bench_hf.py train: give exactly one of --model-dir and --random-recipe")
    if args.random_recipe:
        import yaml
        seq2seq = yaml.safe_load(open(args.random_recipe))["model"]["config"]["model_type"] == "t5"
        if seq2seq:
            sys.exit("bench_hf.py train: --random-recipe builds decoders only")
    else:
        config = AutoConfig.from_pretrained(args.model_dir)
        seq2seq = config.model_type == "t5"
    B = args.batch_size
    total = args.warmup_steps + args.steps
    longest = max(len(x) for x, _ in rows)
    longest_y = max(len(y) for _, y in rows)

    def pad(seqs, t, value):
        out = torch.full((len(seqs), t), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return out, mask

    batches = []
    for step in range(total):
        br = [rows[(step * B + j) % len(rows)] for j in range(B)]
        xs, ys = [x for x, _ in br], [y for _, y in br]
        tx = longest if args.mode == "padded" else max(map(len, xs))
        ids, mask = pad(xs, tx, 0)
        if seq2seq:
            ty = longest_y if args.mode == "padded" else max(map(len, ys))
            labels, lmask = pad(ys, ty, -100)
            real = int(mask.sum() + lmask.sum())
            padded = ids.numel() + labels.numel()
        else:
            if any(len(x) != len(y) for x, y in br):
                sys.exit(f"{args.prepared}: a row's input_ids and labels differ in length")
            labels, _ = pad(ys, tx, -100)
            real, padded = int(mask.sum()), ids.numel()
        batches.append((ids.to(device), mask.to(device), labels.to(device), real, padded))

    # ---- model --------------------------------------------------------------------------
    rss_before_load = status_mib("VmRSS:")
    anon = AnonPeak()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    kw = dict(dtype=dtype)
    if args.method == "qlora":
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kw["device_map"] = args.device
    elif cuda:
        kw["device_map"] = args.device
    if seq2seq:
        from transformers import T5ForConditionalGeneration as Cls
    else:
        from transformers import AutoModelForCausalLM as Cls
    if args.random_recipe:
        model = random_decoder(args, dtype, compute, device)
    else:
        model = Cls.from_pretrained(args.model_dir, **kw)
    model.train()  # before any forward: see the docstring
    sync()
    load_seconds = time.perf_counter() - t0
    cuda_load = (torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)) if cuda else None
    rss_after_load, peak_rss_load, peak_anon_load = status_mib("VmRSS:"), status_mib("VmHWM:"), anon.take_mib()
    targets = [t for t in args.targets.split(",") if t]
    qb, qn, pb, pn = weight_bytes(model, targets)
    other = [(n, p) for n, p in model.named_parameters()
             if not any(n.endswith(f"{t}.weight") for t in targets)]
    # Tied weights appear once in named_parameters().
    other_bytes = sum(p.numel() * p.element_size() for _, p in other)
    other_params = sum(p.numel() for _, p in other)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if args.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules=targets, bias="none", task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"))
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    if not model.training or any(not m.training for m in model.modules()):
        sys.exit("bench_hf.py: the model left train mode")
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rss_before_train = status_mib("VmRSS:")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    log(f"{args.method}, {'seq2seq' if seq2seq else 'causal'}, dtype {args.dtype}, compute {args.compute_dtype or args.dtype}, "
        f"checkpointing {args.gradient_checkpointing}, {n_trainable:,} trainable, {len(rows)} rows, "
        f"attn {getattr(model.config, '_attn_implementation', '?')}, {torch.get_num_threads()} threads, "
        f"loaded in {load_seconds:.1f}s, RSS {rss_after_load:.0f} MiB (peak {peak_rss_load:.0f})")

    # ---- train --------------------------------------------------------------------------
    seconds = 0.0
    tokens = padded_tokens = 0
    step_seconds = []
    loss_value = float("nan")
    for step, (ids, mask, labels, real, padded) in enumerate(batches):
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        sync()
        dt = time.perf_counter() - t0
        loss_value = out.loss.item()
        if step >= args.warmup_steps:
            seconds += dt
            step_seconds.append(round(dt, 4))
            tokens += real
            padded_tokens += padded
        log(f"step {step + 1}/{total}: loss {loss_value:.4f}, {dt:.3f}s" + ("" if step >= args.warmup_steps else " (warmup)"))

    cuda_memory = None
    if cuda:
        ta, tr = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
        cuda_memory = {"peak_allocated_load_bytes": cuda_load[0], "peak_reserved_load_bytes": cuda_load[1],
                       "peak_allocated_train_bytes": ta, "peak_reserved_train_bytes": tr,
                       "peak_allocated_bytes": max(cuda_load[0], ta), "peak_reserved_bytes": max(cuda_load[1], tr)}
    print(json.dumps({
        "device": str(device),
        "batch_size": B,
        "cuda_memory": cuda_memory,
        "impl": "transformers+peft" + ("+bitsandbytes" if args.method == "qlora" else "") if args.method != "full" else "transformers",
        "mode": args.mode,
        "method": args.method,
        "gradient_checkpointing": args.gradient_checkpointing,
        "precision": args.dtype,
        "compute_dtype": args.compute_dtype or args.dtype,
        "steps_timed": args.steps,
        "seconds": round(seconds, 4),
        "seconds_per_step": seconds / args.steps,
        "step_seconds": step_seconds,
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "padded_tokens": padded_tokens,
        "padded_tokens_per_second": round(padded_tokens / seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "peak_anon_load_mib": round(peak_anon_load, 1),
        "peak_anon_train_mib": round(anon.take_mib(), 1),
        "rss_before_load_mib": round(rss_before_load, 1),
        "rss_after_load_mib": round(rss_after_load, 1),
        "peak_rss_load_mib": round(peak_rss_load, 1),
        "rss_before_train_mib": round(rss_before_train, 1),
        "load_seconds": round(load_seconds, 2),
        "quantized_bytes": qb,
        "quantized_params": qn,
        "quantized_bytes_per_param": qb / qn if qn else None,
        "projection_bytes": pb,
        "projection_params": pn,
        "projection_bytes_per_param": pb / pn if pn else None,
        "other_weight_bytes": other_bytes,
        "other_weight_params": other_params,
        "params_trainable": n_trainable,
        "final_loss": round(loss_value, 6),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": sys.modules["peft"].__version__ if "peft" in sys.modules else None,
                     "bitsandbytes": sys.modules["bitsandbytes"].__version__ if "bitsandbytes" in sys.modules else None},
    }), flush=True)


# ---- tables -------------------------------------------------------------------------------
def fnum(v, f):
    return f % v if isinstance(v, (int, float)) and v == v else "n/a"


def ratio(a, b):
    return "%.2fx" % (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b else "n/a"


def table(args):
    rs = {}
    for p in args.files:
        label = os.path.basename(p)[: -len(".json")]
        try:
            rs[label] = json.load(open(p))
        except (OSError, ValueError):
            rs[label] = None
    if args.kind == "qlora":
        print(args.title)
        fmt = "%-22s %8s %8s %9s %9s %9s %9s %9s %9s %8s"
        print(fmt % ("config", "s/step", "tokens/s", "peak RSS", "RSS", "load", "anon", "anon", "weight", "loss"))
        print(fmt % ("", "", "", "VmHWM", "loaded", "VmHWM", "load pk", "train pk", "B/param", "(final)"))
        print(fmt % ("", "", "", "MiB", "MiB", "MiB", "MiB", "MiB", "(proj)", ""))
        for label, r in rs.items():
            if r is None:
                print(fmt % (label, "FAILED", "", "", "", "", "", "", "", ""))
                continue
            print(fmt % (label, fnum(r.get("seconds_per_step"), "%.2f"), fnum(r.get("tokens_per_second"), "%.1f"),
                         fnum(r.get("peak_rss_mib"), "%.0f"), fnum(r.get("rss_after_load_mib"), "%.0f"),
                         fnum(r.get("peak_rss_load_mib"), "%.0f"), fnum(r.get("peak_anon_load_mib"), "%.0f"),
                         fnum(r.get("peak_anon_train_mib"), "%.0f"), fnum(r.get("projection_bytes_per_param"), "%.4f"),
                         fnum(r.get("final_loss"), "%.4f")))
        print()
        print("weights (MiB): 4-bit projections (bytes/param) | other tensors (embeddings, norms) | RSS before load")
        for label, r in rs.items():
            if r:
                print("  %-32s %8s (%s) | %8s | %6s" % (
                    label, fnum(r.get("quantized_bytes", 0) / 2**20 if r.get("quantized_bytes") else r.get("projection_bytes", 0) / 2**20, "%.1f"),
                    fnum(r.get("quantized_bytes_per_param") or r.get("projection_bytes_per_param"), "%.4f"),
                    fnum((r.get("other_weight_bytes") or 0) / 2**20, "%.1f"), fnum(r.get("rss_before_load_mib"), "%.0f")))
        print()
        pairs = []
        for ck in ("", "+ckpt"):
            pairs.append((f"steptune QLoRA{ck} vs HF QLoRA{ck}", f"steptune-qlora{ck}", f"hf-qlora{ck}"))
        for ck in ("", "+ckpt"):
            pairs.append((f"steptune QLoRA{ck} vs steptune LoRA bf16{ck}", f"steptune-qlora{ck}", f"steptune-lora{ck}"))
        for ck in ("", "+ckpt"):
            pairs.append((f"HF QLoRA{ck} vs HF LoRA bf16{ck}", f"hf-qlora{ck}", f"hf-lora{ck}"))
        for ck in ("", "+ckpt"):
            pairs.append((f"steptune LoRA bf16{ck} vs HF LoRA bf16{ck}", f"steptune-lora{ck}", f"hf-lora{ck}"))
        fmt = "%-46s %10s %10s %12s %13s"
        print(fmt % ("ratios (a vs b)", "time a/b", "tok/s a/b", "peak RSS a/b", "anon train a/b"))
        for title, a, b in pairs:
            ra, rb = rs.get(a), rs.get(b)
            if not ra or not rb:
                continue
            print(fmt % (title, ratio(ra["seconds_per_step"], rb["seconds_per_step"]),
                         ratio(ra["tokens_per_second"], rb["tokens_per_second"]),
                         ratio(ra["peak_rss_mib"], rb["peak_rss_mib"]),
                         ratio(ra.get("peak_anon_train_mib"), rb.get("peak_anon_train_mib"))))
        for label, r in rs.items():
            if r:
                print("  %-32s step seconds %s" % (label, r.get("step_seconds")))
    else:
        print(args.title)
        names = list(rs)
        fmt = "%-26s" + " %16s" * len(names) + " %9s"
        print(fmt % (("",) + tuple(names) + ("ratio",)))
        a, b = (rs.get(names[0]), rs.get(names[1])) if len(names) == 2 else (None, None)
        for key, title, f, inv in (("tokens_per_second", "tokens/s (real tokens)", "%.1f", False),
                                   ("padded_tokens_per_second", "padded tokens/s", "%.1f", None),
                                   ("seconds_per_step", "s/step", "%.3f", True),
                                   ("peak_rss_mib", "peak RSS (MiB)", "%.0f", True),
                                   ("rss_after_load_mib", "RSS after load (MiB)", "%.0f", None),
                                   ("final_loss", "final loss", "%.4f", None)):
            cells = tuple(fnum(r.get(key), f) if r else "FAILED" for r in rs.values())
            rt = ""
            if a and b and inv is not None:
                rt = ratio(b.get(key), a.get(key)) if inv else ratio(a.get(key), b.get(key))
            print(fmt % ((title,) + cells + (rt,)))
        print(f"ratio: {names[0]} vs {names[-1]}; above 1 means {names[0]} is better (faster, or less memory).")
        for label, r in rs.items():
            if r:
                print("  %-24s step seconds %s; %s trainable params, %s tokens" % (label, r.get("step_seconds"), r.get("params_trainable"), r.get("tokens")))
        if a and b:
            for k in ("params_trainable", "tokens", "padded_tokens", "steps_timed"):
                if a.get(k) != b.get(k):
                    print(f"WARNING: {k} differs: {names[0]} {a.get(k)} vs {names[1]} {b.get(k)} (not the same work)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-qwen3")
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-t5")
    p.add_argument("--config", required=True)
    p.add_argument("--tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-data")
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--low", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("train")
    p.add_argument("--model-dir")
    p.add_argument("--random-recipe", help="build the recipe's model.config with random weights instead of loading --model-dir")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--prepared", required=True)
    p.add_argument("--method", choices=["qlora", "lora", "full"], required=True)
    p.add_argument("--dtype", choices=["bf16", "fp32", "fp16"], default="bf16")
    p.add_argument("--compute-dtype", choices=["bf16", "fp32", "fp16"])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--mode", choices=["padded", "ordered"], default="ordered")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-4)
    p = sub.add_parser("table")
    p.add_argument("--kind", choices=["qlora", "t5"], required=True)
    p.add_argument("--title", default="")
    p.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "train" and (args.steps < 1 or args.warmup_steps < 0):
        ap.error("--steps must be at least 1 and --warmup-steps at least 0")
    {"make-qwen3": make_qwen3, "make-t5": make_t5, "make-data": make_data, "train": train, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
