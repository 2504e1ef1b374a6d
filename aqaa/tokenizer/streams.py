"""Which audio ids the backbone sees: both codebooks interleaved 2:3, or one alone.

``tokenizer.streams`` picks one; a sweep over it tests the paper's claim that dual
codebooks lower next-token perplexity against a single codebook. The tokens artifact
stores raw codes of both codebooks, so switching streams never re-tokenizes audio.
"""

from __future__ import annotations

from typing import Sequence

from ..config import TOKEN_STREAMS
from ..tokens import Vocab

STREAMS = TOKEN_STREAMS
# Audio ids per second of speech for each choice (16.67 Hz linguistic, 25 Hz semantic).
IDS_PER_SECOND = {"dual": 1e3 / 24, "linguistic": 50 / 3, "semantic": 25.0}


def audio_ids(vocab: Vocab, ling: Sequence[int], sem: Sequence[int], streams: str = "dual") -> list[int]:
    """Raw (linguistic, semantic) codes -> the audio vocab ids of ``streams``.

    dual: ``vocab.interleave_audio`` (2 linguistic then 3 semantic ids per 120 ms);
    linguistic / semantic: that codebook's ids alone, in time order.
    """
    if streams == "dual":
        return vocab.interleave_audio(ling, sem)
    if streams == "linguistic":
        return [_check(int(c), vocab.n_linguistic, "linguistic") + vocab.linguistic_range.start for c in ling]
    if streams == "semantic":
        return [_check(int(s), vocab.n_semantic, "semantic") + vocab.semantic_range.start for s in sem]
    raise ValueError(f"unknown streams '{streams}'; allowed: {', '.join(STREAMS)} (tokenizer.streams)")


def _check(c: int, n: int, name: str) -> int:
    if not 0 <= c < n:
        raise ValueError(f"{name} code {c} outside [0, {n})")
    return c
