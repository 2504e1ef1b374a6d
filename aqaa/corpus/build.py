"""Build the synthetic spoken-QA corpus (``aqaa data build``).

Text QA items with answer keys (``templates``) are spoken by real TTS engines
(``aqaa.tts``: Piper's neural voice and eSpeak NG): questions in varied query voices,
answers in the one assistant voice, each segment in its voice state. Every clip is
resampled once from the engine's rate to 16 kHz (tokenizers) and, for answers, 24 kHz
(vocoder targets). Synthesis runs in one process per core; output is deterministic
under ``corpus.seed`` (engines are run without sampling noise, and voices are chosen by
seeded RNGs).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..audio import TOKENIZER_SR, VOCODER_SR, resample, save_wav
from ..config import CorpusConfig
from .manifest import Dialogue, PairRow, SegmentRow, write_jsonl
from .templates import SPLITS, QAItem, generate_items, preference_pairs

_SYNTH = None  # one Synthesizer per worker process


def _init_worker() -> None:
    global _SYNTH
    import torch

    torch.set_num_threads(1)  # one process per core already
    from ..tts import Synthesizer

    _SYNTH = Synthesizer()


def _voice_label(v) -> str:
    return f"{v.engine}:{v.name} rate={v.rate:g} pitch={v.pitch} range={v.pitch_range} vol={v.volume:g}" + (
        " whisper" if v.whisper else ""
    )


def _synth_query(job: dict) -> dict:
    wav, sr = _SYNTH.synthesize(job["text"], job["voice"])
    w16 = resample(wav, sr, TOKENIZER_SR)
    save_wav(job["out_dir"] / job["path16"], w16, TOKENIZER_SR)
    return {"kind": "query", "key": job["key"], "seconds": len(w16) / TOKENIZER_SR}


def _synth_answer(job: dict) -> dict:
    """All segments of one answer in the assistant voice, plus their concatenation."""
    import torch

    from ..prosody import measure
    from ..tts import ASSISTANT_STATES

    out_dir, stem = job["out_dir"], job["stem"]
    parts16, parts24, segs = [], [], []
    for k, (text, state) in enumerate(job["segments"]):
        wav, sr = _SYNTH.synthesize(text, ASSISTANT_STATES[state])
        pros = measure(wav, sr, text)
        w16, w24 = resample(wav, sr, TOKENIZER_SR), resample(wav, sr, VOCODER_SR)
        seg = {"text": text, "state": state, "prosody": asdict(pros)}
        if state != "neutral":  # the same words in the neutral voice: what the state is measured against
            seg["neutral_prosody"] = asdict(measure(*_SYNTH.synthesize(text, ASSISTANT_STATES["neutral"]), text))
        if len(job["segments"]) > 1:  # single-segment answers share the whole-answer files
            seg["audio"], seg["audio_24k"] = f"{stem}.s{k}.16k.wav", f"{stem}.s{k}.24k.wav"
            save_wav(out_dir / seg["audio"], w16, TOKENIZER_SR)
            save_wav(out_dir / seg["audio_24k"], w24, VOCODER_SR)
        segs.append(seg)
        parts16.append(w16)
        parts24.append(w24)
    pause = job["pause_s"]

    def join(parts, sr):
        gap = torch.zeros(int(pause * sr))
        out = [parts[0]]
        for p in parts[1:]:
            out += [gap, p]
        return torch.cat(out)

    save_wav(out_dir / f"{stem}.16k.wav", join(parts16, TOKENIZER_SR), TOKENIZER_SR)
    save_wav(out_dir / f"{stem}.24k.wav", join(parts24, VOCODER_SR), VOCODER_SR)
    if len(segs) == 1:
        segs[0]["audio"], segs[0]["audio_24k"] = f"{stem}.16k.wav", f"{stem}.24k.wav"
    seconds = sum(len(p) for p in parts16) / TOKENIZER_SR + pause * (len(parts16) - 1)
    return {"kind": "answer", "key": job["key"], "seconds": seconds, "segments": segs, "stem": stem}


def _run_job(job: dict) -> dict:
    return _synth_query(job) if job["kind"] == "query" else _synth_answer(job)


def plan_items(cfg: CorpusConfig) -> dict[str, list[QAItem]]:
    sizes = {"train": cfg.per_category.train, "val": cfg.per_category.val, "test": cfg.per_category.test}
    return {s: generate_items(s, sizes[s], seed=cfg.seed, categories=tuple(cfg.categories)) for s in SPLITS}


def _query_voice(item: QAItem, seed: int):
    from ..tts import QUERY_STYLE_VOICES, QUERY_VOICES

    rng = random.Random(f"{seed}/{item.id}/voice")
    pool = QUERY_STYLE_VOICES[item.query_style] if item.query_style else QUERY_VOICES
    return pool[rng.randrange(len(pool))]


def build_corpus(cfg: CorpusConfig, out_dir: Path, progress: bool = True) -> dict:
    """Synthesise the corpus into ``out_dir`` and return its stats (also in stats.json)."""
    out_dir = Path(out_dir)
    items = plan_items(cfg)
    pairs = {s: preference_pairs(items[s], seed=cfg.seed) if cfg.preference_pairs else [] for s in ("train", "val")}

    jobs: list[dict] = []
    for split in SPLITS:
        for it in items[split]:
            v = _query_voice(it, cfg.seed)
            jobs.append(dict(kind="query", key=it.id, text=it.query_text, voice=v, out_dir=out_dir,
                             path16=f"audio/q/{it.id}.16k.wav", voice_label=_voice_label(v)))
            jobs.append(dict(kind="answer", key=it.id, stem=f"audio/a/{it.id}", out_dir=out_dir,
                             segments=[(s.text, s.state) for s in it.answer_segments], pause_s=cfg.segment_pause_s))
    for split, plist in pairs.items():
        for p in plist:  # chosen answers are the items' own answers; only rejected ones are new
            jobs.append(dict(kind="answer", key=p.id, stem=f"audio/r/{p.id}", out_dir=out_dir,
                             segments=[(s.text, s.state) for s in p.rejected], pause_s=cfg.segment_pause_s))

    workers = cfg.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    results: dict[tuple[str, str], dict] = {}
    bar = tqdm(total=len(jobs), desc=f"synthesising ({workers} proc)", unit="clip", disable=not progress)
    if workers == 1:
        _init_worker()
        for job in jobs:
            r = _run_job(job)
            results[(r["kind"], r["key"])] = r
            bar.update()
    else:
        # spawn, not fork: forked children of a process that has touched torch or onnxruntime
        # threads can deadlock.
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap_unordered(_run_job, jobs, chunksize=4):
                results[(r["kind"], r["key"])] = r
                bar.update()
    bar.close()
    wall = time.perf_counter() - t0
    audio_seconds = sum(r["seconds"] for r in results.values())

    voice_of = {j["key"]: j["voice_label"] for j in jobs if j["kind"] == "query"}
    for split in SPLITS:
        rows = []
        for it in items[split]:
            q, a = results[("query", it.id)], results[("answer", it.id)]
            rows.append(Dialogue(
                id=it.id, split=split, category=it.category, query_text=it.query_text,
                query_audio=f"audio/q/{it.id}.16k.wav", answer_text=it.answer_text, answer_key=it.answer_key,
                answer_audio=f"{a['stem']}.16k.wav", answer_audio_24k=f"{a['stem']}.24k.wav",
                segments=[SegmentRow(**s) for s in a["segments"]], query_voice=voice_of[it.id],
                query_style=it.query_style, template_id=it.template_id,
                query_seconds=round(q["seconds"], 3), answer_seconds=round(a["seconds"], 3),
            ))
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    for split, plist in pairs.items():
        item_by_id = {it.id: it for it in items[split]}
        rows = []
        for p in plist:
            chosen = results[("answer", p.item_id)]
            rej = results[("answer", p.id)]
            assert [s.text for s in p.chosen] == [s.text for s in item_by_id[p.item_id].answer_segments]
            rows.append(PairRow(
                id=p.id, item_id=p.item_id, split=split, kind=p.kind,
                chosen=[SegmentRow(**s) for s in chosen["segments"]],
                rejected=[SegmentRow(**s) for s in rej["segments"]],
                chosen_audio=f"{chosen['stem']}.16k.wav", rejected_audio=f"{rej['stem']}.16k.wav",
            ))
        write_jsonl(out_dir / f"pairs_{split}.jsonl", rows)

    stats = {
        "counts": {s: _count(items[s]) for s in SPLITS},
        "pairs": {s: len(p) for s, p in pairs.items()},
        "clips": len(jobs),
        "audio_seconds": round(audio_seconds, 1),
        "wall_seconds": round(wall, 1),
        "synthesis_speed": round(audio_seconds / max(wall, 1e-9), 2),  # audio s per wall s
        "workers": workers,
        "voice_states": voice_state_table([s for r in results.values() if r["kind"] == "answer" for s in r["segments"]]),
    }
    return stats


def _count(items: list[QAItem]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it.category] = out.get(it.category, 0) + 1
    return out


def voice_state_table(segments: list[dict]) -> dict[str, dict]:
    """Per assistant voice state: medians of its prosody, and of its change against the
    same words spoken in the neutral voice (paired, so text length and content cancel)."""
    by_state: dict[str, list[dict]] = {}
    for s in segments:
        by_state.setdefault(s["state"], []).append(s)

    def med(vals):
        vals = [v for v in vals if v == v]  # drop NaN (no voiced frames)
        return round(statistics.median(vals), 3) if vals else float("nan")

    table = {}
    for state, segs in sorted(by_state.items()):
        ps = [s["prosody"] for s in segs]
        row = {"n": len(segs), **{k: med([p[k] for p in ps]) for k in PROSODY_KEYS}}
        pairs = [(s["prosody"], s["neutral_prosody"]) for s in segs if s.get("neutral_prosody")]
        if pairs:
            row["rate_ratio"] = med([p["rate_cps"] / n["rate_cps"] for p, n in pairs if n["rate_cps"] > 0])
            row["f0_ratio"] = med([p["f0_median_hz"] / n["f0_median_hz"] for p, n in pairs
                                   if p["voiced_fraction"] >= 0.1 and n["f0_median_hz"] > 0])
            row["voiced_diff"] = med([p["voiced_fraction"] - n["voiced_fraction"] for p, n in pairs])
            row["rms_db_diff"] = med([p["rms_db"] - n["rms_db"] for p, n in pairs])
        table[state] = row
    return table


PROSODY_KEYS = ("rate_cps", "f0_median_hz", "voiced_fraction", "rms_db")


def format_counts(stats: dict) -> str:
    cats = sorted({c for s in stats["counts"].values() for c in s})
    lines = [f"| category | {' | '.join(SPLITS)} |", "|---|" + "---:|" * len(SPLITS)]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(str(stats["counts"][s].get(c, 0)) for s in SPLITS) + " |")
    lines.append("| **total** | " + " | ".join(str(sum(stats["counts"][s].values())) for s in SPLITS) + " |")
    if stats.get("pairs"):
        lines.append("\npreference pairs: " + ", ".join(f"{s} {n}" for s, n in stats["pairs"].items()))
    return "\n".join(lines)


def format_voice_states(table: dict[str, dict]) -> str:
    """Markdown: absolute medians, and the paired change against the same words in neutral."""
    lines = ["| state | n | rate (chars/s) | vs neutral | median F0 (Hz) | vs neutral | voiced | vs neutral "
             "| RMS (dBFS) | vs neutral |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for state in sorted(table, key=lambda s: (s != "neutral", s)):
        r = table[state]
        unvoiced = r["voiced_fraction"] < 0.1  # whispered: the F0 of a few stray frames means nothing
        f0 = "unvoiced" if unvoiced else f"{r['f0_median_hz']:.0f}"
        if "rate_ratio" in r:
            d = (f"x{r['rate_ratio']:.2f}", "-" if unvoiced else f"x{r['f0_ratio']:.2f}",
                 f"{r['voiced_diff']:+.2f}", f"{r['rms_db_diff']:+.1f} dB")
        else:
            d = ("",) * 4
        lines.append(f"| {state} | {r['n']} | {r['rate_cps']:.1f} | {d[0]} | {f0} | {d[1]} | "
                     f"{r['voiced_fraction']:.2f} | {d[2]} | {r['rms_db']:.1f} | {d[3]} |")
    return "\n".join(lines)
