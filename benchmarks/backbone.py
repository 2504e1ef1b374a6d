"""Backbone benchmark: training and decoding throughput on this machine, in one run.

    python benchmarks/backbone.py [--preset tiny] [--batch 16] [--seq 256] [--steps 8] [--json out.json]

1. bf16 (and float32) matmul ceiling: the best GFLOP/s of square matmuls, measured now.
2. Training tokens/s on one fixed batch (same model, same batch, bf16 autocast, AdamW,
   gradient clipping, warm-up + cosine schedule) for
   - the Lightning stage (``lightning_modules.lm.LMModule`` under ``L.Trainer``),
   - a plain PyTorch loop of the same model (Lightning overhead = 1 - Lightning / plain),
   - Hugging Face ``LlamaForCausalLM`` of the same shape (needs ``transformers``; same
     loop, SDPA attention),
   with MFU = model FLOPs/s (6N + attention, ``aqaa.model.flops_per_token``) / the bf16
   matmul ceiling. Variants run in alternating rounds and report their best round, so a
   burst of load from other processes hits all of them alike.
3. Decoding tokens/s after a 512-id context, with and without the KV cache.

Everything printed is measured in this run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from aqaa.lm_data import IGNORE, target_ce, token_ce  # noqa: E402
from aqaa.model import LM, flops_per_token, hf_llama_config, preset, to_hf_state_dict  # noqa: E402
from aqaa.tokens import Vocab  # noqa: E402


def matmul_ceiling(dtype: torch.dtype, sizes=(512, 1024, 2048), seconds: float = 0.6) -> float:
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            k += 1
        best = max(best, 2 * n**3 * k / (time.perf_counter() - t0))
    return best


def make_batch(vocab: Vocab, B: int, T: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab.text_range.start, vocab.size, (B, T + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, : T // 3] = IGNORE  # an SFT-like batch: loss on the last two thirds
    n_loss = int((labels != IGNORE).sum())
    return {"input_ids": ids[:, :-1], "labels": labels, "n_loss_global": n_loss, "n_tokens_global": B * T,
            "n_tokens": B * T}


def _optimizer(model, lr=1e-4, total=1000):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))

    def schedule(step):
        return min(1.0, (step + 1) / 10) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / total))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def plain_loop(model, batch: dict, steps: int, ce_of) -> float:
    """Seconds per step of a hand-written loop doing what the Lightning stage does."""
    opt, sched = _optimizer(model)
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ce = ce_of(model, batch)
        loss = ce.sum() / batch["n_loss_global"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:]) if len(times) > 1 else times[0]


def lightning_loop(cfg, vocab: Vocab, batch: dict, steps: int) -> float:
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_modules.lm import LMModule

    class Timer(Callback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_train_batch_start(self, *a):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, *a):
            self.times.append(time.perf_counter() - self.t0)

    module = LMModule(cfg.to_dict(), {"text_size": vocab.text_size, "n_linguistic": vocab.n_linguistic,
                                      "n_semantic": vocab.n_semantic}, lr=1e-4, warmup_steps=10, max_steps=1000)
    timer = Timer()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return min(timer.times[1:]) if len(timer.times) > 1 else timer.times[0]


@torch.inference_mode()
def decode_speed(model, vocab: Vocab, context: int, new: int, use_cache: bool) -> float:
    from aqaa.generate import generate

    prompt = torch.randint(vocab.audio_offset, vocab.size, (context,)).tolist()
    r = generate(model, vocab, prompt, layout="audio_only", max_new_tokens=new, temperature=0.0, ras_window=0,
                 constrained=False, use_cache=use_cache)
    return len(r.ids) / r.seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="steps per round (the first is warm-up; the best counts)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode-context", type=int, default=512)
    ap.add_argument("--decode-new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    vocab = Vocab(256)
    cfg = preset(args.preset, vocab_size=vocab.size)
    B, T = args.batch, args.seq
    batch = make_batch(vocab, B, T)
    tokens = B * T
    fpt = flops_per_token(cfg, T)
    print(f"backbone {args.preset}: {sum(p.numel() for p in LM(cfg).parameters()) / 1e6:.2f}M params, "
          f"batch {B} x {T} = {tokens} ids, {fpt / 1e6:.1f} MFLOP per trained id, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    bf16_ceiling = matmul_ceiling(torch.bfloat16)
    fp32_ceiling = matmul_ceiling(torch.float32)
    print(f"matmul ceiling: bf16 {bf16_ceiling / 1e9:.0f} GFLOP/s, fp32 {fp32_ceiling / 1e9:.0f} GFLOP/s")

    try:
        import transformers

        transformers.logging.set_verbosity_error()
        have_hf = True
    except ImportError:
        have_hf = False

    torch.manual_seed(0)
    ours = LM(cfg)
    hf = None
    if have_hf:
        hf_cfg = transformers.LlamaConfig(**hf_llama_config(cfg), attn_implementation="sdpa")
        hf = transformers.LlamaForCausalLM(hf_cfg)
        hf.load_state_dict(to_hf_state_dict(ours), strict=False)

    best: dict[str, float] = {}
    for r in range(args.rounds):  # alternate, keep each variant's best step time
        runs = {
            "lightning": lambda: lightning_loop(cfg, vocab, batch, args.steps),
            # what the stage does: output head and softmax at target positions only
            "plain": lambda: plain_loop(ours, batch, args.steps, lambda m, b: target_ce(m, b["input_ids"], b["labels"])),
            # the same model computing logits everywhere, as LlamaForCausalLM does
            "plain_all_logits": lambda: plain_loop(ours, batch, args.steps,
                                                   lambda m, b: token_ce(m(b["input_ids"]), b["labels"])),
        }
        if hf is not None:
            runs["hf_llama"] = lambda: plain_loop(hf, batch, args.steps,
                                                  lambda m, b: token_ce(m(input_ids=b["input_ids"]).logits, b["labels"]))
        for name, fn in runs.items():
            s = fn()
            best[name] = min(best.get(name, float("inf")), s)
            print(f"  round {r + 1}: {name:<10} {tokens / s:8.0f} tokens/s", flush=True)

    # fp32 plain loop for the bf16-vs-fp32 question (the precision=auto default)
    def fp32_loop():
        model = LM(cfg)
        opt, sched = _optimizer(model)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss = target_ce(model, batch["input_ids"], batch["labels"]).sum() / batch["n_loss_global"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    best["plain_fp32"] = fp32_loop()

    # Model FLOPs a step requires (PaLM's MFU): the body for every id, the output head for
    # target ids only; logits nobody uses are not useful work, whoever computes them.
    head = 6 * cfg.vocab_size * cfg.d_model
    step_flops = tokens * (fpt - head) + batch["n_loss_global"] * head
    res = {name: {"tokens_per_s": tokens / s, "step_s": s, "mfu": step_flops / s / bf16_ceiling}
           for name, s in best.items()}
    res["plain_fp32"]["mfu_vs_fp32_ceiling"] = step_flops / best["plain_fp32"] / fp32_ceiling

    ours.eval()
    dec = {}
    for cache in (True, False):
        dec["cache" if cache else "no_cache"] = decode_speed(ours, vocab, args.decode_context, args.decode_new, cache)

    print(f"\ntraining, {B} x {T} ids per step ({batch['n_loss_global']} targets), bf16 autocast, best round:")
    print(f"{'':<32}{'tokens/s':>10}{'step (s)':>10}{'MFU':>8}")
    labels = {"lightning": "Lightning stage (LMModule)", "plain": "plain PyTorch loop",
              "plain_all_logits": "plain loop, logits everywhere", "hf_llama": "HF LlamaForCausalLM",
              "plain_fp32": "plain loop, float32"}
    for k in ("lightning", "plain", "plain_all_logits", "hf_llama", "plain_fp32"):
        if k in res:
            r = res[k]
            print(f"{labels[k]:<32}{r['tokens_per_s']:>10.0f}{r['step_s']:>10.3f}{100 * r['mfu']:>7.1f}%")
    overhead = 1 - res["lightning"]["tokens_per_s"] / res["plain"]["tokens_per_s"]
    print(f"\nLightning overhead vs plain loop: {100 * overhead:+.1f}% (goal <= 5%)")
    if "hf_llama" in res:
        print(f"ours vs HF Llama (plain loops): {res['plain']['tokens_per_s'] / res['hf_llama']['tokens_per_s']:.2f}x "
              "(goal >= 1.0x)")
    print(f"bf16 autocast vs float32: {res['plain']['tokens_per_s'] / res['plain_fp32']['tokens_per_s']:.2f}x")
    print(f"\ndecoding after {args.decode_context} ids of context, {args.decode_new} new ids, float32, greedy:")
    print(f"  with KV cache    {dec['cache']:8.1f} tokens/s")
    print(f"  without KV cache {dec['no_cache']:8.1f} tokens/s   ({dec['cache'] / dec['no_cache']:.1f}x from the cache)")
    out = {"preset": args.preset, "batch": B, "seq": T, "threads": torch.get_num_threads(),
           "matmul_gflops": {"bf16": bf16_ceiling / 1e9, "fp32": fp32_ceiling / 1e9}, "train": res,
           "lightning_overhead": overhead, "decode_tokens_per_s": dec}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
