"""Benchmark the vocoder on held-out assistant speech resynthesised from its own tokens.

For every test-split answer of the corpus: its codes (tokens artifact) go through the
vocoder; the result is compared with the real recording and with two references on the
true mel (Griffin-Lim; the trained generator alone, which isolates the flow's share of
the error). Reported per system: real-time factor, mel L1 against the real log-mel,
DNSMOS (P.808 and P.835 sig/bak/ovrl) and the word error rate of Whisper tiny.en against
the answer text.

    python benchmarks/vocoder.py -e quickstart                 # the vocoder of latest.json
    python benchmarks/vocoder.py --vocoder checkpoints/vocoder-XXXX --out /tmp/voc-wavs
    python benchmarks/vocoder.py -e quickstart --no-judges     # RTF and mel L1 only
    python benchmarks/vocoder.py --guidance-grid 0,0.3,0.7      # + the vocoder at each CFG strength

RTF is wall time / audio time on this machine, as it is loaded right now (the load
average is printed); "cpu RTF" is process CPU time / audio time, which does not depend
on other jobs but adds up both threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqaa.artifacts import ArtifactStore  # noqa: E402
from aqaa.audio import save_wav  # noqa: E402
from aqaa.config import load_config  # noqa: E402
from aqaa.vocoder import GriffinLimVocoder, LogMel, Vocoder  # noqa: E402
from aqaa.vocoder.data import load_clips  # noqa: E402


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-e", "--experiment", default="quickstart")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    ap.add_argument("--vocoder", help="vocoder artifact (default: latest.json's vocoder under paths.checkpoints)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="at most this many clips (0 = all)")
    ap.add_argument("--steps", type=int, default=None, help="Euler steps (default: the artifact's, 10)")
    ap.add_argument("--guidance", type=float, default=None, help="CFG strength (default: the artifact's)")
    ap.add_argument("--guidance-grid", help="comma-separated CFG strengths: one extra vocoder row each")
    ap.add_argument("--no-judges", action="store_true", help="skip Whisper and DNSMOS")
    ap.add_argument("--out", help="write the wavs here, for listening")
    ap.add_argument("--json", help="write the figures here as JSON")
    args = ap.parse_args(argv)

    cfg = load_config(args.experiment, args.overrides)
    vdir = Path(args.vocoder) if args.vocoder else ArtifactStore(cfg.paths.checkpoints).latest("vocoder")
    if vdir is None or not (vdir / "artifact.json").is_file():
        print(f"no vocoder artifact (looked in {cfg.paths.checkpoints}/latest.json); train one first: "
              f"aqaa train vocoder -e {args.experiment}", file=sys.stderr)
        return 2
    info = json.loads((vdir / "artifact.json").read_text())
    corpus, tokens = Path(info["upstream"]["corpus"]), Path(info["upstream"]["tokens"])
    voc = Vocoder.load(vdir)
    clips = load_clips(corpus, tokens, args.split, voc.mel_cfg)
    if args.limit:
        clips = clips[: args.limit]
    if not clips:
        print(f"no {args.split} answers with audio in {corpus}", file=sys.stderr)
        return 2
    logmel = LogMel(voc.mel_cfg)
    gl = GriffinLimVocoder(voc.mel_cfg, int(voc.defaults["griffin_lim_iters"]))
    sr = voc.sample_rate
    audio_s = sum(len(c.ling) * 6 * voc.mel_cfg.hop for c in clips) / sr
    print(f"vocoder {vdir.name}: {len(clips)} {args.split} answers, {audio_s:.1f} s of audio; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    if (vdir / "metrics.json").is_file():
        m = json.loads((vdir / "metrics.json").read_text())
        gen = m.get("generator") or {}
        print(f"trained on {m['train_clips']} clips ({m['train_audio_seconds'] / 60:.1f} min): generator "
              f"{gen.get('steps', 0)} steps {gen.get('train_seconds', 0):.0f} s, flow {m['flow']['steps']} steps "
              f"{m['flow']['train_seconds']:.0f} s; total {m['total_seconds']:.0f} s wall, "
              f"{m.get('total_cpu_seconds', float('nan')):.0f} s CPU")

    systems = {"ground truth": [], "vocoder": [], "Griffin-Lim (true mel)": []}
    if voc.has_generator:
        # which wave stage is better behind the flow: the trained generator or Griffin-Lim
        systems["vocoder, Griffin-Lim wave"] = []
        systems["generator (true mel)"] = []
    grid = [float(g) for g in args.guidance_grid.split(",")] if args.guidance_grid else []
    for g in grid:
        systems[f"vocoder, guidance {g:g}"] = []
    cost = {k: [0.0, 0.0] for k in systems}
    voc.decode(clips[0].ling, clips[0].sem, steps=2)  # warm-up (allocator, thread pool)
    for c in clips:
        n = c.mel.shape[1] * voc.mel_cfg.hop
        systems["ground truth"].append(torch.nn.functional.pad(c.wav, (0, max(0, n - len(c.wav))))[:n])
        wav, wall, cpu = _timed(lambda: voc.decode(c.ling, c.sem, steps=args.steps, guidance=args.guidance))
        systems["vocoder"].append(wav)
        main_stats = dict(voc.last_stats)  # the default decode's settings, for the summary line
        cost["vocoder"][0] += wall
        cost["vocoder"][1] += cpu
        wav, wall, cpu = _timed(lambda: gl(c.mel, length=n).clamp(-1, 1))
        systems["Griffin-Lim (true mel)"].append(wav)
        cost["Griffin-Lim (true mel)"][0] += wall
        cost["Griffin-Lim (true mel)"][1] += cpu
        if voc.has_generator:
            wav, wall, cpu = _timed(lambda: voc.decode(c.ling, c.sem, steps=args.steps, guidance=args.guidance,
                                                       wave="griffinlim"))
            systems["vocoder, Griffin-Lim wave"].append(wav)
            cost["vocoder, Griffin-Lim wave"][0] += wall
            cost["vocoder, Griffin-Lim wave"][1] += cpu
            wav, wall, cpu = _timed(lambda: voc.mel_to_wave(c.mel, wave="istft"))
            systems["generator (true mel)"].append(wav)
            cost["generator (true mel)"][0] += wall
            cost["generator (true mel)"][1] += cpu
        for g in grid:
            name = f"vocoder, guidance {g:g}"
            wav, wall, cpu = _timed(lambda: voc.decode(c.ling, c.sem, steps=args.steps, guidance=g))
            systems[name].append(wav)
            cost[name][0] += wall
            cost[name][1] += cpu

    rows = {}
    for name, wavs in systems.items():
        mel_l1 = sum(float((logmel(w)[:, : c.mel.shape[1]] - c.mel).abs().mean()) for w, c in zip(wavs, clips))
        rows[name] = {"rtf": cost[name][0] / audio_s if name in cost and cost[name][0] else None,
                      "cpu_rtf": cost[name][1] / audio_s if name in cost and cost[name][1] else None,
                      "mel_l1": mel_l1 / len(clips)}
    if args.out:
        out = Path(args.out)
        for name, wavs in systems.items():
            tag = "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")
            for w, c in zip(wavs, clips):
                save_wav(out / tag / f"{c.id}.wav", w, sr)
        print(f"wavs written under {out}/")

    if not args.no_judges:
        from aqaa.judges import AsrJudge, DnsMos, normalize_text, wer

        asr, dns = AsrJudge(), DnsMos()
        examples = {}
        for name, wavs in systems.items():
            t0 = time.perf_counter()
            hyps = [asr.transcribe(w, sr) for w in wavs]
            scores = [dns(w, sr) for w in wavs]
            rows[name]["wer"] = wer([c.text for c in clips], hyps)
            for k in ("p808_mos", "ovrl_mos", "sig_mos", "bak_mos"):
                rows[name][k] = sum(s[k] for s in scores) / len(scores)
            examples[name] = [{"ref": normalize_text(c.text), "hyp": normalize_text(h)} for c, h in
                              list(zip(clips, hyps))[:3]]
            print(f"  judged {name} in {time.perf_counter() - t0:.0f} s")

    print(f"\nvocoder row: steps {main_stats.get('steps')}, guidance {main_stats.get('guidance')}, "
          f"{main_stats.get('nfe')} network evaluations per clip, wave {main_stats.get('wave')}\n")
    cols = [("rtf", "RTF"), ("cpu_rtf", "cpu RTF"), ("mel_l1", "mel L1"), ("wer", "WER"), ("p808_mos", "DNSMOS p808"),
            ("ovrl_mos", "ovrl"), ("sig_mos", "sig"), ("bak_mos", "bak")]
    cols = [(k, h) for k, h in cols if any(r.get(k) is not None for r in rows.values())]
    print("| system | " + " | ".join(h for _, h in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in rows.items():
        cells = ["-" if r.get(k) is None else f"{r[k]:.3f}" if k in ("rtf", "cpu_rtf", "wer", "mel_l1")
                 else f"{r[k]:.2f}" for k, _ in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if not args.no_judges:
        print("\nexamples (normalised reference -> Whisper tiny.en):")
        for name, ex in examples.items():
            for e in ex[:2]:
                print(f"  {name:24s} {e['ref']!r} -> {e['hyp']!r}")
    if args.json:
        Path(args.json).write_text(json.dumps({"vocoder": str(vdir), "clips": len(clips), "audio_seconds": audio_s,
                                               "load_average": os.getloadavg()[0], "systems": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
