"""Weighted model merging (the paper's last step), as small pure functions.

The paper merges three checkpoints of one architecture:

    W = (5 * W_sft1 + 5 * W_sft2 + 1 * W_dpo) / 11

``merge_state_dicts`` is that weighted average for any number of state dicts. It is
written out here rather than taken from mergekit because mergekit works on Hugging Face
checkpoints on disk; this is a dozen lines over in-memory tensors.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

PAPER_WEIGHTS = {"sft1": 5.0, "sft2": 5.0, "dpo": 1.0}


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Weights must be finite, non-negative, one per model, and not all zero."""
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} state dicts")
    if any(not torch.isfinite(torch.tensor(w)) or w < 0 for w in weights):
        raise ValueError(f"merge weights must be finite and >= 0, got {weights}")
    if sum(weights) == 0:
        raise ValueError("merge weights sum to 0")
    return weights


def check_compatible(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Same keys, shapes and dtypes everywhere; the error names the first offending key."""
    first = state_dicts[0]
    for k, sd in enumerate(state_dicts[1:], start=1):
        missing = sorted(set(first) - set(sd))
        extra = sorted(set(sd) - set(first))
        if missing:
            raise ValueError(f"state dict {k} lacks key '{missing[0]}' (and {len(missing) - 1} more)")
        if extra:
            raise ValueError(f"state dict {k} has unexpected key '{extra[0]}' (and {len(extra) - 1} more)")
        for key, t in first.items():
            if sd[key].shape != t.shape:
                raise ValueError(f"key '{key}': shape {tuple(sd[key].shape)} in state dict {k} != {tuple(t.shape)}")
            if sd[key].dtype != t.dtype:
                raise ValueError(f"key '{key}': dtype {sd[key].dtype} in state dict {k} != {t.dtype}")


def merge_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict:
    """``sum_i w_i * sd_i / sum_i w_i`` per tensor.

    Accumulated in float64 (more than the float32 that DESIGN.md asks for: bf16 or fp32
    sums of several models lose bits, and in float64 merging identical models is exactly
    the identity), then cast back to each tensor's dtype. Integer tensors (step counters, index buffers) cannot be averaged:
    they must be equal across inputs and are copied. Mismatched keys or shapes raise
    ``ValueError`` naming the key.
    """
    if not state_dicts:
        raise ValueError("nothing to merge")
    weights = check_weights(weights, len(state_dicts))
    check_compatible(state_dicts)
    total = sum(weights)
    merged = {}
    for key, ref in state_dicts[0].items():
        if not (ref.is_floating_point() or ref.is_complex()):
            for k, sd in enumerate(state_dicts[1:], start=1):
                if not torch.equal(sd[key], ref):
                    raise ValueError(f"key '{key}': non-float tensor differs in state dict {k}; cannot average it")
            merged[key] = ref.clone()
            continue
        acc = torch.zeros(ref.shape, dtype=torch.float64 if not ref.is_complex() else torch.complex128)
        for w, sd in zip(weights, state_dicts):
            if w:
                acc += w * sd[key].detach().to("cpu", acc.dtype)
        merged[key] = (acc / total).to(ref.dtype)
    return merged
