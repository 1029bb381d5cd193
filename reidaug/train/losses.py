"""Re-ID losses: soft-target cross-entropy and the batch-hard triplet loss.

- :func:`soft_cross_entropy` is the ID loss on the soft targets stored in a reidaug HDF5 file:
  ``-sum_c p_c log softmax(z)_c`` averaged over the batch. The targets are already final (one-hot,
  LSR for CamStyle fakes, LSRO's uniform for unlabeled GAN images, Zheng et al. ICCV 2017, or a
  teacher's probabilities); the file says ``label_smoothing="precomputed"``, so this loss adds no
  smoothing of its own and does not check or renormalise them. :func:`smooth_onehot` is the
  trainer's ``label_smoothing``: it smooths the rows stored as plain one-hot and no other.
- :func:`batch_hard_triplet` is the batch-hard triplet loss of Hermans, Beyer & Leibe, "In
  Defense of the Triplet Loss for Person Re-Identification" (2017): for every anchor, its
  farthest positive and nearest negative in the batch, Euclidean (not squared) distance, hinge
  ``[m + d_ap - d_an]_+`` or the soft margin ``log(1 + exp(d_ap - d_an))``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from reidaug.errors import DataError


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c target_probs[:, c] * log_softmax(logits)[:, c]``.

    logits (B, C); target_probs (B, C), used exactly as given (never smoothed here).
    Computed in float32 (also under autocast).
    """
    if logits.shape != target_probs.shape:
        raise DataError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and targets {tuple(target_probs.shape)} "
            "differ; the model's classifier must have the data's num_classes outputs. Fix: build the "
            "model with num_classes from the HDF5 file (its root attribute num_classes)."
        )
    logp = F.log_softmax(logits.float(), dim=1)  # (B, C)
    return -(target_probs.to(logp.dtype) * logp).sum(dim=1).mean()


def smooth_onehot(target_probs: torch.Tensor, onehot: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Label smoothing (Szegedy et al. 2016) of the one-hot rows only: ``(1 - eps) y + eps / C``.

    target_probs (B, C); onehot (B,) bool, the rows the file stores as plain one-hot (its
    ``label_scheme`` column). Rows with a target made on purpose (LSR, LSRO, a teacher's) are
    returned as they are: a file's soft targets are final. ``epsilon`` 0 returns the input.
    """
    if epsilon <= 0:
        return target_probs
    smoothed = target_probs * (1.0 - epsilon) + epsilon / target_probs.shape[1]
    return torch.where(onehot.view(-1, 1), smoothed, target_probs)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, B) between the rows of ``x`` (B, D); 0 on the diagonal.

    The square root gets a floor of 1e-12 so its gradient at 0 stays finite.
    """
    sq = (x * x).sum(dim=1)  # (B,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())  # (B, B)
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(
    features: torch.Tensor,
    pids: torch.Tensor,
    margin: float = 0.3,
    soft_margin: bool = False,
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017), mean over the valid anchors.

    features (B, D); pids (B,) identity of each row. Samples with ``pid < 0`` (generated images
    with no identity) take no part. An anchor counts when the batch holds another image of its
    identity and one of a different identity; with no valid anchor the loss is 0 (and still
    part of the graph). ``soft_margin``: ``softplus(d_ap - d_an)`` instead of the hinge.
    """
    if features.ndim != 2 or pids.shape != features.shape[:1]:
        raise DataError(
            f"batch_hard_triplet: expected features (B, D) and pids (B,); found "
            f"{tuple(features.shape)} and {tuple(pids.shape)}."
        )
    feats = features.float()
    d_ap, d_an, anchors = _hardest_pairs(feats, pids)
    if not bool(anchors.any()):
        return feats.sum() * 0.0
    diff = (d_ap - d_an)[anchors]
    if soft_margin:
        return F.softplus(diff).mean()
    return F.relu(diff + margin).mean()


def triplet_accuracy(features: torch.Tensor, pids: torch.Tensor) -> float:
    """Fraction of valid anchors whose hardest positive is nearer than their hardest negative."""
    with torch.no_grad():
        d_ap, d_an, anchors = _hardest_pairs(features.float(), pids)
        if not bool(anchors.any()):
            return float("nan")
        return float((d_ap < d_an)[anchors].float().mean())


def _hardest_pairs(feats: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor: the distance to its farthest positive and to its nearest negative (B,) each,
    and which anchors have both (B,) bool; rows with ``pid < 0`` are neither."""
    dist = pairwise_distances(feats)  # (B, B)
    valid = pids >= 0  # (B,)
    same = (pids[:, None] == pids[None, :]) & valid[:, None] & valid[None, :]  # (B, B)
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos = same & ~eye
    neg = ~same & valid[:, None] & valid[None, :]
    anchors = pos.any(dim=1) & neg.any(dim=1)  # (B,)
    d_ap = torch.where(pos, dist, torch.zeros_like(dist)).amax(dim=1)  # (B,)
    d_an = torch.where(neg, dist, torch.full_like(dist, float("inf"))).amin(dim=1)  # (B,)
    return d_ap, d_an, anchors
