"""Datasets over corpus manifests (plain PyTorch; the DataModules wrap these)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from .audio import TOKENIZER_SR, VOCODER_SR, load_wav
from .corpus.manifest import Dialogue, read_dialogues


class SpokenQADataset(Dataset):
    """One item per dialogue: waveforms of the query and the answer, and their texts.

    ``rate=16000`` reads the tokenizer copies, ``rate=24000`` the vocoder targets (answers
    only: queries are stored at 16 kHz). Rows without answer audio (AQTA) give an empty
    answer waveform.
    """

    def __init__(self, corpus_dir: str | Path, split: str, rate: int = TOKENIZER_SR, with_query: bool = True):
        if rate not in (TOKENIZER_SR, VOCODER_SR):
            raise ValueError(f"rate must be {TOKENIZER_SR} or {VOCODER_SR}, got {rate}")
        self.root = Path(corpus_dir)
        self.split = split
        self.rate = rate
        self.with_query = with_query
        self.rows: list[Dialogue] = read_dialogues(self.root, split)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        d = self.rows[i]
        item = {"id": d.id, "category": d.category, "query_text": d.query_text, "answer_text": d.answer_text}
        if self.with_query:
            item["query_wav"] = load_wav(self.root / d.query_audio, TOKENIZER_SR)[0]
        ans = d.answer_audio if self.rate == TOKENIZER_SR else d.answer_audio_24k
        item["answer_wav"] = load_wav(self.root / ans, self.rate)[0] if ans else torch.zeros(0)
        return item


def pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms to (B, T_max) and return their lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()) if len(waves) else 0)
    for k, w in enumerate(waves):
        out[k, : len(w)] = w
    return out, lengths


def collate_spoken_qa(items: list[dict]) -> dict:
    batch = {k: [it[k] for it in items] for k in ("id", "category", "query_text", "answer_text")}
    for key in ("query_wav", "answer_wav"):
        if key in items[0]:
            batch[key], batch[key.replace("_wav", "_lengths")] = pad_batch([it[key] for it in items])
    return batch
