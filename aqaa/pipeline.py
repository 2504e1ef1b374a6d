"""``aqaa pipeline``: every stage of the recipe, in order, reusing complete artifacts.

corpus -> tokenizer -> tokens -> vocoder; tokens -> pretrain -> sft1 -> {sft2, dpo} ->
merge -> eval. Each runner resolves its artifact from the config and the artifacts it
is built from, so a second run with the same config trains nothing, and a run that
changes e.g. only ``merge.weights`` re-runs merge and eval alone.
"""

from __future__ import annotations

import time

from .artifacts import Artifact
from .config import ExperimentConfig
from .stages import (run_corpus, run_dpo, run_eval, run_merge, run_pretrain, run_sft, run_tokenize, run_tokenizer,
                     run_vocoder, store_for)

STAGES = ("corpus", "tokenizer", "tokens", "vocoder", "pretrain", "sft1", "sft2", "dpo", "merge", "eval")


def run_pipeline(cfg: ExperimentConfig, until: str = "eval", progress: bool = True, callbacks: dict | None = None,
                 log=print) -> dict[str, Artifact]:
    """Run the stages up to ``until``; returns {stage: artifact} and records it in
    ``checkpoints/latest.json``. ``callbacks``: extra Lightning callbacks per training stage
    (sweeps pass pruning callbacks this way)."""
    if until not in STAGES:
        raise ValueError(f"unknown stage '{until}'; stages: {', '.join(STAGES)}")
    cb = callbacks or {}
    arts: dict[str, Artifact] = {}
    times: dict[str, float] = {}
    last = STAGES.index(until)

    def step(name, fn):
        if STAGES.index(name) > last:
            return None
        t0 = time.perf_counter()
        arts[name] = fn()
        times[name] = time.perf_counter() - t0
        return arts[name]

    kw = dict(progress=progress, log=log)
    corpus = step("corpus", lambda: run_corpus(cfg, **kw))
    tokenizer = step("tokenizer", lambda: run_tokenizer(cfg, corpus, callbacks=cb.get("tokenizer", ()), **kw))
    tokens = step("tokens", lambda: run_tokenize(cfg, corpus, tokenizer, **kw))
    step("vocoder", lambda: run_vocoder(cfg, corpus, tokenizer, tokens, callbacks=cb.get("vocoder", ()), **kw))
    pretrain = step("pretrain", lambda: run_pretrain(cfg, tokens, callbacks=cb.get("pretrain", ()), **kw))
    sft1 = step("sft1", lambda: run_sft(cfg, "sft1", tokens, init=pretrain, callbacks=cb.get("sft1", ()), **kw))
    sft2 = step("sft2", lambda: run_sft(cfg, "sft2", tokens, init=sft1, callbacks=cb.get("sft2", ()), **kw))
    dpo = step("dpo", lambda: run_dpo(cfg, tokens, init=sft1, callbacks=cb.get("dpo", ()), **kw))

    def merge():
        by_stage = {"pretrain": pretrain, "sft1": sft1, "sft2": sft2, "dpo": dpo}
        return run_merge(cfg, artifacts=[by_stage[s] for s in cfg.merge.stages], **kw)

    merged = step("merge", merge)
    step("eval", lambda: run_eval(cfg, merged, **kw))
    store = store_for(cfg)
    if store.latest_path.exists():
        store.latest_path.unlink()  # latest.json describes this run only
    store.update_latest(**arts)
    for name, seconds in times.items():
        log(f"  {name:<10} {seconds:7.1f} s  {arts[name].path}")
    return arts
