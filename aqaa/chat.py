"""Spoken question in, spoken answer out: the product in one function.

``Assistant.load(backbone_dir)`` finds what the backbone was trained with by following
the artifacts' ``upstream`` links (backbone -> tokens -> tokenizer, corpus) and the
vocoder trained on that tokenizer's codes, and reads the output layout from the
backbone's ``config.yaml``. ``Assistant.answer(wav, sr)`` tokenizes the question,
generates in that layout (constrained, so the answer always parses), and vocodes each
answer segment as soon as its audio closes, so the first audio is ready before the
answer is finished (time to first audio is measured that way).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .artifacts import MARKER
from .text import ByteTokenizer
from .tokens import Vocab

SEGMENT_PAUSE_S = 0.15  # silence between answer segments, as in the corpus


def artifact_info(d: Path) -> dict:
    f = Path(d) / MARKER
    if not f.is_file():
        raise FileNotFoundError(f"{d} is not a complete artifact (no {MARKER})")
    return json.loads(f.read_text())


def find_upstream(d: str | Path, stage: str) -> Path:
    """The nearest artifact of ``stage`` that ``d`` was built from (breadth-first over the
    ``upstream`` links of artifact.json)."""
    queue, seen = [Path(d)], set()
    while queue:
        cur = queue.pop(0)
        if cur in seen:
            continue
        seen.add(cur)
        for ref in artifact_info(cur).get("upstream", {}).values():
            p = Path(ref)
            if p.name.startswith(f"{stage}-"):
                return p
            if (p / MARKER).is_file():
                queue.append(p)
    raise FileNotFoundError(f"{d}: no {stage} artifact among its inputs")


def find_vocoder(tokenizer_dir: Path, root: Path) -> Path:
    """A complete vocoder artifact under ``root`` trained on ``tokenizer_dir``'s codes
    (the one in latest.json if it qualifies, else the newest)."""
    def trained_on(v: Path) -> bool:
        try:
            return Path(artifact_info(v)["upstream"].get("tokenizer", "")).name == Path(tokenizer_dir).name
        except (FileNotFoundError, KeyError):
            return False

    latest = root / "latest.json"
    if latest.is_file():
        v = json.loads(latest.read_text()).get("vocoder")
        if v and trained_on(Path(v)):
            return Path(v)
    found = sorted((p for p in root.glob("vocoder-*") if trained_on(p)), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no vocoder trained on {tokenizer_dir} under {root}: run `aqaa train vocoder` "
                                "with the same experiment config")
    return found[-1]


@dataclass
class ChatResult:
    text: str
    segments: list[dict]  # per segment: text, seconds of audio
    audio: torch.Tensor  # 24 kHz
    sample_rate: int
    seconds_to_first_audio: float | None  # from the call (question in memory) to the first segment's waveform
    real_time_factor: float  # processing seconds per second of answer audio
    timings: dict = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"text": self.text, "segments": self.segments, "seconds_to_first_audio": self.seconds_to_first_audio,
                "real_time_factor": self.real_time_factor, "audio_seconds": len(self.audio) / self.sample_rate,
                "timings": self.timings, "parse_errors": self.parse_errors}


class Assistant:
    def __init__(self, model, vocab: Vocab, tokenizer, vocoder, layout: str, ratio, splice: str, streams: str,
                 backbone_dir: Path | None = None):
        self.model, self.vocab, self.tokenizer, self.vocoder = model.eval(), vocab, tokenizer, vocoder
        self.layout, self.ratio, self.splice, self.streams = layout, list(ratio) if ratio else None, splice, streams
        self.backbone_dir = backbone_dir
        self.text_tokenizer = ByteTokenizer()

    @classmethod
    def load(cls, backbone_dir: str | Path, checkpoints_root: str | Path | None = None,
             vocoder_dir: str | Path | None = None) -> "Assistant":
        """The backbone with its tokenizer and a vocoder trained on that tokenizer's codes
        (``vocoder_dir``, else ``find_vocoder`` under ``checkpoints_root``)."""
        from .model import load_model
        from .tokenizer import AudioTokenizer
        from .vocoder import Vocoder

        d = Path(backbone_dir)
        if not (d / "model.pt").is_file():
            raise FileNotFoundError(f"{d}: no model.pt: --checkpoint must be a backbone artifact "
                                    "(pretrain, sft1, sft2, dpo or merge)")
        cfg = OmegaConf.load(d / "config.yaml")
        tok_dir = find_upstream(d, "tokenizer")
        root = Path(checkpoints_root) if checkpoints_root else d.parent
        voc_dir = Path(vocoder_dir) if vocoder_dir else find_vocoder(tok_dir, root)
        tokenizer = AudioTokenizer.load(tok_dir)
        mc = json.loads((d / "model_config.json").read_text())
        vocab = Vocab(**mc["vocab"]) if "vocab" in mc else Vocab(cfg.text.size, cfg.audio_tokens.n_linguistic,
                                                                 cfg.audio_tokens.n_semantic)
        # The layout the backbone was trained on: model_config.json records it (SFT onwards);
        # the artifact's config.yaml is the fallback.
        lay = mc.get("layout") or {"layout": cfg.layout.layout, "ratio": list(cfg.layout.ratio),
                                   "splice": cfg.layout.splice}
        streams = mc.get("streams") or cfg.tokenizer.streams
        return cls(load_model(d), vocab, tokenizer, Vocoder.load(voc_dir), lay["layout"],
                   list(lay["ratio"]) if lay["layout"] == "interleaved" else None, lay["splice"], streams,
                   backbone_dir=d)

    def answer(self, wav: torch.Tensor, sample_rate: int, max_new_tokens: int = 600, temperature: float = 0.7,
               top_p: float = 0.9, seed: int | None = 0, steps: int | None = None,
               guidance: float | None = None) -> ChatResult:
        from .audio import VOCODER_SR
        from .generate import generate
        from .tokenizer.streams import audio_ids

        t0 = time.perf_counter()
        ling, sem = self.tokenizer.encode(wav, sample_rate)
        query = audio_ids(self.vocab, ling, sem, self.streams)
        t_tok = time.perf_counter() - t0

        # Vocode each segment's audio as soon as its audio_end arrives (segment-level streaming).
        pieces: list[torch.Tensor] = []
        first_audio: list[float] = []
        span: list[int] = []
        vocode_s = [0.0]

        def flush() -> None:
            if not span:
                return
            from .tokens import LING_PER_GROUP

            s_ling, s_sem = self.vocab.split_audio(span)
            if self.streams == "dual" and len(s_ling) >= LING_PER_GROUP:
                tv = time.perf_counter()
                pieces.append(self.vocoder.decode(s_ling, s_sem, steps=steps, guidance=guidance, seed=seed or 0))
                vocode_s[0] += time.perf_counter() - tv
                if not first_audio:
                    first_audio.append(time.perf_counter() - t0)
            span.clear()

        def on_token(i: int, kind: str) -> None:
            if self.vocab.is_audio(i):
                span.append(i)
            elif i == self.vocab.audio_end:
                flush()

        out = generate(self.model, self.vocab, self.vocab.prompt(query), layout=self.layout, ratio=self.ratio,
                       splice=self.splice, streams=self.streams, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=top_p, seed=seed, on_token=on_token)
        vocoded_while_generating = vocode_s[0]
        flush()
        total = time.perf_counter() - t0
        gap = torch.zeros(int(SEGMENT_PAUSE_S * VOCODER_SR))
        audio = torch.cat([x for p in pieces for x in (p, gap)][:-1]) if pieces else torch.zeros(0)
        segs = [{"text": self.text_tokenizer.from_ids(s.text, self.vocab),
                 "audio_seconds": round(len(s.audio) / (1e3 / 24), 3) if self.streams == "dual" else None}
                for s in out.segments]
        text = " ".join(s["text"].strip() for s in segs if s["text"].strip())
        seconds = len(audio) / VOCODER_SR
        return ChatResult(
            text=text, segments=segs, audio=audio, sample_rate=VOCODER_SR,
            seconds_to_first_audio=first_audio[0] if first_audio else None,
            real_time_factor=total / seconds if seconds > 0 else float("inf"),
            timings={"tokenize_s": round(t_tok, 4), "generate_s": round(out.seconds - vocoded_while_generating, 4),
                     "vocode_s": round(vocode_s[0], 4), "total_s": round(total, 4), "new_ids": len(out.ids)},
            ids=out.ids, parse_errors=out.parse.errors,
        )
