"""Training clips of the tokenizers: every 16 kHz clip of a corpus split with its text.

Log-mels are computed once and held in memory (a quick-start corpus is ~20 minutes of
audio, ~40 MB of features), so an epoch costs only the network.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from ..audio import TOKENIZER_SR, load_wav
from ..corpus.manifest import read_dialogues, read_pairs
from .model import LogMel
from .text import encode_text, normalize_text


@dataclass
class Clip:
    path: Path
    text: str


def corpus_clips(corpus_dir: str | Path, split: str, with_pairs: bool = True) -> list[Clip]:
    """Queries and answers of ``split`` (whole answers; segments are inside them) and, with
    ``with_pairs``, the rejected answers of its preference pairs: more speech for free."""
    root = Path(corpus_dir)
    seen: set[Path] = set()
    out: list[Clip] = []

    def add(rel: str | None, text: str) -> None:
        if rel and normalize_text(text):
            p = root / rel
            if p not in seen:
                seen.add(p)
                out.append(Clip(p, text))

    for d in read_dialogues(root, split):
        add(d.query_audio, d.query_text)
        add(d.answer_audio, d.answer_text)
    if with_pairs:
        for p in read_pairs(root, split):
            add(p.rejected_audio, " ".join(s.text for s in p.rejected))
    return out


class MelClips(Dataset):
    """(raw log-mel [F, n_mels], n_samples, char ids, text) per clip, computed up front."""

    def __init__(self, clips: list[Clip], n_mels: int = 80, progress: bool = True, desc: str = "log-mel"):
        self.clips = clips
        front = LogMel(n_mels)
        self.items = []
        for c in tqdm(clips, desc=desc, unit="clip", disable=not progress, leave=False):
            wav, _ = load_wav(c.path, TOKENIZER_SR)
            with torch.no_grad():
                mel, _ = front(wav[None])
            self.items.append((mel[0], len(wav), torch.tensor(encode_text(c.text), dtype=torch.long), c.text))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]

    @property
    def seconds(self) -> float:
        return sum(n for _, n, _, _ in self.items) / TOKENIZER_SR

    def mel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-bin mean and std of the log-mel over all frames (normalises the input)."""
        x = torch.cat([m for m, *_ in self.items])
        return x.mean(0), x.std(0).clamp(min=1e-3)


def collate_mels(items) -> dict:
    mels, n_samples, chars, texts = zip(*items)
    frames = max(m.shape[0] for m in mels)
    mel = torch.zeros(len(mels), frames, mels[0].shape[1])
    for k, m in enumerate(mels):
        mel[k, : m.shape[0]] = m
    return {
        "mel": mel,
        "n_samples": torch.tensor(n_samples, dtype=torch.long),
        "targets": torch.cat(chars) if chars else torch.zeros(0, dtype=torch.long),
        "target_lengths": torch.tensor([len(c) for c in chars], dtype=torch.long),
        "texts": list(texts),
    }


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length (less padding), reshuffled every epoch."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, shuffle: bool = True):
        self.lengths, self.batch_size, self.seed, self.shuffle = lengths, batch_size, seed, shuffle
        self.epoch = 0

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        idx = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(idx)
        bucket = self.batch_size * 8
        batches = []
        for i in range(0, len(idx), bucket):
            chunk = sorted(idx[i : i + bucket], key=lambda j: self.lengths[j])
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        n, bucket = len(self.lengths), self.batch_size * 8
        return (n // bucket) * 8 + -(-(n % bucket) // self.batch_size)

