"""Log-mel features of 24 kHz speech, and Griffin-Lim: the untrained way back to a wave.

One ``MelConfig`` fixes the frame grid the whole vocoder shares: hop 240 samples at
24 kHz = 100 frames/s, so one linguistic code (16.67 Hz) spans 6 frames and one semantic
code (25 Hz) spans 4. Frame ``j`` is centred on sample ``j * hop`` (``center=True``), so a
clip of ``n`` samples has ``n // hop + 1`` frames and ``T`` frames decode to ``T * hop``
samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torchaudio.transforms as T

from ..audio import VOCODER_SR

LOG_FLOOR = 1e-5  # log(1e-5) = -11.5: the "silence" value of a log-mel bin


@dataclass
class MelConfig:
    sample_rate: int = VOCODER_SR
    n_fft: int = 1024
    hop: int = 240  # 10 ms: 100 frames/s
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 12_000.0

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


def n_frames(n_samples: int, hop: int = 240) -> int:
    return n_samples // hop + 1


class LogMel(nn.Module):
    """Waveform [..., samples] -> natural-log magnitude mel [..., n_mels, frames] (HiFi-GAN style)."""

    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = T.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.n_fft, hop_length=cfg.hop,
            f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=1.0, norm="slaney", mel_scale="slaney",
            center=True, pad_mode="reflect",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wav).clamp(min=LOG_FLOOR))


class GriffinLimVocoder(nn.Module):
    """Log-mel -> wave without training: least-squares inverse mel, then Griffin-Lim phase.

    The fallback when no generator was trained (``vocoder.generator=griffinlim``) and the
    reference the benchmark compares the trained generator against.
    """

    def __init__(self, cfg: MelConfig, n_iter: int = 32):
        super().__init__()
        self.cfg = cfg
        self.inverse_mel = T.InverseMelScale(
            n_stft=cfg.n_fft // 2 + 1, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, f_min=cfg.f_min,
            f_max=cfg.f_max, norm="slaney", mel_scale="slaney", driver="gelsd",
        )
        # rand_init=False: zero initial phase, so the fallback is deterministic without a seed.
        self.griffin_lim = T.GriffinLim(n_fft=cfg.n_fft, n_iter=n_iter, win_length=cfg.n_fft, hop_length=cfg.hop,
                                        power=1.0, rand_init=False)

    @torch.inference_mode()
    def forward(self, logmel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """[..., n_mels, T] -> [..., T * hop] (or ``length``) samples."""
        mag = self.inverse_mel(torch.exp(logmel.float()))
        # T frames re-analyse to T frames only at (T - 1) * hop samples; the rest is padding.
        natural = (logmel.shape[-1] - 1) * self.cfg.hop
        self.griffin_lim.length = natural
        wav = self.griffin_lim(mag)
        n = length if length is not None else logmel.shape[-1] * self.cfg.hop
        return torch.nn.functional.pad(wav, (0, n - natural)) if n > natural else wav[..., :n]
