"""sequence_logps and dpo_loss: DESIGN.md 9, checked against hand computation."""

import math

import pytest
import torch

from aqaa.losses import dpo_loss, sequence_logps


def test_sequence_logps_matches_hand_computation():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]])  # B=1, T=2, V=3
    labels = torch.tensor([[2, 0]])
    lse0 = math.log(math.exp(0) + math.exp(1) + math.exp(2))
    lse1 = math.log(math.exp(3) + 2)
    both = sequence_logps(logits, labels, torch.tensor([[True, True]]))
    assert both.item() == pytest.approx((2 - lse0) + (3 - lse1), abs=1e-6)
    first = sequence_logps(logits, labels, torch.tensor([[True, False]]))
    assert first.item() == pytest.approx(2 - lse0, abs=1e-6)
    # masked-out positions may hold padding labels
    pad = sequence_logps(logits, torch.tensor([[2, -100]]), torch.tensor([[True, False]]))
    assert pad.item() == pytest.approx(2 - lse0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        sequence_logps(logits, labels[:, :1], torch.tensor([[True]]))


def test_dpo_loss_matches_hand_computation():
    pc, pr, rc, rr = (torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0]),
                      torch.tensor([-11.0, -4.5]), torch.tensor([-11.5, -2.0]))
    beta = 0.5
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
    # pair 0: chosen ratio +1, rejected ratio -0.5 -> margin 1.5 * 0.5 = 0.75
    # pair 1: chosen ratio +0.5, rejected ratio -1 -> margin 1.5 * 0.5 = 0.75
    z = [0.5 * (1 - (-0.5)), 0.5 * (0.5 - (-1.0))]
    expect = sum(-math.log(1 / (1 + math.exp(-v))) for v in z) / 2
    assert loss.item() == pytest.approx(expect, abs=1e-6)
    assert cr.tolist() == pytest.approx([0.5, 0.25]) and rj.tolist() == pytest.approx([-0.25, -0.5])
    assert loss.item() == pytest.approx(-math.log(torch.sigmoid(torch.tensor(0.75)).item()), abs=1e-6)


def _masked_dpo_grad(mask_chosen, mask_rejected):
    torch.manual_seed(0)
    B, T, V = 2, 6, 11
    logits_c = torch.randn(B, T, V, requires_grad=True)
    logits_r = torch.randn(B, T, V, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    with torch.no_grad():
        ref_c = sequence_logps(torch.randn(B, T, V), labels, mask_chosen)
        ref_r = sequence_logps(torch.randn(B, T, V), labels, mask_rejected)
    loss, _, _ = dpo_loss(sequence_logps(logits_c, labels, mask_chosen),
                          sequence_logps(logits_r, labels, mask_rejected), ref_c, ref_r)
    loss.backward()
    return logits_c.grad, logits_r.grad


def test_masked_dpo_has_no_gradient_at_audio_positions():
    is_audio = torch.tensor([[False, False, True, True, True, False]] * 2)
    response = torch.ones(2, 6, dtype=torch.bool)
    text_only = response & ~is_audio
    gc, gr = _masked_dpo_grad(text_only, text_only)
    assert torch.count_nonzero(gc[is_audio]) == 0 and torch.count_nonzero(gr[is_audio]) == 0
    assert torch.count_nonzero(gc[~is_audio]) > 0
    # unmasked DPO: every response id, audio included, gets gradient
    gc, gr = _masked_dpo_grad(response, response)
    assert torch.count_nonzero(gc[is_audio]) > 0 and torch.count_nonzero(gr[is_audio]) > 0
