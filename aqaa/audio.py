"""Waveform I/O and resampling (soundfile + torchaudio.functional)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

TOKENIZER_SR = 16_000  # both audio tokenizers read 16 kHz
VOCODER_SR = 24_000  # the vocoder writes 24 kHz


def as_tensor(wav) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav)
    if t.dim() == 2:  # (samples, channels) from soundfile or (channels, samples): mix down
        t = t.mean(dim=1 if t.shape[0] > t.shape[1] else 0)
    return t.float()


def resample(wav, orig_sr: int, new_sr: int) -> torch.Tensor:
    wav = as_tensor(wav)
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, orig_sr, new_sr)


def load_wav(path: str | Path, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Mono float waveform; resampled to ``sample_rate`` if given."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(data.mean(axis=1))
    if sample_rate is not None and sr != sample_rate:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def save_wav(path: str | Path, wav, sample_rate: int) -> None:
    """16-bit PCM WAV, written to a temporary name and renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.wav")
    data = as_tensor(wav).clamp(-1.0, 1.0).numpy()
    sf.write(str(tmp), data, sample_rate, subtype="PCM_16")
    os.replace(tmp, path)


def duration(path: str | Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate
