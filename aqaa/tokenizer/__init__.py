"""The dual-codebook audio tokenizer (DESIGN.md sections 2 and 9), in plain PyTorch.

``AudioTokenizer.load(dir).encode(wav, sr) -> (linguistic codes, semantic codes)``;
training lives in ``lightning_modules/tokenizer.py``, corpus tokenizing in
``tokenize_corpus`` (read back with ``load_tokens``); ``audio_ids`` turns codes into the
backbone's audio id stream for ``tokenizer.streams``.
"""

from .audio_tokenizer import AudioTokenizer, save_tokenizer
from .streams import STREAMS, audio_ids
from .threads import torch_threads
from .tokenize_corpus import load_tokens, tokenize_corpus

__all__ = ["AudioTokenizer", "save_tokenizer", "STREAMS", "audio_ids", "load_tokens", "tokenize_corpus",
           "torch_threads"]
