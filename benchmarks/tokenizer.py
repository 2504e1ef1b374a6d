"""Benchmark a trained audio tokenizer: encode speed, recogniser CER, codebook usage.

    .venv/bin/python benchmarks/tokenizer.py -e quickstart [--tokenizer DIR] [--corpus DIR] [--json]

* real-time factor of ``encode`` (compute seconds per audio second; goal <= 0.02), one
  clip at a time and batched, on the test split's clips (audio already in memory);
* CER of the CTC recogniser (``transcribe``) on the test split, queries and answers;
* codebook usage (share of codes used) and perplexity of both codebooks, on the test
  split and on all splits together.

Without ``--tokenizer`` / ``--corpus`` it uses the artifacts of the config's stages
(``checkpoints/latest.json`` first, else the config's own keyed artifacts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aqaa.artifacts import ArtifactStore  # noqa: E402
from aqaa.audio import TOKENIZER_SR, load_wav  # noqa: E402
from aqaa.config import load_config  # noqa: E402
from aqaa.corpus.manifest import SPLITS, read_dialogues  # noqa: E402
from aqaa.tokenizer import AudioTokenizer  # noqa: E402
from aqaa.tokenizer.quantize import codebook_stats  # noqa: E402
from aqaa.tokenizer.text import cer  # noqa: E402


def _clips(corpus: Path, split: str) -> list[tuple[torch.Tensor, str]]:
    out = []
    for d in read_dialogues(corpus, split):
        out.append((load_wav(corpus / d.query_audio, TOKENIZER_SR)[0], d.query_text))
        if d.answer_audio:
            out.append((load_wav(corpus / d.answer_audio, TOKENIZER_SR)[0], d.answer_text))
    return out


def _usage(tok: AudioTokenizer, waves: list[torch.Tensor]) -> dict:
    lc, sc = torch.zeros(tok.n_linguistic), torch.zeros(tok.n_semantic)
    for ling, sem in tok.encode_batch(waves, TOKENIZER_SR):
        lc += torch.bincount(torch.tensor(ling, dtype=torch.long), minlength=tok.n_linguistic).float()
        sc += torch.bincount(torch.tensor(sem, dtype=torch.long), minlength=tok.n_semantic).float()
    return {"linguistic": codebook_stats(lc), "semantic": codebook_stats(sc)}


def _rtf(fn, seconds: float, repeat: int = 3) -> float:
    fn()  # warm-up (allocator, kernels)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-e", "--experiment", default="quickstart")
    ap.add_argument("--tokenizer", help="tokenizer artifact directory")
    ap.add_argument("--corpus", help="corpus artifact directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's, one per core)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.experiment, args.overrides)
    store = ArtifactStore(cfg.paths.checkpoints)
    tok_dir = Path(args.tokenizer) if args.tokenizer else store.latest("tokenizer")
    if tok_dir is None:
        ap.error(f"no tokenizer in {store.root}/latest.json: pass --tokenizer DIR or run `aqaa train tokenizer` first")
    corpus = Path(args.corpus) if args.corpus else None
    if corpus is None and (tok_dir / "artifact.json").is_file():  # the corpus it was trained on
        corpus = json.loads((tok_dir / "artifact.json").read_text()).get("upstream", {}).get("corpus")
    corpus = Path(corpus) if corpus else store.latest("corpus")
    if corpus is None:
        ap.error("no corpus artifact known: pass --corpus DIR")

    tok = AudioTokenizer.load(tok_dir)
    test = _clips(corpus, "test")
    waves = [w for w, _ in test]
    seconds = sum(len(w) for w in waves) / TOKENIZER_SR
    long = torch.cat(waves)[: 30 * TOKENIZER_SR]

    res = {
        "tokenizer": str(tok_dir),
        "corpus": str(corpus),
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine skew every timing
        "test_clips": len(waves),
        "test_seconds": round(seconds, 1),
        "rtf_encode_single": _rtf(lambda: [tok.encode(w, TOKENIZER_SR) for w in waves], seconds),
        "rtf_encode_batched": _rtf(lambda: tok.encode_batch(waves, TOKENIZER_SR), seconds),
        "rtf_encode_30s_clip": _rtf(lambda: tok.encode(long, TOKENIZER_SR), len(long) / TOKENIZER_SR),
        "rtf_encode_22k_input": _rtf(
            lambda: [tok.encode(w, 22050) for w in waves[:8]], sum(len(w) for w in waves[:8]) / 22050),
    }
    hyps = tok.transcribe_batch(waves, TOKENIZER_SR)
    res["cer_test"] = cer([t for _, t in test], hyps)
    res["examples"] = [{"ref": t, "hyp": h} for (_, t), h in list(zip(test, hyps))[:6]]
    res["usage_test"] = _usage(tok, waves)
    every = [w for s in SPLITS for w, _ in _clips(corpus, s)]
    res["usage_all_splits"] = _usage(tok, every)

    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"tokenizer {tok_dir}\ncorpus    {corpus}\n{res['threads']} threads (load average "
          f"{res['load_average_1min']} on {os.cpu_count()} cores), {len(waves)} test clips, {seconds:.0f} s of audio\n")
    print("| measure | value |\n|---|---:|")
    for k in ("rtf_encode_single", "rtf_encode_batched", "rtf_encode_30s_clip", "rtf_encode_22k_input"):
        print(f"| {k} (goal <= 0.02) | {res[k]:.4f} |")
    print(f"| recogniser CER, test split | {res['cer_test']:.3f} |")
    for where in ("usage_test", "usage_all_splits"):
        for book in ("linguistic", "semantic"):
            st = res[where][book]
            print(f"| {book} codes used, {where[6:].replace('_', ' ')} ({st['frames']} frames) | "
                  f"{st['used']}/{st['n_codes']} ({st['usage']:.1%}), perplexity {st['perplexity']:.0f} |")
    print("\nexamples (reference -> recognised):")
    for ex in res["examples"]:
        print(f"  {ex['ref']!r} -> {ex['hyp']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
