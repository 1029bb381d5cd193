"""Losses on hand-worked cases: soft cross-entropy (no smoothing added) and batch-hard triplet."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from reidaug.errors import DataError
from reidaug.train.losses import batch_hard_triplet, smooth_onehot, soft_cross_entropy, triplet_accuracy


def test_soft_cross_entropy_hand_worked() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4]
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    # row 0: -ln(1/4) = ln 4; row 1: -(0.25 ln .5 + .75 ln .5) = ln 2
    expected = (math.log(4.0) + math.log(2.0)) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_uses_targets_as_given_no_extra_smoothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    onehot = F.one_hot(labels, 5).float()
    # One-hot targets give exactly the hard-label cross-entropy: nothing was smoothed.
    assert torch.allclose(soft_cross_entropy(logits, onehot), F.cross_entropy(logits, labels), atol=1e-6)
    # An already-smoothed (LSR, eps=0.1) target gives the smoothed loss once, not twice.
    lsr = onehot * 0.9 + 0.1 / 5
    assert torch.allclose(soft_cross_entropy(logits, lsr),
                          F.cross_entropy(logits, labels, label_smoothing=0.1), atol=1e-6)
    # A confident correct prediction on a one-hot target costs ~0 (smoothing would keep it > 0).
    sharp = torch.full((1, 5), -30.0)
    sharp[0, 2] = 30.0
    assert soft_cross_entropy(sharp, F.one_hot(torch.tensor([2]), 5).float()).item() < 1e-6


def test_soft_cross_entropy_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="num_classes"):
        soft_cross_entropy(torch.zeros(2, 4), torch.zeros(2, 5))


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    # 1-D features: identity 0 at 0 and 1, identity 1 at 3 and 5.
    return torch.tensor([[0.0], [1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1, 1])


def test_batch_hard_triplet_hand_worked() -> None:
    x, pids = _toy()
    # anchor 0: d_ap 1, d_an 3 -> 0;  anchor 1: 1 vs 2 -> 0;  anchor 2 (at 3): hardest positive 2
    # (at 5), nearest negative 2 (at 1) -> 0.3;  anchor 3: 2 vs 4 -> 0.  Mean 0.3 / 4.
    assert batch_hard_triplet(x, pids, margin=0.3).item() == pytest.approx(0.075, abs=1e-5)
    # With margin 1.5: max(0, 1-3+1.5), max(0, 1-2+1.5), 2-2+1.5, 2-4+1.5 = 0, .5, 1.5, 0
    assert batch_hard_triplet(x, pids, margin=1.5).item() == pytest.approx(0.5, abs=1e-5)
    soft = (2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 4
    assert batch_hard_triplet(x, pids, soft_margin=True).item() == pytest.approx(soft, abs=1e-5)
    assert triplet_accuracy(x, pids) == pytest.approx(0.75)  # anchor 2 is a tie, not a success


def test_batch_hard_triplet_ignores_samples_without_identity_and_has_gradients() -> None:
    x, pids = _toy()
    # A generated image with no identity (pid -1) right next to anchor 2 must not be its negative.
    x2 = torch.cat([x, torch.tensor([[3.05]])]).requires_grad_(True)
    pids2 = torch.cat([pids, torch.tensor([-1])])
    loss = batch_hard_triplet(x2, pids2, margin=0.3)
    assert loss.item() == pytest.approx(0.075, abs=1e-5)
    loss.backward()
    assert x2.grad is not None and torch.isfinite(x2.grad).all()
    assert x2.grad[4].abs().item() == 0.0
    assert x2.grad[2].abs().item() > 0.0  # the only active anchor moves


def test_batch_hard_triplet_without_valid_anchor_is_zero_with_graph() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet(x, torch.tensor([0, 1, 2]))  # no positives at all
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None


def test_smooth_onehot_smooths_the_onehot_rows_only_as_torch_does() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4)
    labels = torch.tensor([2, 0, 1])
    targets = F.one_hot(labels, 4).float()
    targets[2] = torch.tensor([0.1, 0.7, 0.1, 0.1])  # a target assign-labels made (kept as stored)
    onehot = torch.tensor([True, True, False])
    out = smooth_onehot(targets, onehot, 0.1)
    assert torch.allclose(out[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    assert torch.equal(out[2], targets[2])
    # rows 0-1 give torch's own label-smoothed cross-entropy
    assert soft_cross_entropy(logits[:2], out[:2]).item() == pytest.approx(
        F.cross_entropy(logits[:2], labels[:2], label_smoothing=0.1).item(), rel=1e-6)
    assert smooth_onehot(targets, onehot, 0.0) is targets
