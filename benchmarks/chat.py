"""`aqaa chat` latency on this CPU, and the quick-start eval table.

    python benchmarks/chat.py [--checkpoint DIR] [--n 6]

Loads the assistant once (model load is excluded from every figure), answers the first
N held-out (test split) spoken questions of the corpus the backbone was trained on, and
prints per question and as medians: seconds to first audio (question in memory ->
first answer segment vocoded), real-time factor (processing seconds per second of answer
audio), and where the time goes. Then the eval table of the latest `aqaa eval` /
`aqaa pipeline` run (checkpoints/latest.json), as measured by that run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqaa.audio import TOKENIZER_SR, load_wav  # noqa: E402
from aqaa.chat import Assistant, find_upstream  # noqa: E402
from aqaa.cli import _eval_table  # noqa: E402
from aqaa.config import load_config  # noqa: E402
from aqaa.corpus.manifest import read_dialogues  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="backbone artifact (default: the merge in checkpoints/latest.json)")
    ap.add_argument("-e", "--experiment", default="quickstart")
    ap.add_argument("--n", type=int, default=6, help="questions to answer")
    args = ap.parse_args()
    cfg = load_config(args.experiment)
    latest = Path(cfg.paths.checkpoints) / "latest.json"
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    elif latest.exists():
        ckpt = Path(json.loads(latest.read_text())["merge"])
    else:
        sys.exit("no checkpoint: run `make demo` (or aqaa pipeline) first, or pass --checkpoint")
    assistant = Assistant.load(ckpt, checkpoints_root=Path(cfg.paths.checkpoints))
    corpus = find_upstream(find_upstream(ckpt, "tokens"), "corpus")
    ec = cfg.eval
    rows = []
    print(f"## aqaa chat on this CPU ({ckpt.name}; model load excluded)\n")
    print("| question | answer audio (s) | first audio (s) | RTF | tokenize (s) | generate+stream (s) | vocode (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for d in read_dialogues(corpus, "test")[: args.n]:
        wav, _ = load_wav(corpus / d.query_audio, TOKENIZER_SR)
        r = assistant.answer(wav, TOKENIZER_SR, max_new_tokens=ec.max_new_tokens, temperature=ec.temperature,
                             top_p=ec.top_p, seed=ec.seed, steps=ec.vocoder_steps)
        secs = len(r.audio) / r.sample_rate
        t = r.timings
        ttfa = r.seconds_to_first_audio
        rows.append((secs, ttfa, r.real_time_factor))
        print(f"| {d.query_text} | {secs:.2f} | {'-' if ttfa is None else f'{ttfa:.2f}'} | "
              f"{r.real_time_factor:.2f} | {t['tokenize_s']:.2f} | {t['generate_s']:.2f} | {t['vocode_s']:.2f} |")
    ttfas = [r[1] for r in rows if r[1] is not None]
    rtfs = [r[2] for r in rows if r[0] > 0]
    print(f"\nmedian seconds to first audio: {statistics.median(ttfas):.2f}" if ttfas else "\nno answer had audio")
    if rtfs:
        print(f"median real-time factor: {statistics.median(rtfs):.2f} (below 1 = faster than real time)")
    if latest.exists() and "eval" in json.loads(latest.read_text()):
        ev = Path(json.loads(latest.read_text())["eval"])
        print(f"\n## Quick-start eval ({ev.name}, {cfg.eval.split} split)\n")
        print(_eval_table(json.loads((ev / "metrics.json").read_text())))


if __name__ == "__main__":
    main()
