"""Losses over token sequences: masked log-probabilities and (masked) DPO.

Contracts of DESIGN.md 9. TRL's ``DPOTrainer`` is the reference for the DPO loss; it is
written out here because TRL works on Hugging Face models and tokenizers, while the
masks this recipe needs (response text ids only, for masked DPO) come from our own
token layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of ``labels`` where ``mask`` is set, per sequence.

        logps[b] = sum_t mask[b, t] * log_softmax(logits[b, t])[labels[b, t]]

    ``logits`` (B, T, V) at position t predict ``labels`` (B, T) at position t: shift
    before calling. Positions outside the mask may hold any label (e.g. -100 padding).
    Computed in float32 whatever the logits' dtype.
    """
    if logits.shape[:2] != labels.shape or labels.shape != mask.shape:
        raise ValueError(f"shapes differ: logits {tuple(logits.shape)}, labels {tuple(labels.shape)}, "
                         f"mask {tuple(mask.shape)}")
    mask = mask.bool()
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization (Rafailov et al., 2023), sigmoid loss.

        chosen_rewards   = beta * (policy_chosen   - ref_chosen)
        rejected_rewards = beta * (policy_rejected - ref_rejected)
        loss = mean( -logsigmoid(chosen_rewards - rejected_rewards) )

    All four inputs are per-sequence summed log-probabilities (``sequence_logps``), of
    shape (B,). Masked DPO (Step-Audio-AQAA) is this same loss over log-probabilities
    whose mask keeps the response's text ids only: audio ids then contribute nothing to
    the log-ratios, and so receive no gradient, which keeps DPO from breaking the
    alignment between an answer's text and its audio. The reward tensors are detached:
    they are for logging (rewards/chosen, rewards/rejected, margins, accuracies).
    """
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach()
