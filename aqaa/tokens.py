"""The token layout shared by every stage (DESIGN.md section 3).

This module owns every id: nothing else in the suite hard-codes one.

Id space, low to high::

    [specials][text ids: text_size][linguistic: n_linguistic][semantic: n_semantic]
                                   ^ audio_offset

Linguistic code ``c`` is id ``audio_offset + c``; semantic code ``s`` is id
``audio_offset + n_linguistic + s`` (Step-Audio's ``<audio_0..5119>``).

Audio is a stream of 2:3 groups: per 120 ms, two linguistic ids (16.67 Hz) then three
semantic ids (25 Hz). An answer segment (text ids T, audio ids A) is laid out as one of

* ``audio_only``:   ``audio_start A audio_end`` (T is not emitted)
* ``text_first``:   ``T audio_start A audio_end``
* ``interleaved`` (m, n): ``audio_start T[0:m] A[0:n] T[m:2m] A[n:2n] ... audio_end``;
  ``text_end`` is emitted once, at the text position after T runs out (or, if A runs out
  first, after the rest of T). ``n`` must be a multiple of 5 so chunks hold whole groups.

Multi-state answers (several segments, each in its own voice state) are spliced by one
of ``marker_preserving``, ``marker_removal`` or ``pre_interleaved``; see ``Vocab.layout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

LAYOUTS = ("audio_only", "text_first", "interleaved")
# ``text_only`` is the AQTA response (audio query -> text answer); it is not an output
# layout of the ablation, but SFT phase 1 mixes it in, as the paper does.
RESPONSE_LAYOUTS = LAYOUTS + ("text_only",)
SPLICES = ("marker_preserving", "marker_removal", "pre_interleaved")
SPECIALS = ("pad", "bos", "eos", "human", "assistant", "audio_start", "audio_end", "text_end")

LING_PER_GROUP = 2
SEM_PER_GROUP = 3
GROUP = LING_PER_GROUP + SEM_PER_GROUP  # 5 audio ids per 120 ms


@dataclass
class Segment:
    """One piece of an answer: text-token ids, audio vocab ids and the voice state."""

    text: list[int] = field(default_factory=list)
    audio: list[int] = field(default_factory=list)
    state: str = "neutral"


@dataclass
class ParseResult:
    """What ``Vocab.parse`` recovered, and what it could not make sense of."""

    segments: list[Segment]
    errors: list[str]

    @property
    def text(self) -> list[int]:
        return [t for s in self.segments for t in s.text]

    @property
    def audio(self) -> list[int]:
        return [a for s in self.segments for a in s.audio]


def check_ratio(ratio: Sequence[int] | None) -> tuple[int, int]:
    """Validate an interleaving ratio (m text ids, n audio ids) and return it as a tuple."""
    if ratio is None:
        raise ValueError("layout 'interleaved' needs ratio=(m, n), e.g. (10, 15)")
    if len(ratio) != 2:
        raise ValueError(f"ratio must be two integers (m text ids, n audio ids), got {ratio!r}")
    m, n = int(ratio[0]), int(ratio[1])
    if m < 1 or n < 1:
        raise ValueError(f"ratio parts must be >= 1, got {m}:{n}")
    if n % GROUP != 0:
        raise ValueError(
            f"ratio {m}:{n}: the audio part must be a multiple of {GROUP} "
            f"(whole 2:3 linguistic:semantic groups), e.g. {m}:{max(GROUP, n // GROUP * GROUP)}"
        )
    return m, n


class Vocab:
    """Special, text and audio ids of the backbone's vocabulary."""

    def __init__(self, text_size: int, n_linguistic: int = 1024, n_semantic: int = 4096):
        if text_size < 1 or n_linguistic < 1 or n_semantic < 1:
            raise ValueError("text_size, n_linguistic and n_semantic must all be >= 1")
        self.text_size = int(text_size)
        self.n_linguistic = int(n_linguistic)
        self.n_semantic = int(n_semantic)
        for i, name in enumerate(SPECIALS):
            setattr(self, name, i)
        self.n_special = len(SPECIALS)
        self.text_range = range(self.n_special, self.n_special + self.text_size)
        self.audio_offset = self.text_range.stop
        self.linguistic_range = range(self.audio_offset, self.audio_offset + self.n_linguistic)
        self.semantic_range = range(self.linguistic_range.stop, self.linguistic_range.stop + self.n_semantic)
        self.audio_range = range(self.audio_offset, self.semantic_range.stop)
        self.size = self.semantic_range.stop

    # Declared for type checkers; set in __init__ from SPECIALS.
    pad: int
    bos: int
    eos: int
    human: int
    assistant: int
    audio_start: int
    audio_end: int
    text_end: int

    def __repr__(self) -> str:
        return (
            f"Vocab(text_size={self.text_size}, n_linguistic={self.n_linguistic}, "
            f"n_semantic={self.n_semantic}, size={self.size})"
        )

    def special_name(self, i: int) -> str:
        return SPECIALS[i]

    # ----- id classes ---------------------------------------------------------------
    def is_text(self, i: int) -> bool:
        return i in self.text_range

    def is_audio(self, i: int) -> bool:
        return i in self.audio_range

    def is_linguistic(self, i: int) -> bool:
        return i in self.linguistic_range

    def is_semantic(self, i: int) -> bool:
        return i in self.semantic_range

    def text_id(self, token: int) -> int:
        """Vocab id of a text-tokenizer token (0 <= token < text_size)."""
        if not 0 <= token < self.text_size:
            raise ValueError(f"text token {token} outside [0, {self.text_size})")
        return self.text_range.start + token

    def text_token(self, i: int) -> int:
        """Inverse of ``text_id``."""
        if i not in self.text_range:
            raise ValueError(f"id {i} is not a text id ({self.text_range})")
        return i - self.text_range.start

    # ----- audio stream -------------------------------------------------------------
    def interleave_audio(self, ling_codes: Sequence[int], sem_codes: Sequence[int]) -> list[int]:
        """Raw codes -> 2:3 interleaved vocab ids; trailing codes that fill no group are dropped."""
        groups = min(len(ling_codes) // LING_PER_GROUP, len(sem_codes) // SEM_PER_GROUP)
        out: list[int] = []
        for g in range(groups):
            for c in ling_codes[LING_PER_GROUP * g : LING_PER_GROUP * (g + 1)]:
                c = int(c)
                if not 0 <= c < self.n_linguistic:
                    raise ValueError(f"linguistic code {c} outside [0, {self.n_linguistic})")
                out.append(self.audio_offset + c)
            for s in sem_codes[SEM_PER_GROUP * g : SEM_PER_GROUP * (g + 1)]:
                s = int(s)
                if not 0 <= s < self.n_semantic:
                    raise ValueError(f"semantic code {s} outside [0, {self.n_semantic})")
                out.append(self.semantic_range.start + s)
        return out

    def split_audio(self, audio_ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Vocab ids -> (linguistic codes, semantic codes); inverse of ``interleave_audio``.

        Ids are told apart by range, not position, so a model's stray group still splits.
        """
        ling: list[int] = []
        sem: list[int] = []
        for i in audio_ids:
            i = int(i)
            if i in self.linguistic_range:
                ling.append(i - self.audio_offset)
            elif i in self.semantic_range:
                sem.append(i - self.semantic_range.start)
            else:
                raise ValueError(f"id {i} is not an audio id ({self.audio_range})")
        return ling, sem

    # ----- response layouts ---------------------------------------------------------
    def _segment_ids(self, text: list[int], audio: list[int], layout: str, ratio) -> list[int]:
        if layout == "audio_only":
            return [self.audio_start, *audio, self.audio_end]
        if layout == "text_first":
            return [*text, self.audio_start, *audio, self.audio_end]
        if layout == "text_only":
            return [*text, self.text_end]
        m, n = check_ratio(ratio)
        out = [self.audio_start]
        ti = ai = 0
        text_done = False
        while True:
            if not text_done:  # a text position
                if ti >= len(text):
                    out.append(self.text_end)
                    text_done = True
                else:
                    out.extend(text[ti : ti + m])
                    ti += m
            if ai >= len(audio):  # an audio position with no audio left
                if not text_done:
                    out.extend(text[ti:])
                    out.append(self.text_end)
                break
            out.extend(audio[ai : ai + n])
            ai += n
        out.append(self.audio_end)
        return out

    def layout(
        self,
        segments: Sequence[Segment],
        layout: str,
        ratio: Sequence[int] | None = None,
        splice: str = "marker_preserving",
    ) -> list[int]:
        """Lay out an answer's segments as response ids.

        splice (how segments of a multi-state answer are joined):
          * ``marker_preserving``: each segment laid out alone, then concatenated;
          * ``marker_removal``: the same, with every ``audio_start`` but the first and every
            ``audio_end`` but the last removed (one marker pair spans the answer);
          * ``pre_interleaved``: all text joined and all audio joined first, then laid out
            once, so segment boundaries are lost inside the pattern.
        """
        if layout not in RESPONSE_LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        if splice not in SPLICES:
            raise ValueError(f"unknown splice {splice!r}; allowed: {', '.join(SPLICES)}")
        if layout == "interleaved":
            check_ratio(ratio)
        segments = list(segments)
        if not segments:
            raise ValueError("an answer needs at least one segment")
        for seg in segments:
            self._check_segment(seg)
        if splice == "pre_interleaved":
            text = [t for s in segments for t in s.text]
            audio = [a for s in segments for a in s.audio]
            return self._segment_ids(text, audio, layout, ratio)
        parts = [self._segment_ids(s.text, s.audio, layout, ratio) for s in segments]
        ids = [i for p in parts for i in p]
        if splice == "marker_removal" and layout != "text_only":
            first_start = ids.index(self.audio_start)
            last_end = len(ids) - 1 - ids[::-1].index(self.audio_end)
            ids = [
                i
                for k, i in enumerate(ids)
                if not ((i == self.audio_start and k != first_start) or (i == self.audio_end and k != last_end))
            ]
        return ids

    def _check_segment(self, seg: Segment) -> None:
        for t in seg.text:
            if t not in self.text_range:
                raise ValueError(f"segment text holds id {t}, which is not a text id ({self.text_range})")
        for a in seg.audio:
            if a not in self.audio_range:
                raise ValueError(f"segment audio holds id {a}, which is not an audio id ({self.audio_range})")

    def parse(self, ids: Sequence[int], layout: str, ratio: Sequence[int] | None = None) -> ParseResult:
        """Invert ``layout``: response ids -> segments, tolerant of model errors.

        Never raises on bad ids: what it cannot place goes to ``errors``. Parsing stops at
        ``eos``. Segment boundaries are recovered where the ids show them:
        ``audio_only`` per marker pair; ``text_first`` where text follows audio;
        ``interleaved`` where text follows a ``text_end``.
        """
        if layout not in RESPONSE_LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        if layout == "interleaved":
            check_ratio(ratio)
        segments: list[Segment] = []
        errors: list[str] = []
        cur: Segment | None = None
        in_audio = False  # inside audio_start ... audio_end
        closed = True  # the current segment takes no more ids (its audio_end was seen)
        text_closed = False  # interleaved / text_only: the current segment's text_end was seen

        def start_segment() -> Segment:
            nonlocal closed, text_closed
            seg = Segment()
            segments.append(seg)
            closed = text_closed = False
            return seg

        for pos, i in enumerate(ids):
            i = int(i)
            if i == self.eos:
                break
            if i == self.audio_start:
                if in_audio:
                    errors.append(f"pos {pos}: audio_start inside an open audio span")
                    continue
                in_audio = True
                if layout == "text_only":
                    errors.append(f"pos {pos}: audio_start in a text_only answer")
                elif layout != "text_first" or cur is None or closed or cur.audio:
                    cur = start_segment()  # text_first keeps the text it has just read
                continue
            if i == self.audio_end:
                if not in_audio:
                    errors.append(f"pos {pos}: audio_end without audio_start")
                    continue
                in_audio = False
                if layout == "interleaved" and not text_closed:
                    errors.append(f"pos {pos}: audio_end before text_end")
                closed = True
                continue
            if i == self.text_end:
                if layout not in ("interleaved", "text_only"):
                    errors.append(f"pos {pos}: text_end is not part of layout {layout}")
                    continue
                if cur is None or closed or text_closed:
                    # a second text_end opens a segment with no text (marker_removal)
                    cur = start_segment()
                text_closed = True
                continue
            if i in self.text_range:
                if layout == "audio_only":
                    errors.append(f"pos {pos}: text id {i} in an audio_only answer")
                    continue
                if cur is None or closed or text_closed or (layout == "text_first" and cur.audio):
                    cur = start_segment()
                cur.text.append(i)
                continue
            if i in self.audio_range:
                if layout == "text_only" or not in_audio:
                    errors.append(f"pos {pos}: audio id {i} outside audio_start ... audio_end")
                    continue
                if cur is None or closed:
                    cur = start_segment()
                cur.audio.append(i)
                continue
            errors.append(f"pos {pos}: unexpected id {i} ({self.describe(i)})")
        if in_audio:
            errors.append("answer ended inside an audio span (no audio_end)")
        if layout == "text_only" and segments and not text_closed:
            errors.append("answer ended without text_end")
        return ParseResult(segments=segments, errors=errors)

    def describe(self, i: int) -> str:
        """A readable name for an id, for error messages and debugging."""
        if 0 <= i < self.n_special:
            return SPECIALS[i]
        if i in self.text_range:
            return f"text:{i - self.text_range.start}"
        if i in self.linguistic_range:
            return f"ling:{i - self.audio_offset}"
        if i in self.semantic_range:
            return f"sem:{i - self.semantic_range.start}"
        return f"out-of-vocab:{i}"

    # ----- dialogues ----------------------------------------------------------------
    def dialogue(self, query_audio: Sequence[int], response: Sequence[int]) -> tuple[list[int], list[bool]]:
        """``bos human audio_start Q audio_end assistant R eos`` and its loss mask.

        The mask is True exactly on the response ids and the closing ``eos``: SFT and DPO
        learn the answer, never the question.
        """
        prompt = self.prompt(query_audio)
        ids = prompt + list(response) + [self.eos]
        mask = [False] * len(prompt) + [True] * (len(response) + 1)
        return ids, mask

    def prompt(self, query_audio: Sequence[int]) -> list[int]:
        """The dialogue up to and including ``assistant``: what generation starts from."""
        for a in query_audio:
            if a not in self.audio_range:
                raise ValueError(f"query holds id {a}, which is not an audio id")
        return [self.bos, self.human, self.audio_start, *query_audio, self.audio_end, self.assistant]
