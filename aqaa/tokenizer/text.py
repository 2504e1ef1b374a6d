"""Characters of the CTC heads, and the greedy decoder that makes the suite's recogniser.

The corpus text is lowercased and reduced to a-z, digits, space and apostrophe; anything
else (punctuation, hyphens) becomes a word break. Class 0 is the CTC blank.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

BLANK = 0
CHARS = " '" + "abcdefghijklmnopqrstuvwxyz" + "0123456789"
N_CLASSES = len(CHARS) + 1  # + blank
_INDEX = {c: i + 1 for i, c in enumerate(CHARS)}
_DROP = re.compile(r"[^a-z0-9' ]+")


def normalize_text(text: str) -> str:
    """Lowercase, map everything outside the CTC alphabet to a space, squeeze spaces."""
    return " ".join(_DROP.sub(" ", text.lower()).split())


def encode_text(text: str) -> list[int]:
    """Normalised text -> class ids (1..N_CLASSES-1)."""
    return [_INDEX[c] for c in normalize_text(text)]


def decode_ids(ids: Sequence[int]) -> str:
    return " ".join("".join(CHARS[i - 1] for i in ids if i != BLANK).split())


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best path per row of ``logits`` [B, T, C]: argmax, merge repeats, drop blanks."""
    best = logits.argmax(-1).cpu()
    out = []
    for row, n in zip(best, lengths.cpu().tolist()):
        row = row[:n]
        if len(row):
            keep = torch.ones_like(row, dtype=torch.bool)
            keep[1:] = row[1:] != row[:-1]
            row = row[keep]
        out.append(decode_ids(row.tolist()))
    return out


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate (edits / reference characters), via jiwer."""
    import jiwer

    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]  # jiwer refuses empty references
    if not pairs:
        return float("nan")
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))
