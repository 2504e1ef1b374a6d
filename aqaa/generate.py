"""Generation: KV-cached sampling constrained to the trained response layout.

``generate(model, vocab, prompt, layout=..., ratio=..., splice=...)`` samples a response
after ``Vocab.prompt(query)``. Every step masks the logits to the ids the layout grammar
allows next (``LayoutGrammar``), so the output always parses (``Vocab.parse`` reports no
errors) and re-lays out to itself:

* ``text_only``:   ``(T+ text_end)+ eos``
* ``audio_only``:  ``(audio_start A+ audio_end)+ eos``
* ``text_first``:  ``(T+ audio_start A+ audio_end)+ eos``
* ``interleaved``: ``(audio_start I audio_end)+ eos``, I = chunks of m text ids and n audio
  ids with the ``text_end`` rules of ``Vocab.layout``
* ``marker_removal`` joins the segments inside one marker pair; ``pre_interleaved``
  allows one (joined) segment.

A is audio in whole groups of the stream: 2 linguistic then 3 semantic ids (``dual``),
or one codebook's ids (``linguistic`` / ``semantic``); ``audio_end`` only at a group
boundary. Near ``max_new_tokens`` only ids that can still close the answer in time are
allowed, so a truncated answer is closed properly rather than cut.

Sampling: temperature, nucleus (top-p), and Step-Audio / CosyVoice 2 repetition-aware
sampling (RAS) for audio ids: when the sampled id occurs ``>= ras_window * ras_tau``
times in the last ``ras_window`` generated ids, it is re-drawn from the full (allowed,
temperature-scaled) distribution, which breaks the loops nucleus sampling falls into.

Streaming: ``on_token(id, kind)`` sees every id as it is sampled and ``on_audio(ling,
sem)`` every completed audio group as raw codes (what a streaming vocoder consumes).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from .tokens import LING_PER_GROUP, SEM_PER_GROUP, ParseResult, Segment, Vocab, check_ratio

# Token classes of the grammar.
TEXT, LING, SEM, TEXT_END, AUDIO_START, AUDIO_END, EOS = range(7)
CLASS_NAMES = ("text", "linguistic", "semantic", "text_end", "audio_start", "audio_end", "eos")
STREAM_PATTERNS = {"dual": (LING,) * LING_PER_GROUP + (SEM,) * SEM_PER_GROUP, "linguistic": (LING,), "semantic": (SEM,)}


@dataclass(frozen=True)
class GState:
    """Where the grammar is. ``phase``: start | text | span | after_end | done, and for
    the interleaved body: ptext (a text position) | txt | aud | tail | close | paudio."""

    phase: str = "start"
    n_text: int = 0  # text ids of the current segment / body
    n_audio: int = 0  # audio ids of the current segment / body
    g: int = 0  # position inside the current audio group
    c: int = 0  # ids in the current interleaved chunk (text or audio)
    text_done: bool = False  # interleaved: text_end emitted
    text_short: bool = False  # interleaved: a short text chunk was seen (text exhausted)
    in_text_run: bool = False  # text_first + marker_removal: text inside the span


class LayoutGrammar:
    """The response grammar of one (layout, ratio, splice, streams) as a state machine over
    token classes: ``allowed(state)``, ``step(state, cls)``, ``min_to_close(state)``."""

    def __init__(self, layout: str, ratio: Sequence[int] | None = None, splice: str = "marker_preserving",
                 streams: str = "dual"):
        if layout not in ("text_only", "audio_only", "text_first", "interleaved"):
            raise ValueError(f"unknown layout '{layout}'")
        if splice not in ("marker_preserving", "marker_removal", "pre_interleaved"):
            raise ValueError(f"unknown splice '{splice}'")
        if streams not in STREAM_PATTERNS:
            raise ValueError(f"unknown streams '{streams}'; allowed: {', '.join(STREAM_PATTERNS)}")
        self.layout, self.splice, self.streams = layout, splice, streams
        self.m, self.n = check_ratio(ratio) if layout == "interleaved" else (0, 0)
        self.pat = STREAM_PATTERNS[streams]
        self.G = len(self.pat)
        self._close_cache: dict[GState, int] = {}

    def start(self) -> GState:
        return GState()

    def audio_cls(self, s: GState) -> int:
        return self.pat[s.g]

    # ----- the rules --------------------------------------------------------------
    def allowed(self, s: GState) -> list[int]:
        L, sp = self.layout, self.splice
        if s.phase == "done":
            return []
        if s.phase == "after_end":  # a segment (or the one span) is closed
            more = sp == "marker_preserving" or (sp == "marker_removal" and L == "text_only")
            nxt = {"text_only": TEXT, "text_first": TEXT}.get(L, AUDIO_START)
            return [EOS, nxt] if more else [EOS]
        if L == "text_only":
            return [TEXT] if s.phase == "start" else [TEXT, TEXT_END]
        if L == "audio_only":
            if s.phase == "start":
                return [AUDIO_START]
            return self._audio_or([AUDIO_END] if s.n_audio and s.g == 0 else [], s)
        if L == "text_first":
            if s.phase == "start":
                return [TEXT]
            if s.phase == "text":
                return [TEXT, AUDIO_START]
            if s.in_text_run:  # marker_removal: a later segment's text inside the span
                return [TEXT, self.pat[0]]
            ends = []
            if s.n_audio and s.g == 0:
                ends = [AUDIO_END] + ([TEXT] if sp == "marker_removal" else [])
            return self._audio_or(ends, s)
        return self._interleaved(s)

    def _audio_or(self, extra: list[int], s: GState) -> list[int]:
        return [self.audio_cls(s)] + extra

    def _body_end(self) -> list[int]:
        """Where an interleaved body may end: close the span, or (marker_removal) start the next body."""
        return [AUDIO_END, TEXT] if self.splice == "marker_removal" else [AUDIO_END]

    def _interleaved(self, s: GState) -> list[int]:
        m, n = self.m, self.n
        a0 = self.pat[0]
        if s.phase == "start":
            return [AUDIO_START]
        if s.phase == "ptext":  # a text position
            if s.text_short:
                return [TEXT_END]
            return [TEXT] + ([TEXT_END] if s.n_text else [])
        if s.phase == "txt":
            if s.c < m:
                return [TEXT, a0] + ([TEXT_END] if s.n_audio else [])
            return [a0] + ([TEXT, TEXT_END] if s.n_audio else [])
        if s.phase == "aud":
            if s.g != 0:
                return [self.pat[s.g]]
            if s.c < n:  # a short chunk may end here: the audio is exhausted
                if s.text_done:
                    return [a0] + self._body_end()
                if s.text_short:
                    return [a0, TEXT_END]
                return [a0, TEXT_END, TEXT]
            # a full chunk: the next position follows the layout loop
            if s.text_done:
                return [a0] + self._body_end()
            return [TEXT_END] if s.text_short else [TEXT] + ([TEXT_END] if s.n_text else [])
        if s.phase == "paudio":  # an audio position after text_end
            return [a0] + (self._body_end() if s.n_audio else [])
        if s.phase == "tail":
            return [TEXT, TEXT_END]
        if s.phase == "close":
            return self._body_end()
        raise AssertionError(s)

    def step(self, s: GState, cls: int) -> GState:
        if cls not in self.allowed(s):
            raise ValueError(f"{CLASS_NAMES[cls]} is not allowed in state {s}")
        if cls == EOS:
            return GState(phase="done")
        if s.phase == "after_end":  # the next segment starts as the first did
            s = GState()
        return {"text_only": self._step_text_only, "audio_only": self._step_audio_only,
                "text_first": self._step_text_first, "interleaved": self._step_interleaved}[self.layout](s, cls)

    def _audio(self, s: GState, **kw) -> GState:
        """``s`` after one more audio id (group position advances)."""
        return replace(s, n_audio=s.n_audio + 1, g=(s.g + 1) % self.G, **kw)

    def _step_text_only(self, s: GState, cls: int) -> GState:
        if cls == TEXT:
            return replace(s, phase="text", n_text=s.n_text + 1)
        return GState(phase="after_end")  # text_end

    def _step_audio_only(self, s: GState, cls: int) -> GState:
        if cls == AUDIO_START:
            return replace(s, phase="span")
        if cls == AUDIO_END:
            return GState(phase="after_end")
        return self._audio(s)

    def _step_text_first(self, s: GState, cls: int) -> GState:
        if cls == AUDIO_START:
            return replace(s, phase="span")
        if cls == AUDIO_END:
            return GState(phase="after_end")
        if cls == TEXT:
            if s.phase == "span":  # marker_removal: the next segment's text inside the span
                return replace(s, in_text_run=True, n_text=s.n_text + 1 if s.in_text_run else 1, n_audio=0)
            return replace(s, phase="text", n_text=s.n_text + 1)
        return self._audio(s, in_text_run=False)

    def _step_interleaved(self, s: GState, cls: int) -> GState:
        m, n, ph = self.m, self.n, s.phase
        if cls == AUDIO_START:
            return GState(phase="ptext")
        if cls == AUDIO_END:
            return GState(phase="after_end")
        full = ph == "aud" and s.c == n  # a full audio chunk just ended: the layout loop moves on
        if cls in (LING, SEM):
            if ph == "aud" and not full:
                return self._audio(s, c=s.c + 1)
            # the first id of an audio chunk; after a short text chunk the text is exhausted
            return self._audio(s, phase="aud", c=1, text_short=s.text_short or (ph == "txt" and s.c < m))
        if cls == TEXT_END:
            if ph == "ptext" or full:  # text ran out at a text position: audio goes on (or ends)
                return replace(s, phase="paudio", text_done=True, c=0)
            return replace(s, phase="close", text_done=True)  # text ended after the audio ran out
        # TEXT
        if ph == "close" or (ph in ("aud", "paudio") and s.text_done):
            return GState(phase="txt", n_text=1, c=1)  # marker_removal: the next segment's body
        if ph == "ptext" or full:
            return replace(s, phase="txt", c=1, n_text=s.n_text + 1)
        if ph == "txt" and s.c < m:
            return replace(s, c=s.c + 1, n_text=s.n_text + 1)
        return replace(s, phase="tail", n_text=s.n_text + 1)  # the audio ran out: the rest of the text

    # ----- closing in time --------------------------------------------------------
    def min_to_close(self, s: GState, limit: int = 64) -> int:
        """Fewest ids from ``s`` to the end (``eos`` included); breadth-first over classes."""
        if s in self._close_cache:
            return self._close_cache[s]
        frontier, seen, depth = [s], {s}, 0
        while frontier and depth <= limit:
            nxt = []
            for q in frontier:
                if q.phase == "done":
                    self._close_cache[s] = depth
                    return depth
                for c in self.allowed(q):
                    r = self.step(q, c)
                    if r not in seen:
                        seen.add(r)
                        nxt.append(r)
            frontier, depth = nxt, depth + 1
        raise RuntimeError(f"no way to close the layout from {s}")

    @property
    def max_close(self) -> int:
        """An upper bound of ``min_to_close`` over all states."""
        return 2 * self.G + 8

    def accepts(self, classes: Sequence[int]) -> bool:
        s = self.start()
        for c in classes:
            if c not in self.allowed(s):
                return False
            s = self.step(s, c)
        return s.phase == "done"


def token_class(vocab: Vocab, i: int) -> int:
    if i in vocab.text_range:
        return TEXT
    if i in vocab.linguistic_range:
        return LING
    if i in vocab.semantic_range:
        return SEM
    special = {vocab.text_end: TEXT_END, vocab.audio_start: AUDIO_START, vocab.audio_end: AUDIO_END, vocab.eos: EOS}
    if i in special:
        return special[i]
    raise ValueError(f"id {i} ({vocab.describe(i)}) has no place in a response")


def class_masks(vocab: Vocab, size: int, device=None) -> torch.Tensor:
    """[7, size] bool: the vocab ids of each token class."""
    m = torch.zeros(7, size, dtype=torch.bool, device=device)
    m[TEXT, vocab.text_range.start : vocab.text_range.stop] = True
    m[LING, vocab.linguistic_range.start : vocab.linguistic_range.stop] = True
    m[SEM, vocab.semantic_range.start : vocab.semantic_range.stop] = True
    for cls, i in ((TEXT_END, vocab.text_end), (AUDIO_START, vocab.audio_start), (AUDIO_END, vocab.audio_end),
                   (EOS, vocab.eos)):
        m[cls, i] = True
    return m


# ----- sampling --------------------------------------------------------------------------


def sample_top_p(probs: torch.Tensor, top_p: float, generator: torch.Generator | None = None) -> int:
    """Nucleus sampling from a 1-D probability vector."""
    if top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    sorted_p, idx = probs.sort(descending=True)
    cum = sorted_p.cumsum(0)
    keep = cum - sorted_p < top_p  # always keeps the most likely id
    sorted_p = sorted_p * keep
    return int(idx[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)])


@dataclass
class GenerationResult:
    ids: list[int]  # the response ids (through eos, if it was reached)
    parse: ParseResult
    prompt_len: int
    seconds: float
    first_audio_seconds: float | None  # from the call to the first audio id
    finished: bool  # eos reached
    resampled: int = 0  # ids re-drawn by RAS
    events: list = field(default_factory=list)

    @property
    def segments(self) -> list[Segment]:
        return self.parse.segments

    @property
    def tokens_per_s(self) -> float:
        return len(self.ids) / max(self.seconds, 1e-9)


@torch.inference_mode()
def generate(
    model,
    vocab: Vocab,
    prompt: Sequence[int],
    layout: str = "interleaved",
    ratio: Sequence[int] | None = (10, 15),
    splice: str = "marker_preserving",
    streams: str = "dual",
    max_new_tokens: int = 512,
    temperature: float = 0.8,
    top_p: float = 0.9,
    ras_window: int = 10,
    ras_tau: float = 0.1,
    constrained: bool = True,
    use_cache: bool = True,
    seed: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    on_token: Callable[[int, str], None] | None = None,
    on_audio: Callable[[list[int], list[int]], None] | None = None,
) -> GenerationResult:
    """Sample a response to ``prompt`` (``vocab.prompt(query_audio)``) in ``layout``.

    ``temperature=0`` is greedy. ``constrained=False`` samples freely (for comparison;
    the output may then not parse). ``use_cache=False`` recomputes the whole sequence
    every step (the benchmark's baseline).
    """
    device = next(model.parameters()).device
    grammar = LayoutGrammar(layout, ratio if layout == "interleaved" else None, splice, streams)
    size = model.cfg.vocab_size
    masks = class_masks(vocab, size, device)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else torch.seed() % (2**63))
    state = grammar.start()
    if constrained and max_new_tokens < grammar.min_to_close(state):
        raise ValueError(f"max_new_tokens={max_new_tokens} is too few to close a {layout} answer "
                         f"(at least {grammar.min_to_close(state)})")
    ids = [int(i) for i in prompt]
    P = len(ids)
    if P + max_new_tokens > model.cfg.max_seq_len:
        max_new_tokens = model.cfg.max_seq_len - P
    out: list[int] = []
    recent: deque[int] = deque(maxlen=max(ras_window, 1))
    group: list[int] = []
    t0 = time.perf_counter()
    first_audio = None
    resampled = 0
    was_training = model.training
    model.eval()
    ac = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else _nullcontext()

    def forward(x: torch.Tensor, pos: int) -> torch.Tensor:
        last = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        last[:, -1] = True  # the output head only where the next id is read
        with ac:
            return model(x, pos=pos, select=last)[-1].float()

    try:
        if use_cache:
            model.setup_cache(1, P + max_new_tokens)
            logits = forward(torch.tensor([ids], device=device), 0)
        else:
            logits = forward(torch.tensor([ids], device=device), 0)
        for k in range(max_new_tokens):
            if constrained:
                remaining = max_new_tokens - k
                classes = grammar.allowed(state)
                if remaining <= grammar.max_close + 1:
                    classes = [c for c in classes if 1 + grammar.min_to_close(grammar.step(state, c)) <= remaining]
                allow = masks[classes].any(0)
                logits = logits.masked_fill(~allow, float("-inf"))
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                tok = sample_top_p(probs, top_p, gen)
            else:
                probs = torch.softmax(logits, dim=-1).cpu()
                tok = int(logits.argmax())
            if ras_window > 0 and tok in vocab.audio_range:
                if sum(1 for r in recent if r == tok) >= ras_window * ras_tau:
                    tok = int(torch.multinomial(probs, 1, generator=gen))
                    resampled += 1
            recent.append(tok)
            out.append(tok)
            ids.append(tok)
            cls = token_class(vocab, tok) if constrained or tok in vocab.audio_range or tok in vocab.text_range else None
            if constrained:
                state = grammar.step(state, cls)
            kind = CLASS_NAMES[cls] if cls is not None else vocab.describe(tok)
            if tok in vocab.audio_range:
                if first_audio is None:
                    first_audio = time.perf_counter() - t0
                group.append(tok)
                if len(group) == grammar.G or (streams == "dual" and len(group) == 5):
                    if on_audio is not None:
                        on_audio(*vocab.split_audio(group))
                    group = []
            if on_token is not None:
                on_token(tok, kind)
            if tok == vocab.eos:
                break
            if k + 1 == max_new_tokens:
                break
            if use_cache:
                logits = forward(torch.tensor([[tok]], device=device), P + k)
            else:
                logits = forward(torch.tensor([ids], device=device), 0)
    finally:
        model.clear_cache()
        model.train(was_training)
    seconds = time.perf_counter() - t0
    parse = vocab.parse(out, layout, ratio=ratio if layout == "interleaved" else None)
    return GenerationResult(ids=out, parse=parse, prompt_len=P, seconds=seconds, first_audio_seconds=first_audio,
                            finished=bool(out) and out[-1] == vocab.eos, resampled=resampled)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def load_backbone(directory, device="cpu"):
    """A backbone artifact (pretrain, sft, dpo, merge) ready to ``generate`` from:
    ``(model, vocab, kwargs)`` where kwargs hold the layout, ratio, splice and audio
    streams it was trained with, e.g. ``generate(model, vocab, vocab.prompt(q), **kwargs)``."""
    import json
    from pathlib import Path

    from .model import load_model

    meta = json.loads((Path(directory) / "model_config.json").read_text())
    model = load_model(directory, device=device).eval()
    vocab = Vocab(**meta["vocab"]) if "vocab" in meta else Vocab(256)
    lay = meta.get("layout") or {"layout": "interleaved", "ratio": [10, 15], "splice": "marker_preserving"}
    kwargs = {"layout": lay["layout"], "ratio": tuple(lay["ratio"]) if lay["layout"] == "interleaved" else None,
              "splice": lay["splice"], "streams": meta.get("streams", "dual")}
    return model, vocab, kwargs
