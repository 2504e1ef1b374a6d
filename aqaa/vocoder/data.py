"""Training data of the vocoder: the assistant's answers as (codes, log-mel, 24 kHz wave).

Codes come from the tokens artifact (``aqaa data tokenize``), so training never runs the
tokenizer; waves are the corpus' 24 kHz answer files. Everything is loaded once into
memory (minutes of audio) and cropped at random per step:

* ``FlowCrops``: whole 120 ms token groups (2 linguistic + 3 semantic codes = 12 mel
  frames), so codes and frames stay aligned in every crop;
* ``WaveCrops``: fixed-length wave segments; the mel is computed from the crop itself.

Besides the dialogues' answers, the train split's rejected answers of preference pairs
are used too (``with_pairs``): the same assistant voice saying other words or the same
words in another voice state, which doubles the data at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ..audio import VOCODER_SR, load_wav
from ..corpus.manifest import read_dialogues, read_pairs
from .flow import LING_UP
from .mel import LOG_FLOOR, LogMel, MelConfig

FRAMES_PER_GROUP = 2 * LING_UP  # 2 linguistic codes = 3 semantic codes = 12 frames = 120 ms


@dataclass
class Clip:
    id: str
    text: str
    ling: torch.Tensor  # [L] long
    sem: torch.Tensor  # [S] long
    mel: torch.Tensor  # [n_mels, 6 L]: cut or padded (with silence) to the codes' duration
    wav: torch.Tensor  # [samples] at 24 kHz

    @property
    def groups(self) -> int:
        return min(len(self.ling) // 2, len(self.sem) // 3)


def _sources(corpus_dir: Path, tokens_dir: Path, split: str, with_pairs: bool):
    """(id, text, 24 kHz path relative to the corpus, codes) of every usable clip."""
    from ..tokenizer import load_tokens

    rows = {d.id: d for d in read_dialogues(corpus_dir, split)}
    for t in load_tokens(tokens_dir, split)["dialogues"]:
        d = rows.get(t["id"])
        if d is not None and d.answer_audio_24k:
            yield d.id, d.answer_text, d.answer_audio_24k, t.get("answer")
    if not with_pairs:
        return
    pairs = {p.id: p for p in read_pairs(corpus_dir, split)}
    if not pairs:
        return
    for t in load_tokens(tokens_dir, split, pairs=True)["pairs"]:
        p = pairs.get(t["id"])
        # The chosen answer is the dialogue's own; the rejected one is new audio of the same voice.
        if p is not None and p.rejected_audio and p.rejected_audio.endswith(".16k.wav"):
            rel = p.rejected_audio[: -len(".16k.wav")] + ".24k.wav"
            if (corpus_dir / rel).is_file():
                yield f"{p.id}-rejected", " ".join(s.text for s in p.rejected), rel, t.get("rejected_audio")


def load_clips(corpus_dir: str | Path, tokens_dir: str | Path, split: str, mel_cfg: MelConfig,
               limit: int | None = None, progress: bool = False, with_pairs: bool = False) -> list[Clip]:
    """Answers of ``split`` (and with ``with_pairs`` the rejected answers of its preference
    pairs) that have 24 kHz audio and codes, with their log-mels."""
    corpus_dir = Path(corpus_dir)
    sources = list(_sources(corpus_dir, Path(tokens_dir), split, with_pairs))
    logmel = LogMel(mel_cfg)
    clips = []
    for cid, text, rel, codes in tqdm(sources[:limit] if limit else sources, desc=f"vocoder data {split}",
                                      disable=not progress):
        if not codes or not codes["ling"] or not codes["sem"]:
            continue
        path = corpus_dir / rel
        if not path.is_file():
            raise FileNotFoundError(f"corpus {corpus_dir}: answer audio of {cid} is missing: {rel}")
        wav, _ = load_wav(path, VOCODER_SR)
        ling = torch.tensor(codes["ling"], dtype=torch.long)
        sem = torch.tensor(codes["sem"], dtype=torch.long)
        with torch.no_grad():
            mel = logmel(wav)
        T = len(ling) * LING_UP
        if mel.shape[1] < T:
            mel = torch.cat([mel, torch.full((mel.shape[0], T - mel.shape[1]), torch.log(torch.tensor(LOG_FLOOR)))], 1)
        clips.append(Clip(cid, text, ling, sem, mel[:, :T].contiguous(), wav))
    return clips


def code_vectors(tokenizer_dir: str | Path, log=print) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The tokenizer's own code vectors: linguistic k-means centroids and semantic VQ codes.

    Codes that are close in the tokenizer's space sound alike, so embeddings built from
    these vectors generalise to codes seen once or never in a few minutes of training
    audio; free per-code embeddings cannot. ``AudioTokenizer`` has no public accessor
    for them: they are read from its state dicts (``codebook`` of the linguistic net,
    ``vq.embed`` of the semantic one) without building the nets, and None is returned
    (plain embeddings are used) if that layout changes.
    """
    from ..tokenizer.audio_tokenizer import LING_FILE, SEM_FILE

    d = Path(tokenizer_dir)
    try:
        ling = torch.load(d / LING_FILE, map_location="cpu", weights_only=True)["codebook"]
        sem = torch.load(d / SEM_FILE, map_location="cpu", weights_only=True)["vq.embed"]
    except (FileNotFoundError, KeyError) as e:
        log(f"vocoder: no code vectors in tokenizer {d} ({e!r}); using plain code embeddings")
        return None
    if ling.dim() != 2 or sem.dim() != 2 or not (ling.abs().sum() > 0):
        log(f"vocoder: tokenizer {d} code vectors look unusable; using plain code embeddings")
        return None
    return ling.float().clone(), sem.float().clone()


def mel_stats(clips: list[Clip]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std [n_mels, 1] over all frames (the flow's normalisation)."""
    frames = torch.cat([c.mel for c in clips], dim=1)
    return frames.mean(dim=1, keepdim=True), frames.std(dim=1, keepdim=True).clamp(min=1e-3)


class FlowCrops(Dataset):
    """A random crop of ``crop_groups`` token groups per clip and epoch (whole clip if shorter)."""

    def __init__(self, clips: list[Clip], crop_groups: int, random: bool = True):
        self.clips = [c for c in clips if c.groups > 0]
        self.crop_groups = crop_groups
        self.random = random

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        c = self.clips[i]
        n = min(self.crop_groups, c.groups)
        g0 = int(torch.randint(0, c.groups - n + 1, ())) if self.random else 0
        f0 = g0 * FRAMES_PER_GROUP
        return {"ling": c.ling[2 * g0: 2 * (g0 + n)], "sem": c.sem[3 * g0: 3 * (g0 + n)],
                "mel": c.mel[:, f0: f0 + n * FRAMES_PER_GROUP]}


def collate_flow(items: list[dict]) -> dict:
    B = len(items)
    L = max(len(it["ling"]) for it in items)
    S = max(len(it["sem"]) for it in items)
    T = max(it["mel"].shape[1] for it in items)
    n_mels = items[0]["mel"].shape[0]
    ling = torch.zeros(B, L, dtype=torch.long)
    sem = torch.zeros(B, S, dtype=torch.long)
    mel = torch.zeros(B, n_mels, T)
    mask = torch.zeros(B, 1, T)
    for k, it in enumerate(items):
        ling[k, : len(it["ling"])] = it["ling"]
        sem[k, : len(it["sem"])] = it["sem"]
        t = it["mel"].shape[1]
        mel[k, :, :t] = it["mel"]
        mask[k, :, :t] = 1
    return {"ling": ling, "sem": sem, "mel": mel, "mask": mask}


class WaveCrops(Dataset):
    """A random ``segment``-sample crop per clip and epoch (zero-padded if the clip is shorter)."""

    def __init__(self, clips: list[Clip], segment: int, random: bool = True):
        self.wavs = [c.wav for c in clips if len(c.wav) > 0]
        self.segment = segment
        self.random = random

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, i: int) -> torch.Tensor:
        w = self.wavs[i]
        if len(w) <= self.segment:
            return torch.nn.functional.pad(w, (0, self.segment - len(w)))
        s = int(torch.randint(0, len(w) - self.segment + 1, ())) if self.random else 0
        return w[s: s + self.segment]
