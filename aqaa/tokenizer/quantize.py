"""Quantisers of the two tokenizers, and honest codebook statistics.

* ``EMAVectorQuantizer``: the semantic tokenizer's VQ bottleneck (as CosyVoice's S3
  tokenizer: a VQ layer inside a supervised encoder). Cosine codes (unit vectors: usage
  spreads better than with raw L2 codes), EMA codebook updates instead of a codebook
  loss, and restarts of dead codes from recent encoder outputs.
* ``fit_kmeans``: the linguistic tokenizer's codebook, k-means over frozen encoder
  features (Step-Audio's method on Paraformer outputs), via sklearn's MiniBatchKMeans.
* ``codebook_stats``: share of codes used and perplexity of the code distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EMAVectorQuantizer(nn.Module):
    """Nearest-code VQ with EMA updates, a warm start and dead-code restarts.

    * Warm start: for the first ``warmup`` training steps codes are not used at all: the
      unit vectors pass through, detached, so the encoder first learns content from its own
      objective (as S3's VQ is inserted into a trained ASR encoder) while the heads learn
      to read it; then every code is set to a distinct recent encoder output.
      Initialising from an untrained encoder instead collapses onto a handful of codes,
      and gradients from the heads through an untrained bottleneck stall the encoder.
    * EMA: codes follow the mean of the vectors assigned to them (no codebook loss).
    * Restarts: every ``restart_every`` steps, codes unused for ``dead_after`` steps are
      moved onto encoder outputs sampled from a pool of recent batches, so a large
      codebook on little data keeps being used.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        decay: float = 0.99,
        commitment: float = 0.25,
        warmup: int = 0,
        restart_every: int = 10,
        dead_after: int = 50,
        pool_size: int = 8192,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.n_codes, self.dim = n_codes, dim
        self.decay, self.commitment, self.eps = decay, commitment, eps
        self.warmup, self.restart_every, self.dead_after = warmup, restart_every, dead_after
        embed = F.normalize(torch.randn(n_codes, dim), dim=-1)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("cluster_size", torch.ones(n_codes))
        self.register_buffer("last_used", torch.zeros(n_codes, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far
        # Recent encoder outputs to (re)start codes from (training only, not saved).
        self.register_buffer("pool", torch.zeros(0, dim), persistent=False)
        self.pool_size = max(pool_size, 2 * n_codes)

    @property
    def warming_up(self) -> bool:
        return self.training and int(self.steps) < self.warmup

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code of each row of unit vectors ``z`` [N, dim] (max cosine similarity)."""
        return (z @ self.embed.t()).argmax(-1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None):
        """z [..., dim] -> (quantised z with straight-through grads, codes, commitment loss)."""
        shape = z.shape
        z = F.normalize(z.reshape(-1, self.dim), dim=-1)
        valid = mask.reshape(-1) if mask is not None else torch.ones(len(z), dtype=torch.bool, device=z.device)
        if self.training:
            self._remember(z.detach()[valid])
            if int(self.steps) == self.warmup:
                self._init_from_pool()
        codes = self.nearest(z.detach())
        if self.warming_up:  # heads train on the encoder's output, which learns from its own CTC only
            self.steps += 1
            return z.detach().reshape(shape), codes.reshape(shape[:-1]), z.new_zeros(())
        if self.training:
            self._ema_update(z.detach()[valid], codes[valid])
        zq = self.lookup(codes)
        diff = (z - zq.detach()).pow(2).sum(-1)
        loss = self.commitment * (diff * valid).sum() / valid.sum().clamp(min=1)
        zq = z + (zq - z).detach()  # straight-through
        return zq.reshape(shape), codes.reshape(shape[:-1]), loss

    @torch.no_grad()
    def _remember(self, z: torch.Tensor) -> None:
        self.pool = torch.cat([z, self.pool])[: self.pool_size]

    def _sample_pool(self, n: int) -> torch.Tensor:
        if len(self.pool) >= n:
            pick = torch.randperm(len(self.pool), device=self.pool.device)[:n]
        else:
            pick = torch.randint(len(self.pool), (n,), device=self.pool.device)
        # A little noise: duplicates drawn from a small pool must not tie.
        return F.normalize(self.pool[pick] + 1e-3 * torch.randn(n, self.dim, device=self.pool.device), dim=-1)

    @torch.no_grad()
    def _init_from_pool(self) -> None:
        if len(self.pool) == 0:
            return
        self.embed.copy_(self._sample_pool(self.n_codes))
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.last_used.fill_(int(self.steps))

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        self.steps += 1
        if len(z):
            counts = torch.bincount(codes, minlength=self.n_codes).type(z.dtype)
            sums = torch.zeros_like(self.embed).index_add_(0, codes, z)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.n_codes * self.eps) * n  # Laplace
            self.embed.copy_(F.normalize(self.embed_avg / smoothed.unsqueeze(1), dim=-1))
            self.last_used[counts > 0] = int(self.steps)
        if self.restart_every and int(self.steps) % self.restart_every == 0:
            self._restart_dead()

    @torch.no_grad()
    def _restart_dead(self) -> None:
        dead = int(self.steps) - self.last_used >= self.dead_after
        n_dead = int(dead.sum())
        if n_dead == 0 or len(self.pool) == 0:
            return
        new = self._sample_pool(n_dead)
        size = self.cluster_size[~dead].mean() if n_dead < self.n_codes else torch.tensor(1.0)
        self.embed[dead] = new
        self.embed_avg[dead] = new * size
        self.cluster_size[dead] = size
        self.last_used[dead] = int(self.steps)  # a grace period before it can die again
        self.restarts += n_dead

    def live_codes(self) -> int:
        """Codes used within the last ``dead_after`` steps."""
        return int((int(self.steps) - self.last_used < self.dead_after).sum())


def fit_kmeans(features: torch.Tensor, n_codes: int, seed: int = 0, log=print) -> torch.Tensor:
    """Centroids [n_codes, dim] of ``features`` [N, dim] by MiniBatchKMeans.

    With fewer frames than codes (only in toy runs) the spare centroids repeat fitted ones
    and are never chosen (ties go to the lower id); ``codebook_stats`` will show it.
    """
    from sklearn.cluster import MiniBatchKMeans

    x = features.float().numpy()  # float32: half the cost of float64, same clusters here
    k = min(n_codes, len(x))
    if k < n_codes:
        log(f"k-means: only {len(x)} frames for {n_codes} codes; {n_codes - k} codes will stay unused")
    # One init and a few passes: the cost is passes x frames x codes, and more passes
    # barely move the inertia on a corpus this size.
    km = MiniBatchKMeans(
        n_clusters=k, batch_size=max(4096, 4 * k), n_init=1, max_iter=10, random_state=seed,
        init_size=min(len(x), 3 * k), reassignment_ratio=0.01,
    )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads()):  # sklearn's OpenMP would take every core
        km.fit(x)
    cent = torch.from_numpy(km.cluster_centers_).float()
    if k < n_codes:
        cent = torch.cat([cent, cent[torch.arange(n_codes - k) % k]])
    return cent


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """argmin_k ||x - c_k||^2 for rows of x [N, dim] (||x||^2 is constant per row)."""
    return (x @ centroids.t() * 2 - centroids.pow(2).sum(-1)).argmax(-1)


def codebook_stats(counts: torch.Tensor) -> dict:
    """Usage of a codebook from per-code counts: share used, perplexity, and both relative.

    Perplexity is exp(entropy) of the code distribution: n_codes if uniform, 1 if one code.
    """
    counts = counts.double()
    total = counts.sum()
    n = len(counts)
    if total == 0:
        return {"n_codes": n, "frames": 0, "used": 0, "usage": 0.0, "perplexity": 0.0, "perplexity_ratio": 0.0}
    p = counts / total
    ent = -(p[p > 0] * p[p > 0].log()).sum().item()
    ppl = math.exp(ent)
    used = int((counts > 0).sum())
    return {"n_codes": n, "frames": int(total), "used": used, "usage": used / n,
            "perplexity": ppl, "perplexity_ratio": ppl / n}
