"""Distances between re-ID feature sets, computed in query blocks so memory stays bounded.

Shared by :mod:`reidaug.eval.metrics` (CMC / mAP) and :mod:`reidaug.eval.rerank` (the
k-reciprocal re-ranking, which needs all (Q+G)^2 distances): both take their blocks from
:func:`distance_blocks`, so the two never import each other.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from reidaug.errors import ConfigError, DataError, unknown_name
from reidaug.eval.inputs import check_positive_int

METRICS = ("euclidean", "cosine")


def features_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    """(N, D) float tensor on ``device``; float64 stays float64, anything else becomes float32."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.from_numpy(np.ascontiguousarray(x))
        except TypeError as err:
            raise DataError(
                f"{name}: expected a numpy array or torch tensor of features (N, D); got "
                f"{type(x).__name__} ({err}). Pass np.asarray(features, dtype=np.float32)."
            ) from None
    if t.ndim != 2:
        raise DataError(
            f"{name}: expected features of shape (N, D); got shape {tuple(t.shape)}. "
            f"Flatten each feature to one row."
        )
    if not (t.is_floating_point() and t.dtype == torch.float64):
        t = t.to(torch.float32)
    if device is not None:
        t = t.to(device)
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise DataError(
            f"{name}: {bad} of {t.shape[0]} feature rows contain NaN or inf. Check the model "
            f"output (a diverged checkpoint or a division by a zero norm) before evaluating."
        )
    return t


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise unknown_name("distance metric", str(metric), METRICS)


def resolve_device(device: str | torch.device | None, qf: Any) -> torch.device:
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ConfigError(
                f"device: {device!r} is not a torch device ({err}). Use 'cpu' or 'cuda:0'."
            ) from None
    if isinstance(qf, torch.Tensor):
        return qf.device
    return torch.device("cpu")


def query_gallery(qf: Any, gf: Any, device: str | torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Query (Q, D) and gallery (G, D) features as tensors of one dtype on one device.

    The device is ``device``, else the query tensor's, else the CPU; mixed float32 / float64
    inputs are both computed in float64. Raises DataError when the feature sizes differ.
    """
    dev = resolve_device(device, qf)
    q = features_tensor(qf, "query features", dev)
    g = features_tensor(gf, "gallery features", dev)
    if q.dtype != g.dtype:
        q, g = q.to(torch.float64), g.to(torch.float64)
    if q.shape[1] != g.shape[1]:
        raise DataError(
            f"feature size differs: query features are {q.shape[1]}-d, gallery features "
            f"{g.shape[1]}-d. Extract both with the same model."
        )
    return q, g


def distance_blocks(
    q: torch.Tensor, g: torch.Tensor, metric: str, block_size: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, dist) with dist (stop-start, G) for query rows [start, stop)."""
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    else:
        g_sq = (g * g).sum(dim=1)  # (G,)
    for start in range(0, q.shape[0], block_size):
        stop = min(start + block_size, q.shape[0])
        qb = q[start:stop]  # (B, D)
        dot = qb @ g.T  # (B, G)
        if metric == "cosine":
            dist = dot.neg_().add_(1.0)  # 1 - cos
        else:
            # |q|^2 + |g|^2 - 2 q.g, clamped (rounding makes it slightly negative for
            # near-duplicates), then sqrt: the true euclidean distance
            dist = dot.mul_(-2.0).add_(g_sq[None, :]).add_((qb * qb).sum(dim=1, keepdim=True))
            dist = dist.clamp_(min=0.0).sqrt_()
        yield start, stop, dist


def block_distances(qb: torch.Tensor, gb: torch.Tensor, metric: str) -> torch.Tensor:
    """(B, Gb) distances of a query block to a gallery block, row for row the arithmetic of
    :func:`distance_blocks` (which normalises or squares the whole gallery once instead)."""
    if metric == "cosine":
        return (torch.nn.functional.normalize(qb, dim=1) @ torch.nn.functional.normalize(gb, dim=1).T).neg_().add_(1.0)
    dist = (qb @ gb.T).mul_(-2.0).add_((gb * gb).sum(dim=1)[None, :]).add_((qb * qb).sum(dim=1, keepdim=True))
    return dist.clamp_(min=0.0).sqrt_()


def pairwise_distances(
    qf: Any,
    gf: Any,
    metric: str = "euclidean",
    *,
    block_size: int = 2048,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """Distances between query and gallery features, ``block_size`` query rows at a time.

    Yields ``(start, stop, dist_block)`` where ``dist_block[i, j]`` is the distance between
    query ``start + i`` and gallery ``j``; shape (stop - start, G). ``metric`` is "euclidean"
    (the true L2 distance; torchreid returns its square, which ranks identically) or "cosine"
    (1 - cosine similarity). Numpy inputs give numpy blocks, torch inputs give tensors on the
    compute device. Peak memory: one block, ``block_size * G`` values.
    """
    check_metric(metric)
    check_positive_int(block_size, "block_size")
    q, g = query_gallery(qf, gf, device)
    as_numpy = not isinstance(qf, torch.Tensor)
    for start, stop, dist in distance_blocks(q, g, metric, int(block_size)):
        yield start, stop, (dist.cpu().numpy() if as_numpy else dist)
