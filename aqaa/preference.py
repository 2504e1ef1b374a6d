"""Preference pairs for DPO, built from a tokens artifact (no audio is read).

A pair shares its prompt (the spoken question) and differs in the response: chosen is the
right answer in the right voice state, rejected a wrong answer key or the right words in
the wrong voice state (``aqaa.corpus.templates.preference_pairs``). Both responses are
laid out exactly as SFT lays out answers (output layout, ratio, splice of the config).

Two loss masks per response (over the response ids and the closing ``eos``):

* ``unmasked``: every response id, as in plain DPO;
* ``masked`` (Step-Audio-AQAA): response ids that are not audio ids, i.e. the indicator
  ``I(a_t not in A)`` of the paper's masked-DPO objective. Audio ids then add nothing to
  the log-ratios, so DPO cannot pull the audio away from the text it speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .lm_data import IGNORE, _audio, _segment_texts
from .text import ByteTokenizer
from .tokens import Segment, Vocab


@dataclass
class PreferenceExample:
    prompt: list[int]  # bos human audio_start Q audio_end assistant
    chosen: list[int]  # response ids + eos
    rejected: list[int]
    kind: str  # wrong_answer | wrong_state
    source: str  # pair id


def response_ids(segments: Sequence[dict], vocab: Vocab, streams: str, layout: str, ratio, splice: str) -> list[int]:
    """The response ids of an answer's segments, as SFT builds them."""
    tok = ByteTokenizer()
    segs = [Segment(tok.to_ids(t, vocab), _audio(vocab, s["codes"], streams), s["state"])
            for t, s in zip(_segment_texts(segments), segments)]
    return vocab.layout(segs, layout, ratio=list(ratio) if layout == "interleaved" else None, splice=splice)


def preference_examples(split_data: dict, pair_data: dict, vocab: Vocab, streams: str, layout: str,
                        ratio, splice: str, max_len: int | None = None) -> tuple[list[PreferenceExample], int]:
    """Examples of every pair whose question and both answers have codes; (examples, dropped)."""
    queries = {d["id"]: d["query"] for d in split_data["dialogues"]}
    out, dropped = [], 0
    for p in pair_data.get("pairs", []):
        q = _audio(vocab, queries.get(p["item_id"]), streams)
        if not q or not all(s["codes"] for s in p["chosen"] + p["rejected"]):
            dropped += 1
            continue
        prompt = vocab.prompt(q)
        chosen = response_ids(p["chosen"], vocab, streams, layout, ratio, splice) + [vocab.eos]
        rejected = response_ids(p["rejected"], vocab, streams, layout, ratio, splice) + [vocab.eos]
        if max_len is not None and len(prompt) + max(len(chosen), len(rejected)) > max_len + 1:
            dropped += 1
            continue
        out.append(PreferenceExample(prompt, chosen, rejected, p["kind"], p["id"]))
    return out, dropped


def load_preference_examples(cfg, tokens_dir: str | Path, split: str, vocab: Vocab,
                             max_len: int | None = None) -> tuple[list[PreferenceExample], int]:
    from .tokenizer.tokenize_corpus import load_tokens

    lc = cfg.layout
    return preference_examples(load_tokens(tokens_dir, split), load_tokens(tokens_dir, split, pairs=True), vocab,
                               cfg.tokenizer.streams, lc.layout, lc.ratio, lc.splice, max_len=max_len)


def collate_pairs(examples: Sequence[PreferenceExample], vocab: Vocab) -> dict:
    """Chosen rows then rejected rows, right-padded: ``input_ids`` [2B, T], ``labels``
    [2B, T] (``logits[:, t]`` predicts ``labels[:, t]``; IGNORE outside the response),
    and the ``masked`` / ``unmasked`` loss masks [2B, T]."""
    rows = [e.prompt + e.chosen for e in examples] + [e.prompt + e.rejected for e in examples]
    starts = [len(e.prompt) for e in examples] * 2
    T = max(len(r) for r in rows) - 1
    inp = torch.full((len(rows), T), vocab.pad, dtype=torch.long)
    lab = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for r, (ids, start) in enumerate(zip(rows, starts)):
        ids_t = torch.tensor(ids, dtype=torch.long)
        inp[r, : len(ids) - 1] = ids_t[:-1]
        lab[r, start - 1 : len(ids) - 1] = ids_t[start:]  # the response (and eos), predicted from what precedes
    unmasked = lab != IGNORE
    audio = (lab >= vocab.audio_range.start) & (lab < vocab.audio_range.stop)
    return {"input_ids": inp, "labels": lab, "unmasked": unmasked, "masked": unmasked & ~audio,
            "n_pairs": len(examples), "n_tokens": int(sum(len(r) - 1 for r in rows))}
