"""FReID: the Fréchet distance between re-ID features of generated and real images.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule", NeurIPS 2017 (FID), with
Gaussians fitted to re-ID features instead of Inception features. Per target camera c:
FD(fakes translated to c, real images of c) beside FD(the untransferred origins of the same
fakes, real images of c). Lower than the baseline = the translation moved the features towards
camera c.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from reidaug.errors import ConfigError, DataError
from reidaug.eval.inputs import int_array

LOG = logging.getLogger(__name__)


def _feature_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected features of shape (N, D); found shape {arr.shape}.")
    if arr.shape[0] < 2:
        raise DataError(
            f"{name}: {arr.shape[0]} feature rows; a covariance needs at least 2. Fix: pass more "
            f"images (the Fréchet distance is only meaningful with many more than D)."
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: features contain NaN or inf. Check the model output.")
    return arr


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a: Any, feats_b: Any, *, eps: float = 0.0) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances (N - 1, as
    pytorch-fid). The trace of the matrix square root is computed from eigenvalues of the
    symmetric PSD matrix ``S_a^(1/2) S_b S_a^(1/2)`` (same eigenvalues as ``S_a S_b``), so it
    needs no complex sqrtm and no eps fallback. ``eps`` adds ``eps * I`` to both covariances.

    With N <= D a covariance is rank-deficient (rank <= N - 1): the value is still defined but
    biased upward, more so for smaller N; compare only distances computed from equal N (as
    :func:`freid_per_camera` does for a fake set and its baseline). A warning is logged.
    """
    a = _feature_matrix(feats_a, "feats_a")
    b = _feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"frechet_distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]}); "
                        f"extract both with the same model.")
    if eps < 0:
        raise ConfigError(f"frechet_distance: eps must be >= 0; got {eps!r}.")
    d = a.shape[1]
    if min(a.shape[0], b.shape[0]) <= d:
        LOG.warning("Fréchet distance from %d and %d samples of %d-d features: covariances are "
                    "rank-deficient, the value is biased upward (compare only at equal N)",
                    a.shape[0], b.shape[0], d)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.cov(a, rowvar=False).reshape(d, d) + eps * np.eye(d)
    s_b = np.cov(b, rowvar=False).reshape(d, d) + eps * np.eye(d)
    r = _psd_sqrt(s_a)
    m = r @ s_b @ r
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)
    return max(fd, 0.0)  # rounding can give -1e-12 for identical sets


def freid_per_camera(
    fake_feats: Any,
    fake_target_camids: Any,
    fake_origins: Any,
    real_feats: Any,
    real_camids: Any,
    *,
    eps: float = 0.0,
) -> dict[int, dict[str, Any]]:
    """FReID per target camera: {c: {fd, fd_baseline, num_fakes, num_real, num_baseline, note}}.

    ``fd`` = FD(fakes whose target camera is c, real images of camera c); ``fd_baseline`` =
    FD(the origin images of those fakes, untransferred, real images of camera c), over the
    fakes that have an origin (paired: same N as the fakes when all have one). Fakes with
    target -1 (not camera-transferred) are left out. A distance that cannot be computed (fewer
    than 2 images on a side) is None with a note; ``note`` also flags N <= D.
    """
    ff = np.asarray(fake_feats)
    rf = np.asarray(real_feats)
    tc = int_array(fake_target_camids, "fake_target_camids", ff.shape[0])
    fo = int_array(fake_origins, "fake_origins", ff.shape[0])
    rc = int_array(real_camids, "real_camids", rf.shape[0])
    d = ff.shape[1] if ff.ndim == 2 else 0
    out: dict[int, dict[str, Any]] = {}
    for c in sorted(int(x) for x in np.unique(tc[tc >= 0])):
        sel = tc == c
        real_c = rf[rc == c]
        src = fo[sel & (fo >= 0)]
        notes = []
        entry: dict[str, Any] = {"num_fakes": int(sel.sum()), "num_real": int(len(real_c)),
                                 "num_baseline": int(len(src))}
        for key, feats in (("fd", ff[sel]), ("fd_baseline", rf[src])):
            if len(feats) < 2 or len(real_c) < 2:
                entry[key] = None
                notes.append(f"{key}: fewer than 2 images on a side")
            else:
                entry[key] = frechet_distance(feats, real_c, eps=eps)
        if min(entry["num_fakes"], entry["num_real"]) <= d:
            notes.append(f"N <= D={d}: covariance rank-deficient, FD biased upward; compare fd "
                         f"with fd_baseline only (same N)")
        entry["note"] = "; ".join(notes)
        out[c] = entry
    return out



def _against(ff: np.ndarray, fo: np.ndarray, rf: np.ndarray, ref: np.ndarray, eps: float,
             seed: int) -> tuple[float | None, float | None, float | None, list[str]]:
    """FD(fakes, ref), FD(the fakes' origins in ``rf``, ref), FD of two random halves of ``ref`` (the floor
    at that N), and the notes: the part :func:`freid_overall` and :func:`freid_to_target` share."""
    src = fo[fo >= 0]
    fd, fd_base = (frechet_distance(a, ref, eps=eps) if len(a) >= 2 and len(ref) >= 2 else None
                   for a in (ff, rf[src]))
    perm = np.random.default_rng(seed).permutation(len(ref))
    half = len(ref) // 2
    floor = frechet_distance(ref[perm[:half]], ref[perm[half:2 * half]], eps=eps) if half >= 2 else None
    notes = [] if len(src) else ["no origins (unconditional samples): no baseline"]
    d = ref.shape[1] if ref.ndim == 2 else 0
    if min(len(ff), half) <= d:
        notes.append(f"N <= D={d}: covariance rank-deficient, FD biased upward")
    return fd, fd_base, floor, notes


def freid_overall(fake_feats: Any, fake_origins: Any, real_feats: Any, *, eps: float = 0.0,
                  seed: int = 0) -> dict[str, Any]:
    """FReID of fakes that belong to no target camera (LSRO's unconditional samples, a dataset-to-dataset
    translation) against *all* real images: ``{fd, fd_baseline, fd_real_halves, num_fakes, num_real, note}``.

    ``fd_baseline``: FD(the fakes' origins, all real) over the fakes that have one (None for unconditional
    samples). ``fd_real_halves``: FD between two random halves of the real images (``seed``), the distance
    a perfect generator would sit near at that N: a floor to read ``fd`` against (FD grows as N shrinks, so
    compare numbers at like N).
    """
    ff, rf = np.asarray(fake_feats), np.asarray(real_feats)
    fo = int_array(fake_origins, "fake_origins", ff.shape[0])
    fd, fd_base, floor, notes = _against(ff, fo, rf, rf, eps, seed)
    return {"num_fakes": int(len(ff)), "num_real": int(len(rf)), "fd": fd, "fd_baseline": fd_base,
            "fd_real_halves": floor, "note": "; ".join(notes)}


def freid_to_target(fake_feats: Any, fake_origins: Any, real_feats: Any, target_feats: Any, *, eps: float = 0.0,
                    seed: int = 0) -> dict[str, Any]:
    """FReID of dataset-to-dataset translations (PTGAN / SPGAN) against the *target* dataset's images, the
    style they were translated into: ``{fd, fd_baseline, fd_target_halves, num_fakes, num_target, note}``.

    ``fd``: FD(fakes, target). ``fd_baseline``: FD(the fakes' untranslated origins, target), the gap before
    translation. ``fd_target_halves``: FD between two random halves of the target (``seed``), the floor at
    that N. Lower is closer to the target's style; read it beside the identity metrics, since a generator
    that drops the person can also come close.
    """
    ff, rf, tf = np.asarray(fake_feats), np.asarray(real_feats), np.asarray(target_feats)
    fo = int_array(fake_origins, "fake_origins", ff.shape[0])
    fd, fd_base, floor, notes = _against(ff, fo, rf, tf, eps, seed)
    return {"num_fakes": int(len(ff)), "num_target": int(len(tf)), "fd": fd, "fd_baseline": fd_base,
            "fd_target_halves": floor, "note": "; ".join(notes)}
