"""Corpus benchmark: TTS synthesis speed and the assistant's voice states against neutral.

    python benchmarks/corpus.py [--sentences N] [--json out.json]

1. Synthesis speed, single process, per engine: audio seconds produced per wall second
   (Piper's neural voice and eSpeak NG), on the same sentences.
2. The assistant voice in every state, on the same sentences, measured on the audio with
   ``aqaa.prosody`` (speaking rate in letters per second of speech, median F0, voiced
   fraction, RMS level), as medians over the sentences, with the change against neutral.
3. If a corpus has been built (``checkpoints/latest.json``), its whole-build speed with
   all worker processes, from its stats.json.

Everything printed is measured in this run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqaa.prosody import measure  # noqa: E402
from aqaa.tts import ASSISTANT_STATES, QUERY_VOICES, Synthesizer  # noqa: E402

SENTENCES = [
    "The answer is seven.",
    "Paris is the capital of France.",
    "Good morning, it is nice to meet you today.",
    "Twelve is bigger than nine.",
    "Please close the door when you leave the room.",
    "The opposite of hot is cold.",
]


def synthesis_speed(synth: Synthesizer, voice, sentences: list[str]) -> float:
    synth.synthesize("warm up", voice)  # loads the model / initialises the library
    audio = 0.0
    t0 = time.perf_counter()
    for s in sentences:
        wav, sr = synth.synthesize(s, voice)
        audio += len(wav) / sr
    return audio / (time.perf_counter() - t0)


def state_table(synth: Synthesizer, sentences: list[str]) -> dict[str, dict]:
    table = {}
    for state, voice in ASSISTANT_STATES.items():
        ps = [measure(*synth.synthesize(s, voice), s) for s in sentences]

        def med(attr):
            vals = [getattr(p, attr) for p in ps if getattr(p, attr) == getattr(p, attr)]
            return statistics.median(vals) if vals else float("nan")

        table[state] = {k: med(k) for k in ("rate_cps", "f0_median_hz", "voiced_fraction", "rms_db")}
    return table


def print_state_table(table: dict[str, dict]) -> None:
    ref = table["neutral"]
    print("| state | rate (chars/s) | vs neutral | median F0 (Hz) | vs neutral | voiced | RMS (dBFS) | vs neutral |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for state, r in table.items():
        rate_x = r["rate_cps"] / ref["rate_cps"]
        f0 = r["f0_median_hz"] if r["voiced_fraction"] >= 0.1 else float("nan")  # whisper: F0 of a few stray frames
        f0_x = f"x{f0 / ref['f0_median_hz']:.2f}" if f0 == f0 else "unvoiced"
        f0_s = f"{f0:.0f}" if f0 == f0 else "-"
        print(f"| {state} | {r['rate_cps']:.1f} | x{rate_x:.2f} | {f0_s} | {f0_x} | "
              f"{r['voiced_fraction']:.2f} | {r['rms_db']:.1f} | {r['rms_db'] - ref['rms_db']:+.1f} dB |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=len(SENTENCES), help="how many test sentences (max 6)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args()
    sentences = SENTENCES[: max(1, min(args.sentences, len(SENTENCES)))]
    synth = Synthesizer()

    piper_voice = next(v for v in QUERY_VOICES if v.engine == "piper")
    speed = {
        "piper (joe, neural)": synthesis_speed(synth, piper_voice, sentences),
        "espeak-ng (en-us)": synthesis_speed(synth, ASSISTANT_STATES["neutral"], sentences),
    }
    print(f"## Synthesis speed, one process, {len(sentences)} sentences\n")
    print("| engine | audio seconds per wall second |\n|---|---:|")
    for name, v in speed.items():
        print(f"| {name} | {v:.1f} |")

    table = state_table(synth, sentences)
    print(f"\n## Assistant voice states on the same {len(sentences)} sentences (medians)\n")
    print_state_table(table)

    result = {"synthesis_speed_single_process": speed, "voice_states": table}
    latest = Path("checkpoints/latest.json")
    if latest.exists():
        corpus = json.loads(latest.read_text()).get("corpus")
        stats_path = Path(corpus) / "stats.json" if corpus else None
        if stats_path and stats_path.exists():
            stats = json.loads(stats_path.read_text())
            if "synthesis_speed" in stats:
                print(f"\n## Last corpus build ({corpus})\n")
                print(f"{stats['clips']} clips, {stats['audio_seconds']:.0f} s of audio in {stats['wall_seconds']:.0f} s "
                      f"with {stats['workers']} processes: {stats['synthesis_speed']:.1f} audio s per wall s "
                      "(includes resampling, prosody measurement and writing)")
                result["last_build"] = {k: stats[k] for k in ("clips", "audio_seconds", "wall_seconds", "workers",
                                                                "synthesis_speed")}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
