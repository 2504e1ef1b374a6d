"""Text tokenizer: UTF-8 bytes.

Why bytes and not a trained BPE: the corpus is small and its vocabulary closed, a byte
tokenizer has no training step, no artifact to keep in sync and no out-of-vocabulary
case, and every text id maps back to the exact characters the TTS spoke. Its cost is
longer text sequences (about 4x a BPE's), which at quick-start scale is a few hundred
ids per dialogue. ``text.size`` in the config is fixed at 256 for this tokenizer.
"""

from __future__ import annotations

from .tokens import Vocab


class ByteTokenizer:
    size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(t for t in tokens if 0 <= t < 256).decode("utf-8", errors="replace")

    # Vocab-id helpers: text tokens live at vocab.text_range.
    def to_ids(self, text: str, vocab: Vocab) -> list[int]:
        start = vocab.text_range.start
        return [start + t for t in self.encode(text)]

    def from_ids(self, ids: list[int], vocab: Vocab) -> str:
        return self.decode([i - vocab.text_range.start for i in ids if i in vocab.text_range])


def get_text_tokenizer(name: str = "bytes") -> ByteTokenizer:
    if name != "bytes":
        raise ValueError(f"unknown text tokenizer {name!r}; allowed: bytes")
    return ByteTokenizer()
