"""Training sequences for the backbone, built from a tokens artifact (no audio is read).

Pretrain (teaches the text <-> audio mapping, after Step-Audio's audio-context
continual pretraining), one sequence per task and clip (queries, answer segments and
the preference pairs' other answers), loss on every id after ``bos``:

* ``asr``:        ``bos audio_start A audio_end T text_end eos``   (audio -> text)
* ``tts``:        ``bos T audio_start A audio_end eos``            (text -> audio)
* ``interleave``: ``bos`` + ``Vocab.layout([T, A], "interleaved", ratio)`` + ``eos``
  (continuation across modalities in the interleaved pattern)

SFT (DESIGN.md 3): ``bos human audio_start Q audio_end assistant R eos`` with the loss
on ``R eos`` only (``Vocab.dialogue``). R is the AQTAA response in the configured output
layout and splice, or, for AQTA (phase 1 mixes both), the text answer ``T text_end``.

Batching: length bucketing under a token budget. Global batches (all devices of one
optimizer step) are formed first, from length-sorted sequences with a little per-epoch
jitter, then split across ranks, so the global batch is the same whatever the number of
devices; each micro-batch carries the global count of loss ids, so the loss is the mean
over the global batch exactly (a sum divided by that count, averaged over ranks by
DDP/FSDP gradient reduction, times the world size). Rows are right-padded: with causal
attention a real id never sees a pad, so padding changes no result, and bucketing keeps
it to a few percent of the ids.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from .text import ByteTokenizer
from .tokens import Segment, Vocab

PRETRAIN_TASKS = ("asr", "tts", "interleave")
IGNORE = -100  # label of positions without loss (F.cross_entropy's ignore_index)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy [B, T] in float32, 0 where ``labels == IGNORE``
    (``logits[:, t]`` predicts ``labels[:, t]``)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="none").view(labels.shape)


def target_ce(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``token_ce`` of ``model`` on a batch, computing logits at target positions only."""
    sel = labels != IGNORE
    ce = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    if sel.any():
        logits = model(input_ids, select=sel)
        return ce.masked_scatter(sel, F.cross_entropy(logits, labels[sel], reduction="none"))
    # no targets (a rank's empty share of a batch): still run the model, for collectives and autograd
    return ce + 0.0 * model(input_ids, select=sel).sum()


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # True where ids[t] is a target (predicted from ids[:t])
    kind: str  # asr | tts | interleave | aqta | aqtaa
    source: str = ""  # dialogue / clip id


def _audio(vocab: Vocab, codes: dict | None, streams: str) -> list[int]:
    from .tokenizer.streams import audio_ids

    if not codes:
        return []
    return audio_ids(vocab, codes["ling"], codes["sem"], streams)


def _segment_texts(segs: Sequence[dict]) -> list[str]:
    # Segments are spoken separately; join them with a space as the answer text does.
    return [s["text"] if k == 0 else " " + s["text"] for k, s in enumerate(segs)]


# ----- pretrain ----------------------------------------------------------------------


def pretrain_clips(split_data: dict, pairs: dict | None, vocab: Vocab, streams: str) -> list[tuple[str, list[int], list[int]]]:
    """(clip id, text ids, audio ids) of every distinct speech clip with its text."""
    tok = ByteTokenizer()
    seen: set[tuple] = set()
    out = []

    def add(cid: str, text: str, codes: dict | None) -> None:
        audio = _audio(vocab, codes, streams)
        if not audio or not text:
            return
        key = (text, tuple(audio))
        if key in seen:
            return
        seen.add(key)
        out.append((cid, tok.to_ids(text, vocab), audio))

    for d in split_data["dialogues"]:
        add(d["id"] + ":q", d["query_text"], d["query"])
        for k, s in enumerate(d["segments"]):
            add(f"{d['id']}:a{k}", s["text"], s["codes"])
        if len(d["segments"]) != 1:
            add(d["id"] + ":a", d["answer_text"], d["answer"])
    for p in (pairs or {}).get("pairs", []):
        for side in ("chosen", "rejected"):
            for k, s in enumerate(p[side]):
                add(f"{p['id']}:{side}{k}", s["text"], s["codes"])
    return out


def pretrain_examples(clips, vocab: Vocab, tasks: Sequence[str], ratio: Sequence[int]) -> list[Example]:
    out = []
    for cid, text, audio in clips:
        for task in tasks:
            if task == "asr":
                body = [vocab.audio_start, *audio, vocab.audio_end, *text, vocab.text_end]
            elif task == "tts":
                body = vocab.layout([Segment(text, audio)], "text_first")
            elif task == "interleave":
                body = vocab.layout([Segment(text, audio)], "interleaved", ratio=ratio)
            else:
                raise ValueError(f"unknown pretrain task '{task}'; allowed: {', '.join(PRETRAIN_TASKS)}")
            ids = [vocab.bos, *body, vocab.eos]
            out.append(Example(ids, [False] + [True] * (len(ids) - 1), task, cid))
    return out


# ----- SFT ---------------------------------------------------------------------------


def sft_examples(
    split_data: dict,
    vocab: Vocab,
    streams: str,
    layout: str,
    ratio: Sequence[int] | None,
    splice: str,
    aqta: bool,
    aqtaa: bool = True,
    categories: Iterable[str] | None = None,
) -> list[Example]:
    """One AQTAA example per dialogue with answer audio, and (``aqta``) one AQTA example
    per dialogue; ``categories`` (non-empty) keeps only those categories."""
    tok = ByteTokenizer()
    cats = set(categories or ())
    ratio = list(ratio) if layout == "interleaved" else None
    out = []
    for d in split_data["dialogues"]:
        if cats and d["category"] not in cats:
            continue
        query = _audio(vocab, d["query"], streams)
        if not query:
            continue
        if aqtaa and d["segments"] and all(s["codes"] for s in d["segments"]):
            segs = [Segment(tok.to_ids(t, vocab), _audio(vocab, s["codes"], streams), s["state"])
                    for t, s in zip(_segment_texts(d["segments"]), d["segments"])]
            if all(s.audio for s in segs):
                ids, mask = vocab.dialogue(query, vocab.layout(segs, layout, ratio=ratio, splice=splice))
                out.append(Example(ids, mask, "aqtaa", d["id"]))
        if aqta:
            text = tok.to_ids(d["answer_text"], vocab)
            ids, mask = vocab.dialogue(query, vocab.layout([Segment(text)], "text_only"))
            out.append(Example(ids, mask, "aqta", d["id"]))
    return out


def drop_long(examples: list[Example], max_len: int) -> tuple[list[Example], int]:
    kept = [e for e in examples if len(e.ids) <= max_len + 1]  # inputs are ids[:-1]
    return kept, len(examples) - len(kept)


# ----- batching ----------------------------------------------------------------------


class LMBatches(Dataset):
    """Map-style dataset indexed by batch specs (indices, global counts) -> collated batch.

    Used with ``DataLoader(batch_size=None, sampler=BucketSampler(...))``.
    """

    def __init__(self, examples: Sequence[Example], pad_id: int):
        self.examples = list(examples)
        self.pad_id = pad_id
        # Per example: ids the model reads (len - 1) and ids with loss.
        self.lengths = [len(e.ids) - 1 for e in self.examples]
        self.n_loss = [sum(e.mask[1:]) for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, spec: tuple) -> dict:
        indices, n_loss_global, n_tokens_global = spec
        rows = [self.examples[i] for i in indices]
        if not rows:  # a rank without data in a short last batch: one row, no loss
            return {"input_ids": torch.full((1, 1), self.pad_id), "labels": torch.full((1, 1), IGNORE),
                    "n_loss_global": n_loss_global, "n_tokens_global": n_tokens_global, "n_tokens": 0}
        T = max(len(e.ids) - 1 for e in rows)
        inp = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        lab = torch.full((len(rows), T), IGNORE, dtype=torch.long)
        for r, e in enumerate(rows):
            ids = torch.tensor(e.ids, dtype=torch.long)
            m = torch.tensor(e.mask[1:], dtype=torch.bool)
            inp[r, : len(ids) - 1] = ids[:-1]
            lab[r, : len(ids) - 1] = torch.where(m, ids[1:], torch.full_like(ids[1:], IGNORE))
        return {"input_ids": inp, "labels": lab, "n_loss_global": n_loss_global,
                "n_tokens_global": n_tokens_global, "n_tokens": sum(len(e.ids) - 1 for e in rows)}


class BucketSampler(Sampler):
    """Yields this rank's share of each global batch as ``(indices, loss ids, ids)`` specs.

    Global batches hold length-sorted sequences while ``count * longest <= batch_tokens``
    (at least ``world_size`` sequences); each epoch re-sorts with a small random jitter
    (so batch composition varies) and shuffles the order of the batches.
    """

    def __init__(self, lengths: Sequence[int], n_loss: Sequence[int], batch_tokens: int, world_size: int = 1,
                 rank: int = 0, shuffle: bool = True, seed: int = 0, jitter: float = 0.1):
        if not lengths:
            raise ValueError("no training sequences")
        self.lengths, self.n_loss = list(lengths), list(n_loss)
        self.batch_tokens, self.world, self.rank = int(batch_tokens), int(world_size), int(rank)
        self.shuffle, self.seed, self.jitter = shuffle, seed, jitter
        self.epoch = 0
        self._n = len(self.global_batches(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        if self.shuffle:
            key = {i: n * (1 + self.jitter * rng.random()) for i, n in enumerate(self.lengths)}
        else:
            key = {i: n for i, n in enumerate(self.lengths)}
        order = sorted(range(len(self.lengths)), key=lambda i: (key[i], i))
        batches, cur, longest = [], [], 0
        for i in order:
            n = max(longest, self.lengths[i])
            if cur and (len(cur) + 1) * n > self.batch_tokens and len(cur) >= self.world:
                batches.append(cur)
                cur, n = [], self.lengths[i]
            cur.append(i)
            longest = n
        if cur:
            batches.append(cur)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self):
        for b in self.global_batches(self.epoch):
            n_loss = sum(self.n_loss[i] for i in b)
            n_tok = sum(self.lengths[i] for i in b)
            yield (tuple(b[self.rank :: self.world]), n_loss, n_tok)

    def __len__(self) -> int:
        return self._n

    def padding_fraction(self) -> float:
        pad = real = 0
        for b in self.global_batches(0):
            for r in range(self.world):
                part = b[r :: self.world]
                if part:
                    T = max(self.lengths[i] for i in part)
                    pad += T * len(part)
                    real += sum(self.lengths[i] for i in part)
        return 1 - real / max(pad, 1)


# ----- id classes (perplexity per class) ---------------------------------------------

ID_CLASSES = ("special", "text", "linguistic", "semantic")


def id_class_table(vocab: Vocab, size: int | None = None) -> torch.Tensor:
    """Class index (into ``ID_CLASSES``) of every vocab id."""
    t = torch.zeros(size or vocab.size, dtype=torch.long)
    t[vocab.text_range.start : vocab.text_range.stop] = 1
    t[vocab.linguistic_range.start : vocab.linguistic_range.stop] = 2
    t[vocab.semantic_range.start : vocab.semantic_range.stop] = 3
    return t


def class_sums(ce: torch.Tensor, labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[4, 2]: per id class, the summed cross-entropy and the count of target ids."""
    valid = labels != IGNORE
    cls = table.to(labels.device)[labels.clamp(min=0)]
    out = torch.zeros(len(ID_CLASSES), 2, device=ce.device, dtype=torch.float32)
    out[:, 0].index_add_(0, cls[valid], ce[valid].float())
    out[:, 1].index_add_(0, cls[valid], torch.ones_like(ce[valid], dtype=torch.float32))
    return out


def perplexities(sums: torch.Tensor) -> dict[str, float]:
    """loss and ppl_text / ppl_audio / ppl_linguistic / ppl_semantic from ``class_sums``."""
    def ppl(rows):
        s, n = sums[rows, 0].sum().item(), sums[rows, 1].sum().item()
        return math.exp(min(s / n, 50.0)) if n else float("nan")

    s, n = sums[:, 0].sum().item(), sums[:, 1].sum().item()
    return {"loss": s / n if n else float("nan"), "ppl_text": ppl([1]), "ppl_audio": ppl([2, 3]),
            "ppl_linguistic": ppl([2]), "ppl_semantic": ppl([3])}


# ----- synthetic tokens artifact (tests, benchmarks) -----------------------------------

_WORDS = ("one two three four five six seven eight nine ten red blue green black white north south east west "
          "paris rome tokyo cairo lima hot cold big small fast slow happy sad robot child yes no").split()


def write_synthetic_tokens(out_dir: str | Path, n_train: int = 24, n_val: int = 6, n_test: int = 6,
                           n_linguistic: int = 1024, n_semantic: int = 4096, seed: int = 0) -> Path:
    """A tokens artifact (``aqaa.tokenizer.tokenize_corpus`` format) of made-up dialogues
    whose "speech" codes are a noisy deterministic function of their text, so a model can
    learn the text <-> audio mapping. For tests and benchmarks only."""
    from .config import CATEGORIES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def speak(text: str, state: str) -> dict:
        # ~6 linguistic and ~9 semantic codes per word (about 0.36 s of speech at 16.7 / 25 Hz)
        ling, sem = [], []
        shift = sum(map(ord, state)) % 7
        for ch in text:
            if ch == " ":
                continue
            b = ord(ch)
            ling += [(b * 7 + shift) % n_linguistic]
            sem += [(b * 31 + k + shift) % n_semantic for k in range(2)] if rng.random() < 0.5 else [(b * 31 + shift) % n_semantic]
        while len(ling) * 3 < len(sem) * 2:  # keep about 2:3 so whole groups form
            ling.append(rng.randrange(n_linguistic))
        return {"ling": ling, "sem": sem}

    def phrase(k: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows = []
        for i in range(n):
            cat = CATEGORIES[i % len(CATEGORIES)]
            q = phrase(rng.randint(3, 6)) + "?"
            states = ["happy", "sad"] if cat == "multi_state" else ["neutral"]
            seg_texts = [phrase(rng.randint(1, 3)).capitalize() + "." for _ in states]
            segs = [{"text": t, "state": s, "codes": speak(t, s)} for t, s in zip(seg_texts, states)]
            ans = " ".join(seg_texts)
            answer = {"ling": sum((s["codes"]["ling"] for s in segs), []), "sem": sum((s["codes"]["sem"] for s in segs), [])}
            rows.append({"id": f"{cat}-{split}-{i:04d}", "category": cat, "query_text": q, "answer_text": ans,
                         "answer_key": seg_texts[0].split()[0].lower(), "query": speak(q, "query"),
                         "answer": answer, "segments": segs})
        head = {"version": 1, "n_linguistic": n_linguistic, "n_semantic": n_semantic, "split": split}
        torch.save({**head, "dialogues": rows}, out / f"{split}.pt")
        torch.save({**head, "pairs": []}, out / f"pairs_{split}.pt")
    return out


# ----- a stage's examples from a tokens artifact --------------------------------------


def tokens_vocab(tokens_dir: str | Path, text_size: int = 256) -> Vocab:
    """The vocabulary a tokens artifact's codes live in (its codebook sizes)."""
    from .tokenizer.tokenize_corpus import load_tokens

    head = load_tokens(tokens_dir, "train")
    return Vocab(text_size, head["n_linguistic"], head["n_semantic"])


def stage_examples(cfg, stage: str, tokens_dir: str | Path, vocab: Vocab, max_len: int, log=print) -> tuple[list, list, dict]:
    """Train and val examples of ``stage`` (pretrain | sft1 | sft2) and a summary of them."""
    from .tokenizer.tokenize_corpus import load_tokens

    streams = cfg.tokenizer.streams
    out, info = {}, {}
    for split in ("train", "val"):
        data = load_tokens(tokens_dir, split)
        if stage == "pretrain":
            pc = cfg.train.pretrain
            pairs = load_tokens(tokens_dir, split, pairs=True) if pc.pairs else None
            clips = pretrain_clips(data, pairs, vocab, streams)
            ex = pretrain_examples(clips, vocab, pc.tasks, pc.interleave_ratio)
        else:
            sc = getattr(cfg.train, stage)
            lc = cfg.layout
            ex = sft_examples(data, vocab, streams, lc.layout, lc.ratio, lc.splice, aqta=sc.aqta,
                              categories=sc.categories)
        ex, dropped = drop_long(ex, max_len)
        if dropped:
            log(f"{stage}: {dropped} {split} sequences longer than model.max_seq_len={max_len} left out")
        kinds: dict[str, int] = {}
        for e in ex:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        info[split] = {"sequences": len(ex), "ids": sum(len(e.ids) for e in ex),
                       "target_ids": sum(sum(e.mask) for e in ex), "kinds": kinds, "dropped_long": dropped}
        out[split] = ex
    if not out["train"]:
        raise ValueError(f"{stage}: no training sequences from {tokens_dir} (categories "
                         f"{getattr(getattr(cfg.train, stage), 'categories', None)}?)")
    return out["train"], out["val"], info
