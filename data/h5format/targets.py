"""Soft training targets of the train split: built (``make_targets``) and read back (``densify_*``).

Label schemes: one-hot, label-smoothing regularisation (LSR, Szegedy et al. 2016, used for
CamStyle fakes by Zhong et al., CVPR 2018), LSRO (uniform over all classes for unlabeled GAN
images, Zheng et al., ICCV 2017) and teacher soft labels (Hinton et al. 2015). Targets are
stored *already smoothed*: a trainer densifies them and must never smooth again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from reidaug.data.h5format.schema import DEFAULT_TARGET_TOPK, LABEL_SCHEMES, LATER_LABEL_SCHEMES
from reidaug.errors import ConfigError, DataError, unknown_name


def densify_target(
    index: np.ndarray, value: np.ndarray, rest: float, num_classes: int
) -> np.ndarray:
    """Turn one stored sparse target into its dense probability vector, float32 (C,).

    ``index`` (K,) int32 holds class ids (``-1`` = unused slot), ``value`` (K,) their
    probabilities, ``rest`` the leftover mass, spread *uniformly over the classes not listed in
    ``index``*. So LSR with smoothing eps is index=[y], value=[1-eps+eps/C], rest=eps-eps/C;
    LSRO is no index at all and rest=1 (uniform over all C classes). The result sums to 1
    (within float32 rounding); it is the final training target: do not smooth it again.
    """
    index = np.asarray(index).reshape(-1)
    value = np.asarray(value, dtype=np.float32).reshape(-1)
    out = np.zeros(num_classes, dtype=np.float32)
    used = index >= 0
    idx = index[used].astype(np.int64)
    out[idx] = value[used]
    others = num_classes - idx.size
    if others > 0 and rest > 0:
        mask = np.ones(num_classes, dtype=bool)
        mask[idx] = False
        out[mask] += np.float32(rest) / np.float32(others)
    return out


def densify_targets(
    index: np.ndarray, value: np.ndarray, rest: np.ndarray, num_classes: int
) -> np.ndarray:
    """Batched :func:`densify_target`: (B, K), (B, K), (B,) -> float32 (B, C)."""
    index = np.asarray(index)
    value = np.asarray(value, dtype=np.float32)
    rest = np.asarray(rest, dtype=np.float32)
    b = index.shape[0]
    used = index >= 0
    n_used = used.sum(axis=1)
    others = num_classes - n_used  # (B,)
    share = np.where(others > 0, rest / np.maximum(others, 1), 0.0).astype(np.float32)
    out = np.repeat(share[:, None], num_classes, axis=1)  # (B, C)
    rows = np.repeat(np.arange(b), index.shape[1])[used.reshape(-1)]
    out[rows, index[used]] = value[used]
    return out


def normalize_dense(rows: np.ndarray) -> np.ndarray:
    """Dense float16 rows -> float32 rows divided by their sum (undoes float16 rounding only)."""
    rows = np.asarray(rows, dtype=np.float32)
    total = rows.sum(axis=-1, keepdims=True)
    return rows / np.where(total > 0, total, 1.0)


def make_targets(
    scheme: str,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    *,
    epsilon: float = 0.1,
    probs: np.ndarray | None = None,
    topk: int = DEFAULT_TARGET_TOPK,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse (index (B, K) int32, value (B, K) float32) targets for one label scheme.

    onehot: [y] -> [1]; lsr: [y] -> [1 - eps + eps/C] (the rest, eps - eps/C, spreads as eps/C
    over the other classes); lsro: nothing listed (uniform over all classes); teacher: the
    ``topk`` largest of ``probs`` (B, C) (the rest mass spreads over the other classes).
    The writer derives the rest mass itself, so these two arrays are all it needs.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    b = labels.size
    if scheme not in LABEL_SCHEMES and scheme not in LATER_LABEL_SCHEMES:
        raise unknown_name("label scheme", scheme, {**LABEL_SCHEMES, **LATER_LABEL_SCHEMES})
    if scheme in ("onehot", "lsr", "structure"):  # structure: LSR on the structure source's identity
        if b and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"{scheme} targets need labels in 0..{num_classes - 1}; found "
                f"{labels.min()}..{labels.max()}. Fix: relabel pids contiguously first."
            )
        if scheme == "lsr" and not 0.0 <= epsilon < 1.0:
            raise ConfigError(f"lsr epsilon must be in [0, 1); found {epsilon}.")
        top = 1.0 if scheme == "onehot" else 1.0 - epsilon + epsilon / num_classes
        return labels.astype(np.int32)[:, None], np.full((b, 1), top, dtype=np.float32)
    if scheme == "lsro":
        return np.full((b, 1), -1, dtype=np.int32), np.zeros((b, 1), dtype=np.float32)
    if probs is None:
        raise ConfigError("teacher targets need probs (B, C) from the teacher's softmax.")
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape != (b, num_classes):
        raise DataError(
            f"teacher probs must have shape ({b}, {num_classes}); found {probs.shape}."
        )
    k = min(topk, num_classes)
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int32), np.take_along_axis(probs, idx, axis=1)
