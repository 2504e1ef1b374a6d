"""Tokens -> mel by conditional flow matching (Matcha-TTS / CosyVoice style), plain PyTorch.

* ``TokenEncoder``: linguistic (16.67 Hz) and semantic (25 Hz) code embeddings, repeated
  to a common 50 Hz grid (x3 and x2) and summed, a few ResNet-1D and transformer layers
  there (half the frames of the mel: cheaper), then upsampled x2 to the mel's 100 Hz and
  projected to ``mu``: a first, blurry mel estimate that conditions the flow.
* ``UNet1D``: the vector field estimator v(x_t, mu, t): a 1-D U-Net of ResNet blocks and
  transformer blocks with a sinusoidal time embedding (Matcha's decoder, smaller).
* ``TokenToMel``: optimal-transport CFM around them. Training draws t, noise x0 and fits
  the field to ``u = x1 - (1 - sigma_min) x0`` at ``x_t = (1 - (1 - sigma_min) t) x0 + t x1``;
  the condition is dropped (mu = 0) with probability ``cond_dropout`` so one net also
  knows the unconditional field, for classifier-free guidance. Sampling integrates the
  ODE from noise with Euler steps on CosyVoice's cosine time grid.

Why the field is parametrised through an estimate of x1 (a departure from Matcha, which
lets the U-Net output v directly): the optimal field near t = 1 is ``(x1 - x_t) / (1 - t)``,
a t-scaled difference a small U-Net learns only after very many steps; in a CPU budget of
minutes such a net leaves most of the noise in its samples. Here the U-Net predicts the
mel's detail on top of the encoder's ``mu`` (``x1_hat = mu + F(x_t, mu, t)``, F starting at
zero), and v follows in closed form from x1_hat and x_t. The loss is the squared velocity
error weighted by ``(1 - (1 - sigma_min) t)^2``, which equals the squared error of x1_hat, so
no t dominates. The optimum is the same field; an untrained F already samples ``mu``.

Mels are normalised per bin with the training set's mean and std (buffers saved with
the weights), so the noise and the data have a similar scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

LING_UP = 6  # mel frames per linguistic code (100 Hz / 16.67 Hz)
SEM_UP = 4  # mel frames per semantic code (100 Hz / 25 Hz)


@dataclass
class FlowConfig:
    n_linguistic: int = 1024
    n_semantic: int = 4096
    n_mels: int = 80
    d_enc: int = 128  # token encoder width
    ling_vec_dim: int = 0  # > 0: codes are embedded from these fixed vectors (the tokenizer's codebooks)
    sem_vec_dim: int = 0
    enc_res_blocks: int = 2  # ResNet-1D blocks of the token encoder (50 Hz)
    enc_layers: int = 2  # transformer layers of the token encoder (50 Hz)
    n_heads: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 128])  # U-Net width per level (x2 down each)
    transformers: list[int] = field(default_factory=lambda: [0, 1])  # transformer blocks per level's block
    n_mid: int = 1  # U-Net middle blocks (ResNet + the last level's transformers)
    time_dim: int = 128
    sigma_min: float = 1e-4
    cond_dropout: float = 0.2


# ----- building blocks (Matcha-TTS decoder, trimmed) --------------------------------------


class SinusoidalTimeEmbedding(nn.Module):
    def __init__(self, dim: int, scale: float = 1000.0):
        super().__init__()
        self.dim, self.scale = dim, scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B] in [0, 1] -> [B, dim]
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / max(half - 1, 1))
        x = self.scale * t[:, None].float() * freqs[None]
        return torch.cat([x.sin(), x.cos()], dim=-1)


class Block1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x * mask))) * mask


class ResnetBlock1D(nn.Module):
    """Two conv blocks with the time embedding added in between, and a 1x1 residual."""

    def __init__(self, dim: int, dim_out: int, time_dim: int | None = None, groups: int = 8):
        super().__init__()
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out)) if time_dim else None
        self.block1 = Block1D(dim, dim_out, groups)
        self.block2 = Block1D(dim_out, dim_out, groups)
        self.res = nn.Conv1d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x, mask)
        if self.time is not None:
            h = h + self.time(t)[:, :, None]
        return self.block2(h, mask) + self.res(x * mask)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + GELU feed-forward over [B, C, T] with a padding mask.

    No positional encoding: the convolutions around it already tell positions apart.
    """

    def __init__(self, dim: int, n_heads: int, ff_mult: int = 4):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"width {dim} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # [B, T, C]
        B, T, C = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        # Padded keys are never attended to; an unpadded batch (inference) needs no mask.
        keep = None if bool(mask.all()) else mask.bool()[:, None, :, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        h = h + self.out(a.transpose(1, 2).reshape(B, T, C))
        h = h + self.ff(self.norm2(h))
        return h.transpose(1, 2) * mask


# ----- token encoder -----------------------------------------------------------------------


class CodeEmbedding(nn.Module):
    """Code -> vector: a projection of a fixed code vector (when given) plus a free embedding.

    With fixed vectors (the tokenizer's codebook, standardised) the free part starts at
    zero and only corrects codes it sees; rare codes rely on their neighbours' projection.
    """

    def __init__(self, n_codes: int, dim: int, vec_dim: int = 0):
        super().__init__()
        self.free = nn.Embedding(n_codes, dim)
        self.proj = None
        if vec_dim:
            self.register_buffer("vectors", torch.zeros(n_codes, vec_dim))
            self.proj = nn.Linear(vec_dim, dim)
            nn.init.zeros_(self.free.weight)

    @torch.no_grad()
    def set_vectors(self, vectors: torch.Tensor) -> None:
        v = vectors.float()
        self.vectors.copy_((v - v.mean(0)) / v.std(0).clamp(min=1e-6))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        e = self.free(codes)
        return e + self.proj(F.embedding(codes, self.vectors)) if self.proj is not None else e


class TokenEncoder(nn.Module):
    """(linguistic codes [B, L], semantic codes [B, S]) -> mu [B, n_mels, T] at 100 Hz."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.ling = CodeEmbedding(cfg.n_linguistic, cfg.d_enc, cfg.ling_vec_dim)
        self.sem = CodeEmbedding(cfg.n_semantic, cfg.d_enc, cfg.sem_vec_dim)
        self.res = nn.ModuleList(ResnetBlock1D(cfg.d_enc, cfg.d_enc) for _ in range(cfg.enc_res_blocks))
        self.layers = nn.ModuleList(TransformerBlock(cfg.d_enc, cfg.n_heads) for _ in range(cfg.enc_layers))
        self.post = ResnetBlock1D(cfg.d_enc, cfg.d_enc)  # after the x2 upsampling to 100 Hz
        self.proj = nn.Conv1d(cfg.d_enc, cfg.n_mels, 1)

    @staticmethod
    def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
        """Cut or extend (repeating the last frame) [B, T, C] to n frames."""
        if x.shape[1] >= n:
            return x[:, :n]
        return torch.cat([x, x[:, -1:].expand(-1, n - x.shape[1], -1)], dim=1)

    def forward(self, ling: torch.Tensor, sem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` [B, 1, T] marks the valid mel frames (T even)."""
        T = mask.shape[-1]
        half = (T + 1) // 2
        # On a 50 Hz grid a linguistic code spans 3 steps and a semantic one 2.
        h = self._fit(self.ling(ling).repeat_interleave(LING_UP // 2, dim=1), half)
        h = h + self._fit(self.sem(sem).repeat_interleave(SEM_UP // 2, dim=1), half)
        h = h.transpose(1, 2)
        m50 = mask[:, :, ::2]
        for block in self.res:
            h = block(h, m50)
        for layer in self.layers:
            h = layer(h, m50)
        h = h.repeat_interleave(2, dim=2)[:, :, :T]
        h = self.post(h, mask)
        return self.proj(h) * mask


# ----- vector field estimator ----------------------------------------------------------------


class UNet1D(nn.Module):
    """F(x_t, mask, mu, t) for x_t, mu [B, n_mels, T]: the mel's detail beyond mu (see
    ``TokenToMel.velocity``); Matcha-TTS's decoder layout."""

    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.time_emb = SinusoidalTimeEmbedding(cfg.time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.time_dim, 4 * cfg.time_dim), nn.SiLU(),
                                      nn.Linear(4 * cfg.time_dim, cfg.time_dim))
        chans = list(cfg.channels)
        self.n_down = len(chans) - 1

        if len(cfg.transformers) != len(chans):
            raise ValueError(f"transformers {cfg.transformers} needs one count per level of channels {chans}")

        def tfs(dim: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(TransformerBlock(dim, cfg.n_heads) for _ in range(n))

        self.down = nn.ModuleList()
        c_in = 2 * cfg.n_mels  # x_t and mu, stacked
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            down = nn.Conv1d(c, c, 3, padding=1) if last else nn.Conv1d(c, c, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([ResnetBlock1D(c_in, c, cfg.time_dim), tfs(c, cfg.transformers[i]), down]))
            c_in = c
        self.mid = nn.ModuleList(
            nn.ModuleList([ResnetBlock1D(chans[-1], chans[-1], cfg.time_dim), tfs(chans[-1], cfg.transformers[-1])])
            for _ in range(cfg.n_mid)
        )
        self.up = nn.ModuleList()
        rev = chans[::-1] + [chans[0]]
        n_tf = cfg.transformers[::-1]  # up block i runs at the resolution of level n-1-i
        for i in range(len(chans)):
            c, c_out = rev[i], rev[i + 1]
            # Upsampling: nearest x2 then a 3-tap conv (mkldnn's fast path; ConvTranspose1d is not).
            self.up.append(nn.ModuleList([ResnetBlock1D(2 * c, c_out, cfg.time_dim), tfs(c_out, n_tf[i]),
                                          nn.Conv1d(c_out, c_out, 3, padding=1)]))
        self.final = Block1D(chans[0], chans[0])
        self.proj = nn.Conv1d(chans[0], cfg.n_mels, 1)
        nn.init.zeros_(self.proj.weight)  # F = 0 at the start: samples begin as the encoder's mu
        nn.init.zeros_(self.proj.bias)
        self.calls = 0  # forward passes since the last reset: how many times the field was evaluated
        self.rows = 0  # (x_t, condition) pairs evaluated: the solver's NFE counting CFG's extra pass

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        # Pad T to a multiple of 2**n_down so every down/up-sampling is exact.
        T = x.shape[-1]
        pad = (-T) % (2 ** self.n_down)
        if pad:
            x, mu, mask = (F.pad(a, (0, pad)) for a in (x, mu, mask))
        temb = self.time_mlp(self.time_emb(t))
        h = torch.cat([x, mu], dim=1)
        masks, skips = [mask], []
        for i, (resnet, tfs, down) in enumerate(self.down):
            m = masks[-1]
            h = resnet(h, m, temb)
            for tf in tfs:
                h = tf(h, m)
            skips.append(h)
            h = down(h * m)
            masks.append(m[:, :, ::2] if i < self.n_down else m)  # the last level does not downsample
        masks.pop()
        m = masks[-1]
        for resnet, tfs in self.mid:
            h = resnet(h, m, temb)
            for tf in tfs:
                h = tf(h, m)
        for i, (resnet, tfs, up) in enumerate(self.up):
            m = masks.pop()
            h = resnet(torch.cat([h[:, :, : m.shape[-1]], skips.pop()], dim=1), m, temb)
            for tf in tfs:
                h = tf(h, m)
            if i < self.n_down:
                h = h.repeat_interleave(2, dim=2)
            h = up(h * masks[-1] if i < self.n_down else h * m)
        out = self.proj(self.final(h, mask)) * mask
        return out[:, :, :T]


# ----- the flow --------------------------------------------------------------------------


def cosine_grid(steps: int, device=None) -> torch.Tensor:
    """CosyVoice's time grid: t = 1 - cos(s * pi / 2), denser near the noise end."""
    s = torch.linspace(0, 1, steps + 1, device=device)
    return 1 - torch.cos(s * math.pi / 2)


class TokenToMel(nn.Module):
    def __init__(self, cfg: FlowConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = TokenEncoder(cfg)
        self.estimator = UNet1D(cfg)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels, 1))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels, 1))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean) / self.mel_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mel_std + self.mel_mean

    def loss(self, ling: torch.Tensor, sem: torch.Tensor, mel: torch.Tensor, mask: torch.Tensor) -> dict:
        """CFM loss (+ the encoder's prior loss) for a batch; mel [B, n_mels, T] in log units."""
        x1 = self.normalize(mel) * mask
        mu = self.encoder(ling, sem, mask)
        n = mask.sum() * x1.shape[1]
        prior = ((mu - x1) ** 2 * mask).sum() / n  # mu alone is a (blurry) mel: fast first progress
        B = x1.shape[0]
        t = 1 - torch.cos(torch.rand(B, device=x1.device) * math.pi / 2)  # cosine-warped, as at sampling
        x0 = torch.randn_like(x1)
        tt = t[:, None, None]
        xt = (1 - (1 - self.cfg.sigma_min) * tt) * x0 + tt * x1
        u = x1 - (1 - self.cfg.sigma_min) * x0
        keep = (torch.rand(B, device=x1.device) >= self.cfg.cond_dropout).float()[:, None, None]
        v = self.velocity(xt, mask, mu * keep, t)
        w = (1 - (1 - self.cfg.sigma_min) * tt) ** 2  # see the module docstring
        cfm = (w * (v - u) ** 2 * mask).sum() / n
        return {"cfm": cfm, "prior": prior}

    def velocity(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x_t, mu, t) from the estimator's estimate of the clean mel, x1_hat = mu + F."""
        tt = t.reshape(-1, 1, 1)
        x1 = mu + self.estimator(x, mask, mu, t)
        x0 = (x - tt * x1) / (1 - (1 - self.cfg.sigma_min) * tt)
        return (x1 - (1 - self.cfg.sigma_min) * x0) * mask

    @torch.inference_mode()
    def sample(self, ling: torch.Tensor, sem: torch.Tensor, mask: torch.Tensor, steps: int = 10,
               guidance: float = 0.0, temperature: float = 1.0, generator: torch.Generator | None = None,
               return_mu: bool = False):
        """Euler integration from noise to a log-mel [B, n_mels, T].

        guidance w > 0 mixes the conditional and unconditional fields as
        ``(1 + w) v(x, mu) - w v(x, 0)``, at the cost of a second evaluation per step
        (batched with the first).
        """
        mu = self.encoder(ling, sem, mask)
        B, C, T = mu.shape
        x = torch.randn(B, C, T, generator=generator, device=mu.device) * temperature * mask
        grid = cosine_grid(steps, device=mu.device)
        for i in range(steps):
            t, dt = grid[i], grid[i + 1] - grid[i]
            if guidance:
                v = self.velocity(torch.cat([x, x]), torch.cat([mask, mask]), torch.cat([mu, torch.zeros_like(mu)]),
                                  t.expand(2 * B))
                v_cond, v_uncond = v.chunk(2)
                v = (1 + guidance) * v_cond - guidance * v_uncond
            else:
                v = self.velocity(x, mask, mu, t.expand(B))
            x = x + dt * v
        mel = self.denormalize(x) * mask
        return (mel, self.denormalize(mu) * mask) if return_mu else mel


def flow_config_dict(cfg: FlowConfig) -> dict:
    return asdict(cfg)
