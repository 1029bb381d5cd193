"""Canonical poses: k-means over normalised training poses (PN-GAN).

PN-GAN (Qian et al., "Pose-Normalized Image Generation for Person Re-identification", ECCV 2018)
generates every training person in 8 canonical poses, found by clustering the training set's
poses with k-means and taking the cluster centres. This module computes them:

1. :func:`normalize_poses` makes poses comparable across crop sizes and positions: it translates
   each pose so that its torso centre (the midpoint of mid-shoulder and mid-hip) is at the origin
   and divides by its torso length (mid-shoulder to mid-hip distance). A pose is kept when it has
   at least ``min_confident`` keypoints with score >= ``score_threshold`` *and* all four torso
   points (without them there is no centre or scale); the others are excluded and counted in the
   log. Kept poses' unconfident points are NaN: they are *excluded from distances* (below) rather
   than filled in.
2. :func:`kmeans_poses` runs deterministic k-means (k-means++ seeding, Lloyd iterations, the best
   of ``n_init`` restarts by inertia; numpy only) with a masked distance: the mean squared
   distance over the joints present in the pose (times 17, so a complete pose's distance is the
   plain squared Euclidean distance). A centre's joint is the mean over the members that have it.
   Clusters come out sorted by size (largest first), ties by their first member.
3. :func:`render_canonical` puts the centres back into a pixel frame (256x128 by default) as
   COCO-17 ``(k, 17, 3)`` keypoints with score 1, each pose fitted to the frame like a detector
   crop; :func:`skeleton_sheet` draws them side by side into a PNG.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from reidaug.errors import ConfigError, DataError
from reidaug.io.atomic import write_png
from reidaug.pose.skeleton import L_HIP, L_SHO, NUM_KEYPOINTS, R_HIP, R_SHO, check_keypoints, \
    draw_skeleton

log = logging.getLogger(__name__)

_TORSO4 = [L_SHO, R_SHO, L_HIP, R_HIP]


def normalize_poses(kp: np.ndarray, min_confident: int = 12, score_threshold: float = 0.3
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale poses; return ``(norm (M, 17, 2) float32, kept indices (M,) int64)``.

    ``norm`` is in torso lengths around the torso centre, NaN where a kept pose's keypoint has a
    score below ``score_threshold``. Poses with fewer than ``min_confident`` confident points,
    a missing torso point or a degenerate torso (shoulders and hips on one spot) are left out;
    how many for each reason is logged at INFO.
    """
    arr = check_keypoints(kp, "normalize_poses keypoints")  # (N, 17, 3)
    if not (isinstance(min_confident, int) and 0 <= min_confident <= NUM_KEYPOINTS):
        raise ConfigError(f"normalize_poses min_confident: expected an integer in 0..17, found "
                          f"{min_confident!r}. Fix: PN-GAN-style clustering uses about 12.")
    conf = (arr[..., 2] >= score_threshold) & np.isfinite(arr[..., :2]).all(-1)  # (N, 17)
    enough = conf.sum(1) >= min_confident
    has_torso = conf[:, _TORSO4].all(1)
    xy = np.where(conf[..., None], arr[..., :2], np.nan).astype(np.float64)
    mid_sho = (xy[:, L_SHO] + xy[:, R_SHO]) / 2  # (N, 2)
    mid_hip = (xy[:, L_HIP] + xy[:, R_HIP]) / 2
    torso = np.linalg.norm(mid_sho - mid_hip, axis=1)  # (N,), NaN without a torso
    # Degenerate: torso shorter than 1 % of the extent of the pose's confident points.
    lo = np.min(xy, axis=1, where=conf[..., None], initial=np.inf)  # (N, 2)
    hi = np.max(xy, axis=1, where=conf[..., None], initial=-np.inf)
    extent = np.max(hi - lo, axis=1)  # -inf without confident points
    sane = np.nan_to_num(torso) > np.maximum(0.01 * extent, 1e-6)
    keep = enough & has_torso & sane
    kept = np.flatnonzero(keep).astype(np.int64)
    centre = (mid_sho + mid_hip)[kept] / 2
    norm = (xy[kept] - centre[:, None]) / torso[kept, None, None]
    n = len(arr)
    n_low = int((~enough).sum())
    n_torso = int((enough & ~has_torso).sum())
    n_degenerate = int((enough & has_torso & ~sane).sum())
    log.info("canonical poses: kept %d of %d poses; excluded %d with fewer than %d keypoints "
             "scored >= %g, %d without all four torso points, %d with a degenerate torso",
             len(kept), n, n_low, min_confident, score_threshold, n_torso, n_degenerate)
    return norm.astype(np.float32), kept


def _check_norm(norm: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(norm, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 2):
        raise DataError(f"{what}: expected normalised poses of shape (M, 17, 2) (from "
                        f"normalize_poses), found shape {arr.shape}.")
    return arr


def _distances(x: np.ndarray, present: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Masked squared distances (M, k): mean over present joints of |x_j - c_j|^2, times 17."""
    xz = np.where(present[..., None], x, 0.0).reshape(len(x), -1)  # (M, 34)
    w = np.repeat(present, 2, axis=1).astype(np.float64)  # (M, 34)
    ct = np.ascontiguousarray(centers.reshape(len(centers), -1).T)  # (34, k)
    # sum_j w (x - c)^2 = sum w x^2 - 2 x.c + w.c^2 (x already zero where w = 0)
    d = (xz**2).sum(1)[:, None] - 2 * (xz @ ct) + w @ (ct**2)  # (M, k)
    n = np.maximum(present.sum(1), 1)[:, None]
    return np.maximum(d, 0.0) * (NUM_KEYPOINTS / n)


def _update(x: np.ndarray, present: np.ndarray, labels: np.ndarray, centers: np.ndarray
            ) -> np.ndarray:
    """New centres: per joint, the mean over the members that have it (else the old value)."""
    k = len(centers)
    xz = np.where(present[..., None], x, 0.0).reshape(len(x), -1)  # (M, 34)
    # Per-cluster sums with bincount: exact, and no BLAS call on a transposed (M, k) one-hot.
    sums = np.stack([np.bincount(labels, weights=xz[:, i], minlength=k)
                     for i in range(xz.shape[1])], axis=1)  # (k, 34)
    counts = np.stack([np.bincount(labels, weights=present[:, j].astype(np.float64),
                                   minlength=k) for j in range(NUM_KEYPOINTS)], axis=1)  # (k, 17)
    means = sums.reshape(k, NUM_KEYPOINTS, 2) / np.maximum(counts, 1)[..., None]
    return np.where(counts[..., None] > 0, means, centers)


def _kmeans_once(x: np.ndarray, present: np.ndarray, fill: np.ndarray, k: int,
                 rng: np.random.Generator, max_iter: int, tol: float
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    m = len(x)
    full = np.where(present[..., None], x, fill)  # a centre seeded from a pose needs every joint
    idx = [int(rng.integers(m))]
    d_min = _distances(x, present, full[idx])[:, 0]
    for _ in range(1, k):  # k-means++: next seed with probability proportional to D^2
        total = d_min.sum()
        nxt = int(rng.choice(m, p=d_min / total)) if total > 0 else int(rng.integers(m))
        idx.append(nxt)
        d_min = np.minimum(d_min, _distances(x, present, full[[nxt]])[:, 0])
    centers = full[idx].copy()
    labels = np.full(m, -1)
    for _ in range(max_iter):
        d = _distances(x, present, centers)
        new = d.argmin(1)
        # An empty cluster takes the pose farthest from its centre.
        for c in range(k):
            if not (new == c).any():
                far = int(d[np.arange(m), new].argmax())
                new[far] = c
                centers[c] = full[far]
                d[far] = _distances(x[[far]], present[[far]], centers)[0]
        updated = _update(x, present, new, centers)
        converged = (new == labels).all() or np.abs(updated - centers).max() <= tol
        centers, labels = updated, new
        if converged:
            break
    d = _distances(x, present, centers)
    labels = d.argmin(1)
    return centers, labels, float(d[np.arange(m), labels].sum())


def kmeans_poses(norm: np.ndarray, k: int = 8, seed: int = 0, n_init: int = 10,
                 max_iter: int = 100, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic masked k-means: ``(centers (k, 17, 2) float32, assignment (M,) int64)``.

    NaN joints of ``norm`` are left out of distances and means (see the module docstring). The
    same input and ``seed`` give the same result; clusters are ordered largest first.
    """
    x = _check_norm(norm, "kmeans_poses")
    present = np.isfinite(x).all(-1)  # (M, 17)
    m = len(x)
    if not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"kmeans_poses k: expected a positive integer, found {k!r}. "
                          f"Fix: PN-GAN uses k = 8.")
    if not (isinstance(n_init, int) and n_init >= 1):
        raise ConfigError(f"kmeans_poses n_init: expected a positive integer, found {n_init!r}.")
    usable = present.any(1)
    if int(usable.sum()) < k:
        raise DataError(
            f"kmeans_poses: k-means with k={k} needs at least {k} poses with a keypoint, found "
            f"{int(usable.sum())} (of {m}). Fix: lower k or give more (or more confident) poses."
        )
    if not present[usable].any(0).all():
        missing = [j for j in range(NUM_KEYPOINTS) if not present[:, j].any()]
        raise DataError(f"kmeans_poses: keypoint(s) {missing} are missing in every pose, so the "
                        f"centres cannot place them. Fix: lower score_threshold in "
                        f"normalize_poses or give more poses.")
    x = np.where(present[..., None], x, 0.0)
    fill = x.sum(0) / present.sum(0)[:, None]  # (17, 2) joint means over the poses having it
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(n_init):
        run = _kmeans_once(x, present, fill, k, rng, max_iter, tol)
        if best is None or run[2] < best[2] - 1e-12:
            best = run
    centers, labels, inertia = best
    # Canonical order: largest cluster first, ties by the first pose assigned to it.
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.flatnonzero(labels == c)[0] if sizes[c] else m for c in range(k)])
    order = np.lexsort((first, -sizes))
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    log.info("k-means on %d poses, k=%d: inertia %.4g, cluster sizes %s",
             m, k, inertia, sizes[order].tolist())
    return centers[order].astype(np.float32), remap[labels].astype(np.int64)


def kmeans_poses_robust(norm: np.ndarray, k: int = 8, seed: int = 0, n_init: int = 10, min_cluster_size: int = 1,
                        max_rounds: int = 10) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`kmeans_poses` with outlier rejection: ``(centers, assignment with -1 for outliers, rounds)``.

    The rule: a cluster of fewer than ``min_cluster_size`` poses is not a canonical pose but a few
    odd ones (a detector's crossed-leg "diamond" on a missed person, a half-visible crop); its poses
    are set aside as outliers and k-means runs again on the rest, with the same ``k`` and seed,
    until every cluster holds at least ``min_cluster_size`` poses (at most ``max_rounds`` rounds).
    ``min_cluster_size=1`` is plain k-means.
    """
    x = _check_norm(norm, "kmeans_poses")
    if min_cluster_size <= 1:
        centers, labels = kmeans_poses(x, k=k, seed=seed, n_init=n_init)
        return centers, labels, 1
    keep = np.ones(len(x), bool)
    for rounds in range(1, max_rounds + 1):
        if int(keep.sum()) < k * min_cluster_size:
            raise DataError(
                f"cluster-poses: {int(keep.sum())} poses are left after setting aside {int((~keep).sum())} "
                f"outliers, fewer than k x min_cluster_size = {k} x {min_cluster_size}. Fix: lower k or "
                "min_cluster_size, or give more (or more confident) poses.")
        centers, labels = kmeans_poses(x[keep], k=k, seed=seed, n_init=n_init)
        sizes = np.bincount(labels, minlength=k)
        # an empty cluster has nothing to set aside (k-means left it empty: duplicates); only the small
        # clusters that hold poses are outliers
        small = (sizes > 0) & (sizes < min_cluster_size)
        if not small.any():
            if (sizes == 0).any():
                log.warning("cluster-poses: %d of the k=%d clusters are empty (fewer distinct poses than k)",
                            int((sizes == 0).sum()), k)
            out = np.full(len(x), -1, np.int64)
            out[keep] = labels
            return centers, out, rounds
        log.info("cluster-poses round %d: clusters of sizes %s are under min_cluster_size %d; setting aside "
                 "their %d poses as outliers", rounds, sizes[small].tolist(), min_cluster_size,
                 int(sizes[small].sum()))
        keep[np.flatnonzero(keep)[small[labels]]] = False
    raise DataError(f"cluster-poses: after {max_rounds} rounds of setting aside outliers some of the k={k} clusters "
                    f"still hold fewer than {min_cluster_size} poses. Fix: lower k or min_cluster_size.")


def assign(norm: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (masked distance, NaN joints ignored) per pose: (M,) int64."""
    x = _check_norm(norm, "assign poses")
    c = _check_norm(centers, "assign centers")
    present = np.isfinite(x).all(-1)
    return _distances(np.where(present[..., None], x, 0.0), present, c).argmin(1).astype(np.int64)


def render_canonical(centers: np.ndarray, out_hw: tuple[int, int] = (256, 128),
                     margin: float = 0.05) -> np.ndarray:
    """Normalised centres ``(k, 17, 2)`` to pixel keypoints ``(k, 17, 3)`` float32, score 1.

    Each pose is scaled uniformly (no distortion) so that its bounding box fills the frame's
    height (or width, whichever binds) less ``margin`` on each side, and centred: the way a
    detector crop frames a person.
    """
    c = _check_norm(centers, "render_canonical centers")
    if not np.isfinite(c).all():
        raise DataError("render_canonical: centres hold NaN; expected complete poses from "
                        "kmeans_poses.")
    h, w = (int(v) for v in out_hw)
    if h <= 0 or w <= 0 or not 0 <= margin < 0.5:
        raise ConfigError(f"render_canonical: expected out_hw > 0 and 0 <= margin < 0.5, found "
                          f"out_hw={tuple(out_hw)}, margin={margin}.")
    lo, hi = c.min(1), c.max(1)  # (k, 2)
    size = np.maximum(hi - lo, 1e-9)
    scale = np.minimum((1 - 2 * margin) * w / size[:, 0], (1 - 2 * margin) * h / size[:, 1])
    mid = (lo + hi) / 2
    xy = (c - mid[:, None]) * scale[:, None, None] + np.array([w / 2, h / 2])
    # Pixel centres are at integer coordinates: the frame spans -0.5 .. w - 0.5.
    xy -= 0.5
    out = np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], axis=-1)
    return out.astype(np.float32)


def skeleton_sheet(poses: np.ndarray, out_png: str | os.PathLike[str],
                   hw: tuple[int, int] = (256, 128), gap: int = 8) -> np.ndarray:
    """Draw k poses ``(k, 17, 3)`` (pixels of an ``hw`` frame) side by side; write a PNG.

    Returns the RGB uint8 sheet ``(H, k*W + (k+1)*gap, 3)``; each panel is numbered. The PNG
    is written to a temporary name and moved into place.
    """
    import cv2  # here, not at the top: planning a pipeline imports this module without cv2

    arr = check_keypoints(poses, "skeleton_sheet poses")
    h, w = (int(v) for v in hw)
    k = len(arr)
    sheet = np.full((h + 2 * gap, k * w + (k + 1) * gap, 3), 255, np.uint8)
    for i, pose in enumerate(arr):
        panel = np.full((h, w, 3), 32, np.uint8)
        panel = draw_skeleton(panel, pose, thickness=max(2, round(h / 64)),
                              radius=max(2, round(h / 64)))
        cv2.putText(panel, str(i), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
        x0 = gap + i * (w + gap)
        sheet[gap:gap + h, x0:x0 + w] = panel
    try:
        write_png(out_png, sheet)
    except OSError as exc:
        raise DataError(f"cannot write the skeleton sheet {out_png}: {exc.strerror or exc}. "
                        f"Fix: check the folder exists and is writable.") from None
    return sheet
