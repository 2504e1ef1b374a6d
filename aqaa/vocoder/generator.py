"""Mel -> 24 kHz wave: a Vocos-style generator (ConvNeXt backbone, iSTFT head), and its losses.

The backbone runs at the mel frame rate (100 Hz) and predicts, per frame, the log
magnitude and the phase of every STFT bin; ``torch.istft`` turns them into samples. No
transposed convolutions at the sample rate, so it is cheap on a CPU (Vocos, Siuzdak 2023).
Trained here with multi-resolution STFT and mel losses only. No adversarial terms: they
need far more steps than a CPU budget allows to pay off. (APNet's anti-wrapping phase
losses against the true phase were tried too: in a few hundred CPU steps they did not
move the phase off chance level, so they are not kept.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mel import LogMel, MelConfig


@dataclass
class GeneratorConfig:
    n_mels: int = 80
    dim: int = 192
    intermediate: int = 576  # ConvNeXt expansion
    n_layers: int = 6
    n_fft: int = 1024  # iSTFT size; hop is the mel hop
    hop: int = 240


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        h = self.dwconv(x).transpose(1, 2)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Generator(nn.Module):
    """Log-mel [B, n_mels, T] -> waveform [B, T * hop] (or ``length``)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.intermediate, layer_scale=1 / cfg.n_layers) for _ in range(cfg.n_layers)
        )
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.n_fft + 2)  # log magnitude and phase of n_fft/2+1 bins
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def spectrum(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log magnitude, phase), each [B, n_fft/2+1, T], predicted from the mel."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)
        log_mag, phase = x.chunk(2, dim=1)
        return log_mag, phase

    def synthesize(self, log_mag: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        mag = torch.exp(log_mag).clamp(max=1e2)  # as Vocos: bounds the first steps' blow-ups
        # The phase is an unbounded angle used through cos/sin: no wrap-around to learn.
        return torch.istft(torch.polar(mag, phase), self.cfg.n_fft, hop_length=self.cfg.hop,
                           win_length=self.cfg.n_fft, window=self.window, center=True, length=length)

    def forward(self, mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        n = length if length is not None else mel.shape[-1] * self.cfg.hop
        return self.synthesize(*self.spectrum(mel), n)


# ----- losses ----------------------------------------------------------------------------


@dataclass
class STFTLossConfig:
    # (n_fft, hop, win) per resolution: ParallelWaveGAN's set, scaled to 24 kHz.
    resolutions: list[list[int]] = field(default_factory=lambda: [[512, 120, 480], [1024, 240, 960],
                                                                  [2048, 480, 1920]])


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions."""

    def __init__(self, resolutions=None):
        super().__init__()
        self.resolutions = [tuple(r) for r in (resolutions or STFTLossConfig().resolutions)]
        for n_fft, _, win in self.resolutions:
            self.register_buffer(f"win{n_fft}", torch.hann_window(win), persistent=False)

    def _mag(self, x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
        spec = torch.stft(x, n_fft, hop, win, getattr(self, f"win{n_fft}"), return_complex=True)
        return spec.abs().clamp(min=1e-7)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sc = mag = pred.new_zeros(())
        for n_fft, hop, win in self.resolutions:
            p, t = self._mag(pred, n_fft, hop, win), self._mag(target, n_fft, hop, win)
            sc = sc + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-7)
            mag = mag + F.l1_loss(torch.log(p), torch.log(t))
        k = len(self.resolutions)
        return sc / k, mag / k


class GeneratorLoss(nn.Module):
    """The generator's training objective: mel L1 + multi-resolution STFT."""

    def __init__(self, mel_cfg: MelConfig, mel_weight: float = 1.0):
        super().__init__()
        self.logmel = LogMel(mel_cfg)
        self.stft = MultiResolutionSTFTLoss()
        self.mel_weight = mel_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict:
        mel_l1 = F.l1_loss(self.logmel(pred), self.logmel(target))
        sc, mag = self.stft(pred, target)
        return {"loss": self.mel_weight * mel_l1 + sc + mag, "mel_l1": mel_l1, "stft_sc": sc, "stft_mag": mag}


def generator_config_dict(cfg: GeneratorConfig) -> dict:
    return asdict(cfg)
