"""The two audio tokenizers as plain PyTorch modules (DESIGN.md section 2).

Both read log-mel frames of 16 kHz audio (hop 160 samples = 100 Hz), subsample them with
strided convolutions and run a small transformer:

* ``LinguisticTokenizer`` (Paraformer's role): 6x subsampling -> 16.67 Hz (hop 960
  samples), trained with CTC on characters; its final features are clustered by k-means
  into the linguistic codebook (``codebook`` buffer, filled after training). Its CTC head
  is also the suite's own recogniser.
* ``SemanticTokenizer`` (CosyVoice S3's role): 4x subsampling -> 25 Hz (hop 640),
  encoder -> VQ bottleneck -> post-VQ layer -> CTC head (content) and mel decoder
  (reconstruction: prosody and voice). Only the codes reach the heads, so whatever the
  heads need must be in the codes.

Frame counts are exact by design: a clip of S samples at 16 kHz gives
``n_codes(S, hop) = round(S / hop)`` codes (at least 1 for non-empty audio). The mel
input of each clip is cut or zero-padded to ``n_codes * stride`` frames, and activations
past a clip's end are zeroed after every convolution, so a clip encodes the same alone
or in a padded batch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

from .quantize import EMAVectorQuantizer, nearest_centroid
from .text import N_CLASSES

SAMPLE_RATE = 16_000
MEL_HOP = 160  # 10 ms


def n_codes(n_samples: int | torch.Tensor, hop: int):
    """Codes for a clip of ``n_samples`` at 16 kHz: round(n / hop), at least 1 if n > 0."""
    if torch.is_tensor(n_samples):
        n = torch.div(n_samples + hop // 2, hop, rounding_mode="floor")
        return torch.where(n_samples > 0, n.clamp(min=1), torch.zeros_like(n))
    return 0 if n_samples <= 0 else max(1, (int(n_samples) + hop // 2) // hop)


@dataclass
class EncoderConfig:
    n_mels: int = 80
    d_model: int = 144
    n_heads: int = 4
    n_layers: int = 2
    dropout: float = 0.0
    strides: list[int] = field(default_factory=lambda: [2, 3])  # product * MEL_HOP = code hop
    n_codes: int = 1024
    n_chars: int = N_CLASSES
    ctc_upsample: int = 3  # CTC positions per frame: characters come faster than 16.67 Hz

    @property
    def stride(self) -> int:
        return math.prod(self.strides)

    @property
    def hop(self) -> int:
        return self.stride * MEL_HOP


@dataclass
class SemanticConfig(EncoderConfig):
    strides: list[int] = field(default_factory=lambda: [2, 2])  # 4 * 160 = 640 samples, 25 Hz
    n_codes: int = 4096
    ctc_upsample: int = 2
    vq_dim: int = 32
    vq_decay: float = 0.99
    vq_commitment: float = 0.25
    vq_warmup: int = 150  # steps before codes are used (the encoder learns first)
    vq_restart_every: int = 5
    vq_dead_after: int = 20  # steps unused before a code is restarted
    n_post_layers: int = 1  # transformer layers after the VQ (shared by both heads)
    decoder_dim: int = 96


def config_dict(cfg) -> dict:
    return asdict(cfg)


# ----- front end ------------------------------------------------------------------------


class LogMel(nn.Module):
    """Waveforms [B, S] -> raw log-mel [B, F, n_mels] with F = S // 160 + 1 (frame i centred
    on sample 160 i). Zero padding instead of reflection, so a clip's frames do not depend
    on what follows it in a batch."""

    def __init__(self, n_mels: int = 80, n_fft: int = 400):
        super().__init__()
        self.n_fft = n_fft
        self.mel = torchaudio.transforms.MelSpectrogram(
            SAMPLE_RATE, n_fft=n_fft, win_length=n_fft, hop_length=MEL_HOP, n_mels=n_mels, center=False
        )

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        steps = torch.arange(wav.shape[1], device=wav.device)
        wav = wav * (steps[None] < lengths[:, None].to(wav.device))  # silence past each end
        x = F.pad(wav, (self.n_fft // 2, self.n_fft // 2))
        mel = self.mel(x).clamp(min=1e-10).log().transpose(1, 2)
        return mel, lengths // MEL_HOP + 1


# ----- encoder ------------------------------------------------------------------------


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] True on valid positions."""
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]


class ConvSubsample(nn.Module):
    """Strided 1-D convolutions (odd kernel 2s+1, padding s: ceil(L / s) frames out) and one
    stride-1 layer; activations past each clip's end are zeroed after every layer."""

    def __init__(self, n_in: int, d: int, strides: list[int]):
        super().__init__()
        self.strides = list(strides)
        chans = [n_in] + [d] * len(self.strides)
        self.convs = nn.ModuleList(
            nn.Conv1d(chans[i], chans[i + 1], 2 * s + 1, stride=s, padding=s) for i, s in enumerate(self.strides)
        )
        self.mix = nn.Conv1d(d, d, 3, padding=1)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x [B, T * stride, n_in] (already zero past each end); lengths: output frames
        x = x.transpose(1, 2)
        total = math.prod(self.strides)
        for conv, s in zip(self.convs, self.strides):
            total //= s
            x = F.gelu(conv(x))
            x = x * length_mask(lengths * total, x.shape[-1])[:, None]
        x = F.gelu(self.mix(x)) * length_mask(lengths, x.shape[-1])[:, None]
        return self.norm(x.transpose(1, 2))


class Transformer(nn.Module):
    def __init__(self, d: int, n_heads: int, n_layers: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d, n_heads, 4 * d, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layers(x, src_key_padding_mask=~mask)


class _Base(nn.Module):
    """Shared front half: normalised log-mel -> subsampled frames -> transformer."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.frontend = LogMel(cfg.n_mels)
        # Per-bin log-mel statistics of the training audio (set before training).
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.subsample = ConvSubsample(cfg.n_mels, cfg.d_model, cfg.strides)
        self.encoder = Transformer(cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.dropout)
        self.ctc_head = nn.Linear(cfg.d_model, cfg.ctc_upsample * cfg.n_chars)

    def code_lengths(self, n_samples: torch.Tensor) -> torch.Tensor:
        return n_codes(n_samples, self.cfg.hop)

    def prepare(self, mel: torch.Tensor, n_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw log-mel [B, F, n_mels] -> normalised, cut/padded to code_len * stride frames."""
        lengths = self.code_lengths(n_samples.to(mel.device))
        frames = int(lengths.max()) * self.cfg.stride if len(lengths) else 0
        x = (mel - self.mel_mean) / self.mel_std
        x = x[:, :frames] if x.shape[1] >= frames else F.pad(x, (0, 0, 0, frames - x.shape[1]))
        x = x * length_mask(lengths * self.cfg.stride, frames)[..., None]
        return x, lengths

    def encode(self, mel: torch.Tensor, n_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> features [B, T, d], code lengths [B], mask [B, T]."""
        x, lengths = self.prepare(mel, n_samples)
        mask = length_mask(lengths, x.shape[1] // self.cfg.stride)
        h = self.subsample(x, lengths)
        h = h + sinusoids(h.shape[1], h.shape[2], h.device)
        return self.encoder(h, mask), lengths, mask

    def ctc_logits(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, d] -> log-probs [B, T * up, n_chars] and their lengths."""
        B, T, _ = h.shape
        up = self.cfg.ctc_upsample
        logits = self.ctc_head(h).reshape(B, T * up, self.cfg.n_chars)
        return logits.log_softmax(-1), lengths * up

    def ctc_loss(self, h, lengths, targets, target_lengths) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp, out_lengths = self.ctc_logits(h, lengths)
        # zero_infinity: a clip spoken faster than the CTC rate allows is skipped, not NaN.
        loss = F.ctc_loss(logp.transpose(0, 1), targets, out_lengths, target_lengths,
                          blank=0, reduction="mean", zero_infinity=True)
        return loss, logp, out_lengths


class LinguisticTokenizer(_Base):
    """CTC encoder at 16.67 Hz; codes are the nearest k-means centroid of its features."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__(cfg)
        self.register_buffer("codebook", torch.zeros(cfg.n_codes, cfg.d_model))

    def forward(self, mel, n_samples, targets, target_lengths) -> dict:
        h, lengths, mask = self.encode(mel, n_samples)
        loss, logp, out_lengths = self.ctc_loss(h, lengths, targets, target_lengths)
        return {"loss": loss, "ctc": loss.detach(), "logp": logp, "logp_lengths": out_lengths,
                "features": h, "lengths": lengths, "mask": mask}

    @torch.no_grad()
    def tokenize(self, mel, n_samples) -> tuple[torch.Tensor, torch.Tensor]:
        h, lengths, _ = self.encode(mel, n_samples)
        codes = nearest_centroid(h.reshape(-1, h.shape[-1]), self.codebook).reshape(h.shape[:2])
        return codes, lengths


class SemanticTokenizer(_Base):
    """Encoder -> VQ (EMA, restarts) -> post layer -> CTC head + mel reconstruction.

    Losses (weighted in the LightningModule):

    * ``ctc_enc``: CTC on the encoder output before the VQ, so the encoder learns content
      early instead of waiting for gradients through an untrained bottleneck;
    * ``feat``: the post-VQ layers rebuild the encoder's features from the codes alone;
    * ``ctc``: the same CTC head on those rebuilt features (after the VQ warm-up): what
      the codes carry; its CER is the semantic CER reported. Sharing the head means the
      post-VQ path maps codes back into a space the head already reads, instead of
      climbing CTC's all-blank plateau a second time (which it did not, in 300 steps);
    * ``recon``: L1 on the normalised log-mel rebuilt from the codes (prosody, voice);
    * ``commit``: VQ commitment.
    """

    def __init__(self, cfg: SemanticConfig):
        super().__init__(cfg)
        d = cfg.d_model
        self.pre_vq = nn.Linear(d, cfg.vq_dim)
        self.vq = EMAVectorQuantizer(
            cfg.n_codes, cfg.vq_dim, decay=cfg.vq_decay, commitment=cfg.vq_commitment,
            warmup=cfg.vq_warmup, restart_every=cfg.vq_restart_every, dead_after=cfg.vq_dead_after,
        )
        self.post_vq = nn.Linear(cfg.vq_dim, d)
        self.post = Transformer(d, cfg.n_heads, cfg.n_post_layers, cfg.dropout)
        # Mel decoder: 4x transposed-conv upsampling back to 100 Hz, then two conv layers.
        dd = cfg.decoder_dim
        self.dec_in = nn.ConvTranspose1d(d, dd, 2 * cfg.stride, stride=cfg.stride, padding=cfg.stride // 2)
        self.dec = nn.Sequential(nn.GELU(), nn.Conv1d(dd, dd, 5, padding=2), nn.GELU(),
                                 nn.Conv1d(dd, dd, 5, padding=2), nn.GELU(), nn.Conv1d(dd, cfg.n_mels, 1))

    def quantize(self, mel, n_samples):
        h, lengths, mask = self.encode(mel, n_samples)
        zq, codes, commit = self.vq(self.pre_vq(h), mask)
        return zq, codes, commit, lengths, mask, h

    def heads(self, zq, lengths, mask):
        """What the codes alone carry: post-VQ features and reconstructed (normalised) mel."""
        g = self.post(self.post_vq(zq), mask)
        g = g * mask[..., None]
        mel_hat = self.dec(self.dec_in(g.transpose(1, 2))).transpose(1, 2)
        return g, mel_hat

    def forward(self, mel, n_samples, targets, target_lengths) -> dict:
        zq, codes, commit, lengths, mask, h = self.quantize(mel, n_samples)
        g, mel_hat = self.heads(zq, lengths, mask)
        warm = self.training and self.vq.steps <= self.vq.warmup  # (steps counts this batch already)
        ctc_enc, _, _ = self.ctc_loss(h, lengths, targets, target_lengths)
        # The codes must let the post layers rebuild the encoder's (CTC-trained) features...
        feat = ((g - h.detach()).pow(2).mean(-1) * mask).sum() / mask.sum().clamp(min=1)
        # ...which the shared CTC head then reads; not before the codes exist.
        ctc, logp, out_lengths = self.ctc_loss(g.detach() if warm else g, lengths, targets, target_lengths)
        if warm:
            ctc = ctc.detach()
        target, _ = self.prepare(mel, n_samples)
        fmask = length_mask(lengths * self.cfg.stride, target.shape[1])
        recon = ((mel_hat - target).abs().mean(-1) * fmask).sum() / fmask.sum().clamp(min=1)
        return {"ctc": ctc, "ctc_enc": ctc_enc, "feat": feat, "recon": recon, "commit": commit, "codes": codes, "mask": mask,
                "logp": logp, "logp_lengths": out_lengths, "lengths": lengths}

    @torch.no_grad()
    def tokenize(self, mel, n_samples) -> tuple[torch.Tensor, torch.Tensor]:
        h, lengths, _ = self.encode(mel, n_samples)
        z = F.normalize(self.pre_vq(h), dim=-1)
        codes = self.vq.nearest(z.reshape(-1, z.shape[-1])).reshape(h.shape[:2])
        return codes, lengths
