"""Tokenize every clip of a corpus artifact once, so later stages never touch audio.

The tokens artifact holds, per split, ``{split}.pt`` (dialogues) and ``pairs_{split}.pt``
(preference pairs), plain dicts / lists of ints saved with ``torch.save`` and read with
``torch.load(path, weights_only=True)`` (or ``load_tokens``). Every clip is stored as
raw codes ``{"ling": [...], "sem": [...]}`` (or ``None`` where a row has no audio); build
vocab ids with ``aqaa.tokenizer.audio_ids`` / ``Vocab.interleave_audio``.

``{split}.pt``::

    {"version", "split", "n_linguistic", "n_semantic", "dialogues": [
        {"id", "category", "query_text", "answer_text", "answer_key",
         "query": codes, "answer": codes | None,
         "segments": [{"text", "state", "codes": codes | None}]}]}

``pairs_{split}.pt``::

    {"version", "split", "pairs": [
        {"id", "item_id", "kind", "chosen_audio": codes | None, "rejected_audio": codes | None,
         "chosen": [{"text", "state", "codes"}], "rejected": [{"text", "state", "codes"}]}]}
"""

from __future__ import annotations

import time
from pathlib import Path

import soundfile as sf
import torch
from tqdm import tqdm

from ..audio import TOKENIZER_SR, load_wav
from ..corpus.manifest import SPLITS, read_dialogues, read_pairs
from .audio_tokenizer import AudioTokenizer

TOKENS_FORMAT = 1


def _segments(segs, codes_of) -> list[dict]:
    return [{"text": s.text, "state": s.state, "codes": codes_of(s.audio)} for s in segs]


def tokenize_corpus(
    corpus_dir: str | Path,
    tokenizer: AudioTokenizer,
    out_dir: str | Path,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Encode every distinct clip of the corpus (queries, answers, answer segments,
    chosen and rejected answers of pairs) in length-sorted batches; write the split files."""
    root, out_dir = Path(corpus_dir), Path(out_dir)
    dialogues = {s: read_dialogues(root, s) for s in SPLITS}
    pairs = {s: read_pairs(root, s) for s in SPLITS}

    paths: set[str] = set()
    for rows in dialogues.values():
        for d in rows:
            paths.update(p for p in [d.query_audio, d.answer_audio, *(s.audio for s in d.segments)] if p)
    for rows in pairs.values():
        for p in rows:
            paths.update(a for a in [p.chosen_audio, p.rejected_audio, *(s.audio for s in p.chosen + p.rejected)] if a)
    for rel in sorted(paths):
        if not (root / rel).is_file():
            raise FileNotFoundError(f"corpus {root}: audio file listed in a manifest is missing: {rel}")

    # Longest first, in batches of similar length: little padding, steady progress.
    frames = {rel: sf.info(str(root / rel)).frames for rel in paths}
    order = sorted(paths, key=lambda r: -frames[r])
    total_s = sum(frames.values()) / TOKENIZER_SR
    codes: dict[str, dict] = {}
    t0 = time.perf_counter()
    encode_s = 0.0
    with tqdm(total=round(total_s), desc="tokenizing", unit="audio s", disable=not progress) as bar:
        for k in range(0, len(order), batch_size):
            chunk = order[k : k + batch_size]
            wavs = [load_wav(root / rel, TOKENIZER_SR)[0] for rel in chunk]
            t1 = time.perf_counter()
            out = tokenizer.encode_batch(wavs, TOKENIZER_SR, batch_size=batch_size)
            encode_s += time.perf_counter() - t1
            for rel, (ling, sem) in zip(chunk, out):
                codes[rel] = {"ling": ling, "sem": sem}
            bar.update(round(sum(len(w) for w in wavs) / TOKENIZER_SR))
    wall = time.perf_counter() - t0

    def codes_of(rel: str | None) -> dict | None:
        return codes[rel] if rel else None

    head = {"version": TOKENS_FORMAT, "n_linguistic": tokenizer.n_linguistic, "n_semantic": tokenizer.n_semantic}
    counts = {}
    for split in SPLITS:
        rows = [
            {"id": d.id, "category": d.category, "query_text": d.query_text, "answer_text": d.answer_text,
             "answer_key": d.answer_key, "query": codes_of(d.query_audio), "answer": codes_of(d.answer_audio),
             "segments": _segments(d.segments, codes_of)}
            for d in dialogues[split]
        ]
        torch.save({**head, "split": split, "dialogues": rows}, out_dir / f"{split}.pt")
        prow = [
            {"id": p.id, "item_id": p.item_id, "kind": p.kind, "chosen_audio": codes_of(p.chosen_audio),
             "rejected_audio": codes_of(p.rejected_audio), "chosen": _segments(p.chosen, codes_of),
             "rejected": _segments(p.rejected, codes_of)}
            for p in pairs[split]
        ]
        torch.save({**head, "split": split, "pairs": prow}, out_dir / f"pairs_{split}.pt")
        counts[split] = {"dialogues": len(rows), "pairs": len(prow)}
    return {
        "clips": len(paths),
        "audio_seconds": round(total_s, 1),
        "wall_seconds": round(wall, 1),
        "encode_rtf": round(encode_s / max(total_s, 1e-9), 5),  # model time only, no file reading
        "linguistic_codes": sum(len(c["ling"]) for c in codes.values()),
        "semantic_codes": sum(len(c["sem"]) for c in codes.values()),
        "splits": counts,
    }


def load_tokens(tokens_dir: str | Path, split: str, pairs: bool = False) -> dict:
    """One split file of a tokens artifact (``pairs=True``: its preference pairs)."""
    path = Path(tokens_dir) / (f"pairs_{split}.pt" if pairs else f"{split}.pt")
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {tokens_dir}: is it a tokens artifact (aqaa data tokenize)?")
    return torch.load(path, map_location="cpu", weights_only=True)
