#!/usr/bin/env python3
"""Training throughput and peak memory of transformers + peft on CPU: the Python side of
scripts/bench_train.sh (steptune `bench-train` is the other side).

    python scripts/bench_train.py --prepared RUN/prepared/train.jsonl --config config.json \
        [--method lora|full] [--mode padded|realistic] [--steps 20] [--warmup-steps 3] ...

What it does, so that the Rust side can do exactly the same work:
  * rows: `prepared/train.jsonl` in file order (first --max-rows when given); each row has
    `input_ids` and `labels` (same length, labels -100 where masked); other keys are ignored.
  * batches: step i (0-based, warmup steps included) takes rows (i*B + j) mod n_rows for
    j in 0..B (file order, cycling). Every batch is collated before training starts (collation is not timed).
      padded     every batch padded to the longest row of the WHOLE file (after --max-rows):
                 the fixed-length loop.
      realistic  every batch padded to its own longest row (DataCollatorForSeq2Seq-style
                 dynamic padding).
    Right padding with id 0, attention_mask 0 there, labels -100 there.
  * model: Qwen3ForCausalLM(config) with random init after torch.manual_seed(seed), fp32,
    train mode; with --method lora wrapped by peft's get_peft_model(LoraConfig(r, alpha,
    dropout, targets, bias="none", task_type="CAUSAL_LM")). The forward is
    model(input_ids=, attention_mask=, labels=, use_cache=False): logits over every position,
    HF's shifted mean cross-entropy.
  * optimizer: torch.optim.AdamW(trainable params, lr, weight_decay 0.0), constant lr, no
    grad clipping, no accumulation.
  * --warmup-steps untimed optimizer steps, then --steps timed ones (warmup + steps in all,
    as `steptune bench-train` does; steps_timed = steps). Each timed step is
    time.perf_counter() around forward + backward + optimizer.step() + optimizer.zero_grad().
  * tokens = sum of attention_mask over the timed steps (real tokens); padded_tokens =
    B * T summed over the timed steps; tokens_per_second = tokens / seconds.
  * peak_rss_mib: resource.getrusage(RUSAGE_SELF).ru_maxrss at the end (whole process,
    imports included).
Prints one JSON line on stdout (logs go to stderr).
"""
import argparse
import json
import os
import resource
import sys
import time


def log(*a):
    print("bench_train.py:", *a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", required=True, help="steptune prepared/train.jsonl")
    ap.add_argument("--config", required=True, help="HF config.json of a Qwen3 shape")
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps (after the warmup)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed optimizer steps before the timed ones")
    ap.add_argument("--mode", choices=["padded", "realistic"], default="padded")
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup_steps < 0:
        ap.error("--steps must be at least 1 and --warmup-steps at least 0")
    total_steps = args.warmup_steps + args.steps

    import torch
    torch.set_num_threads(args.threads)
    from transformers import Qwen3Config, Qwen3ForCausalLM

    # ---- data ---------------------------------------------------------------------------
    rows = []
    with open(args.prepared) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            ids, labels = r["input_ids"], r["labels"]
            if len(ids) != len(labels):
                sys.exit(f"{args.prepared}: row {len(rows) + 1}: input_ids and labels differ in length")
            rows.append((ids, labels))
            if args.max_rows is not None and len(rows) >= args.max_rows:
                break
    if not rows:
        sys.exit(f"{args.prepared}: no rows")
    longest = max(len(ids) for ids, _ in rows)
    B = args.batch_size

    def collate(batch_rows, t):
        ids = torch.zeros((len(batch_rows), t), dtype=torch.long)  # pad id 0
        mask = torch.zeros((len(batch_rows), t), dtype=torch.long)
        labels = torch.full((len(batch_rows), t), -100, dtype=torch.long)
        for i, (x, y) in enumerate(batch_rows):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
            labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        return ids, mask, labels

    batches = []
    for step in range(total_steps):
        br = [rows[(step * B + j) % len(rows)] for j in range(B)]
        t = longest if args.mode == "padded" else max(len(x) for x, _ in br)
        batches.append(collate(br, t))

    # ---- model --------------------------------------------------------------------------
    config = Qwen3Config.from_json_file(args.config)
    config.use_cache = False
    torch.manual_seed(args.seed)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model
        lcfg = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=[t for t in args.targets.split(",") if t],
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    log(f"{len(rows)} rows (longest {longest}), mode {args.mode}, method {args.method}, "
        f"{n_trainable:,} trainable params, attn {getattr(config, '_attn_implementation', '?')}, "
        f"{torch.get_num_threads()} threads")

    # ---- train --------------------------------------------------------------------------
    seconds = 0.0
    tokens = padded_tokens = 0
    step_seconds = []
    loss_value = float("nan")
    for step, (ids, mask, labels) in enumerate(batches):
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        dt = time.perf_counter() - t0
        loss_value = out.loss.item()
        if step >= args.warmup_steps:
            seconds += dt
            step_seconds.append(round(dt, 4))
            tokens += int(mask.sum())
            padded_tokens += ids.numel()
        log(f"step {step + 1}/{total_steps}: T {ids.shape[1]}, loss {loss_value:.4f}, {dt:.3f}s"
            + ("" if step >= args.warmup_steps else " (warmup)"))

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(json.dumps({
        "impl": "transformers+peft",
        "mode": args.mode,
        "method": args.method,
        "steps_timed": args.steps,
        "seconds": round(seconds, 4),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "padded_tokens": padded_tokens,
        "padded_tokens_per_second": round(padded_tokens / seconds, 2),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "params_trainable": n_trainable,
        "final_loss": round(loss_value, 6),
        "step_seconds": step_seconds,
    }), flush=True)


if __name__ == "__main__":
    main()
