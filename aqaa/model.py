"""The backbone: a Llama-style decoder-only transformer, in one readable file.

RoPE positions, RMSNorm (pre-norm), SwiGLU MLP, grouped-query attention through
``torch.nn.functional.scaled_dot_product_attention``, optional tied input/output
embeddings, and a KV cache for generation. The audio tokens (1024 linguistic + 4096
semantic) are ordinary ids of the vocabulary (``aqaa.tokens.Vocab``), as in Step-Audio.

Conventions follow Hugging Face's ``LlamaForCausalLM`` (rotate-half RoPE, SiLU gate, no
biases), so ``hf_llama_config`` / ``to_hf_state_dict`` give the same network there (the
benchmark compares the two).

Presets: ``tiny`` (quick start and tests, ~6M parameters with the 5384-id vocabulary),
``small`` (one GPU, ~80M) and ``paper`` (130B class, meant for the meta device:
``aqaa model info --preset paper --gpus 256``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 5384  # Vocab(text_size=256).size with 1024 + 4096 audio codes
    n_layer: int = 6
    n_head: int = 4
    n_kv_head: int = 2  # grouped-query attention: n_head / n_kv_head query heads share a K/V head
    d_model: int = 256
    d_ff: int = 704  # SwiGLU hidden size (about 8/3 d_model, rounded to a multiple of 64)
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"head size {self.d_model // self.n_head} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, ModelConfig] = {
    # Quick start / tests: a few minutes of CPU training learns the quick-start corpus.
    "tiny": ModelConfig(n_layer=6, n_head=4, n_kv_head=2, d_model=256, d_ff=704, max_seq_len=2048),
    # One GPU: a GPT-2-small-sized Llama (~80M parameters).
    "small": ModelConfig(n_layer=12, n_head=12, n_kv_head=4, d_model=768, d_ff=2048, max_seq_len=4096),
    # Step-Omni class (130B); Step-Audio's backbone shape is not public, this is a
    # Llama-style shape of that size with a 64k-token text vocabulary plus the 5120
    # audio codes. Instantiate it on the meta device only.
    "paper": ModelConfig(vocab_size=8 + 65536 + 5120, n_layer=88, n_head=96, n_kv_head=8, d_model=12288,
                         d_ff=30720, max_seq_len=16384, rope_theta=500000.0, tie_embeddings=False),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset '{name}'; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


# ----- building blocks ----------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (bf16 has too few mantissa bits for the mean of squares);
        # F.rms_norm is one fused kernel for what is otherwise five elementwise passes.
        return F.rms_norm(x.float(), (x.size(-1),), self.weight.float(), self.eps).type_as(x)


def rope_cache(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [seq_len, head_dim] (rotate-half layout, as HF Llama)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, hd]; cos/sin: [T, hd] (or [B, 1, T, hd])."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    # Rotate in x's dtype: under bf16 autocast this avoids two float32 round trips per call.
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache(nn.Module):
    """Preallocated keys and values of one layer: [B, n_kv_head, max_len, head_dim]."""

    def __init__(self, batch: int, n_kv_head: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(2)
        self.k[:, :, pos : pos + t] = k
        self.v[:, :, pos : pos + t] = v
        return self.k[:, :, : pos + t], self.v[:, :, : pos + t]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        # One fused projection for q, k, v: one matmul instead of three.
        self.qkv = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.n_kv_head) * hd, bias=False)
        self.proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        c, hd = self.cfg, self.cfg.head_dim
        q, k, v = self.qkv(x).split([c.n_head * hd, c.n_kv_head * hd, c.n_kv_head * hd], dim=-1)
        q = q.view(B, T, c.n_head, hd).transpose(1, 2)
        k = k.view(B, T, c.n_kv_head, hd).transpose(1, 2)
        v = v.view(B, T, c.n_kv_head, hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(pos, k, v)
        gqa = c.n_kv_head != c.n_head  # SDPA shares each K/V head among n_head / n_kv_head queries
        # A query block starting at `pos` sees every cached key before it: causal only
        # when the block is the whole sequence (training / prefill); a single decode
        # query attends to everything cached.
        if T == 1:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        elif pos == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa,
                                               dropout_p=c.dropout if self.training else 0.0)
        else:  # a block after a cached prefix: causal within the block, full over the prefix
            S = k.size(2)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.proj(y.transpose(1, 2).reshape(B, T, c.n_head * hd))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm transformer block; the unit of FSDP sharding and activation checkpointing."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, cache, pos))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class LM(nn.Module):
    """Decoder-only language model over text + audio ids: ``forward(ids) -> logits``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # RoPE tables are derived, not learned: non-persistent buffers, absent from state dicts.
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.caches: list[KVCache] | None = None
        if not self.embed.weight.is_meta:
            self.init_weights()

    # Lightning's meta-device materialisation calls reset_parameters() on every module
    # that owns parameters or buffers; the root owns the RoPE buffers.
    def reset_parameters(self) -> None:
        cos, sin = rope_cache(self.cfg.max_seq_len, self.cfg.head_dim, self.cfg.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 / Llama init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)  # RMSNorm gains
            elif name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)
        self.reset_parameters()

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied weight is counted once
        if exclude_embeddings:
            n -= self.embed.weight.numel()
        return n

    def forward(self, ids: torch.Tensor, pos: int = 0, return_hidden: bool = False,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, T] -> logits [B, T, vocab] (float32 under autocast too).

        ``select`` (bool [B, T]): logits only where it is set, as [N, vocab]. Training
        passes the target positions (an SFT response is about a third of its dialogue),
        decoding the last position: the output head and the softmax over the vocabulary
        are then computed where they are used. With a cache set up (``setup_cache``),
        ``pos`` is where ids start in the sequence and keys/values are kept.
        """
        B, T = ids.shape
        if pos + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {pos + T} ids is longer than max_seq_len={self.cfg.max_seq_len} "
                             "(model.max_seq_len)")
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]
        x = self.embed(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, self.caches[i] if self.caches is not None else None, pos)
        x = self.norm(x)
        if return_hidden:
            return x
        if select is not None:
            x = x[select]
        return self.lm_head(x).float()

    # ----- KV cache ---------------------------------------------------------------
    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
        c = self.cfg
        p = self.embed.weight
        self.caches = [KVCache(batch, c.n_kv_head, min(max_len, c.max_seq_len), c.head_dim, dtype or p.dtype, p.device)
                       for _ in range(c.n_layer)]

    def clear_cache(self) -> None:
        self.caches = None


# ----- parameter accounting (meta device friendly) -------------------------------------


def count_params(cfg: ModelConfig) -> dict:
    """Parameter counts of a config, computed by building it on the meta device."""
    with torch.device("meta"):
        model = LM(cfg)
    emb = model.embed.weight.numel()
    head = 0 if cfg.tie_embeddings else model.lm_head.weight.numel()
    per_block = sum(p.numel() for p in model.blocks[0].parameters())
    return {"total": model.num_params(), "embedding": emb, "lm_head": head, "per_block": per_block,
            "blocks": per_block * cfg.n_layer}


def fsdp_memory(n_params: int, gpus: int, param_bytes: int = 2, grad_bytes: int = 2, optim_bytes: int = 8,
                master_bytes: int = 4) -> dict:
    """Per-GPU memory of fully sharded params, grads and AdamW state (bytes).

    Default: bf16 params and grads, AdamW's two fp32 moments, and an fp32 master copy
    of the weights (mixed-precision training); everything divided over ``gpus``
    (FSDP / ZeRO-3). Activations and temporary all-gathered blocks are extra.
    """
    per = {"params": param_bytes, "grads": grad_bytes, "optimizer": optim_bytes, "master_weights": master_bytes}
    out = {k: n_params * b / gpus for k, b in per.items()}
    out["total"] = sum(out.values())
    return out


def flops_per_token(cfg: ModelConfig, seq_len: int, training: bool = True) -> float:
    """Matmul FLOPs per token (PaLM, appendix B): 2N forward over the matmul weights plus
    attention scores and values (2 * 2 L T d, T the context length), times 3 for training.

    The embedding lookup is not a matmul; a tied embedding is (it is the output head).
    """
    c = count_params(cfg)
    n_matmul = c["total"] if cfg.tie_embeddings else c["total"] - c["embedding"]
    fwd = 2 * n_matmul + 4 * cfg.n_layer * seq_len * cfg.d_model
    return 3.0 * fwd if training else float(fwd)


# ----- Hugging Face interop (benchmark, tests) ----------------------------------------


def hf_llama_config(cfg: ModelConfig) -> dict:
    """Keyword arguments for ``transformers.LlamaConfig`` giving the same network."""
    return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
                max_position_embeddings=cfg.max_seq_len, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
                tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False, hidden_act="silu",
                attention_dropout=0.0)


def to_hf_state_dict(model: LM) -> dict:
    """This model's weights under ``LlamaForCausalLM``'s names."""
    c = model.cfg
    hd = c.head_dim
    sd = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.lm_head.weight}
    for i, b in enumerate(model.blocks):
        q, k, v = b.attn.qkv.weight.split([c.n_head * hd, c.n_kv_head * hd, c.n_kv_head * hd], dim=0)
        p = f"model.layers.{i}."
        sd.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": b.attn.proj.weight,
                   p + "mlp.gate_proj.weight": b.mlp.gate.weight, p + "mlp.up_proj.weight": b.mlp.up.weight,
                   p + "mlp.down_proj.weight": b.mlp.down.weight, p + "input_layernorm.weight": b.attn_norm.weight,
                   p + "post_attention_layernorm.weight": b.mlp_norm.weight})
    return {k: v.detach().clone() for k, v in sd.items()}


# ----- saving and loading (artifact format) ------------------------------------------


def save_model(model: LM, directory, state_dict: dict | None = None, extra: dict | None = None) -> None:
    """``model.pt`` (a plain state dict) and ``model_config.json`` into ``directory``."""
    import json
    from pathlib import Path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    torch.save({k: v.detach().cpu().contiguous() for k, v in sd.items()}, d / "model.pt")
    (d / "model_config.json").write_text(json.dumps({**model.cfg.to_dict(), **(extra or {})}, indent=2) + "\n")


def load_model(directory, device="cpu", dtype: torch.dtype | None = None) -> LM:
    """A backbone saved by ``save_model`` (any stage's artifact directory)."""
    import json
    from pathlib import Path

    d = Path(directory)
    if not (d / "model.pt").is_file():
        raise FileNotFoundError(f"{d}: no model.pt (is it a pretrain / sft / dpo / merge artifact?)")
    cfg = ModelConfig.from_dict(json.loads((d / "model_config.json").read_text()))
    with torch.device("meta"):
        model = LM(cfg)
    sd = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(sd, assign=True)
    if cfg.tie_embeddings:  # assign=True replaces tensors: re-tie
        model.lm_head.weight = model.embed.weight
    model.rope_cos, model.rope_sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
    return model.to(device=device, dtype=dtype) if dtype else model.to(device)
