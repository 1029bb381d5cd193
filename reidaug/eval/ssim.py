"""SSIM and mask-SSIM as PG2 / Deformable GAN compute them.

Wang et al., "Image Quality Assessment: From Error Visibility to Structural Similarity", TIP
2004, computed as PG2 / Deformable GAN evaluate with scikit-image's ``compare_ssim(gaussian_
weights=True, sigma=1.5, use_sample_covariance=False, multichannel=True)``: an 11-tap Gaussian
window (sigma 1.5, truncated at 3.5 sigma), K1 0.01, K2 0.03, population covariance, the SSIM
map averaged over the pixels whose window lies inside the image (skimage crops 5 pixels at each
border) and then over channels. Data range 255 by default (Deformable GAN passes
``generated.max() - generated.min()``, which is near 255 for natural images). Mask-SSIM is
PG2's: both images multiplied by the body mask first. Needs ground-truth images, which real data
lacks; the synthetic dataset has them (:mod:`reidaug.eval.synthetic_truth`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from reidaug.errors import ConfigError, DataError

# SSIM constants of Wang et al. 2004 as scikit-image applies them with gaussian_weights=True.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # scipy's truncate=3.5 -> 5, an 11-tap window
SSIM_K1, SSIM_K2 = 0.01, 0.03
_SSIM_TAPS = np.exp(-0.5 * (np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
_SSIM_TAPS /= _SSIM_TAPS.sum()  # (11,) float64, sums to 1 like scipy.ndimage.gaussian_filter
# Images per SSIM step: about this many pixel values, so the five filtered maps stay in cache
# (measured: one 256x128 pair at a time is 8x faster than 64 at once).
_SSIM_CHUNK_ELEMENTS = 150_000


def _ssim_stack(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """(N, H, W, C) float64 and whether the input was a single image."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        return arr[None, :, :, None].astype(np.float64), True
    if arr.ndim == 3:
        return arr[None].astype(np.float64), True
    if arr.ndim == 4:
        return arr.astype(np.float64), False
    raise DataError(f"{name}: expected (H, W), (H, W, C) or (N, H, W, C); found shape {arr.shape}.")


def _valid_gaussian(x: np.ndarray) -> np.ndarray:
    """Separable 11-tap Gaussian over axes -3 (H) and -2 (W), 'valid' part only."""
    taps = _SSIM_TAPS
    k = len(taps)
    h, w = x.shape[-3] - k + 1, x.shape[-2] - k + 1
    v = taps[0] * x[..., 0:h, :, :]
    for i in range(1, k):
        v += taps[i] * x[..., i:i + h, :, :]
    out = taps[0] * v[..., :, 0:w, :]
    for i in range(1, k):
        out += taps[i] * v[..., :, i:i + w, :]
    return out


def _ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """(N,) SSIM of float64 (N, H, W, C) pairs: mean over the valid map, then over channels."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ux, uy, uxx, uyy, uxy = _valid_gaussian(np.stack([a, b, a * a, b * b, a * b]))
    vx = uxx - ux * ux  # population (co)variances, weighted by the window
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2)).mean(axis=1)  # (N, C) -> (N,)


def ssim(a: Any, b: Any, *, data_range: float = 255.0) -> float | np.ndarray:
    """SSIM of Wang et al. 2004 as PG2 / Deformable GAN compute it (module docstring).

    ``a``, ``b``: one image (H, W) or (H, W, C), or a batch (N, H, W, C), same shapes, any
    numeric dtype (compared as float64 in units of ``data_range``). Returns a float for one
    image, an (N,) float64 array for a batch. H and W must be at least 11.
    """
    x, single = _ssim_stack(a, "ssim a")
    y, _ = _ssim_stack(b, "ssim b")
    if x.shape != y.shape:
        raise DataError(f"ssim: shapes differ: {np.shape(a)} vs {np.shape(b)}. Fix: resize one "
                        f"to the other first.")
    win = 2 * SSIM_RADIUS + 1
    if min(x.shape[1:3]) < win:
        raise DataError(f"ssim: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                        f"{win}x{win} window.")
    if not data_range > 0:
        raise ConfigError(f"ssim: data_range must be > 0; got {data_range!r}.")
    per = max(1, _SSIM_CHUNK_ELEMENTS // max(1, int(np.prod(x.shape[1:]))))
    out = np.concatenate([_ssim_batch(x[i:i + per], y[i:i + per], float(data_range))
                          for i in range(0, len(x), per)]) if len(x) else np.zeros(0)
    return float(out[0]) if single else out


def mask_ssim(a: Any, b: Any, mask: Any, *, data_range: float = 255.0) -> float | np.ndarray:
    """PG2's mask-SSIM: :func:`ssim` of ``a * mask`` and ``b * mask``.

    ``mask``: (H, W) or (N, H, W) (bool or float in [0, 1]; a trailing channel axis of 1 is
    allowed), broadcast over channels, e.g. :func:`reidaug.pose.representations.body_mask`.
    """
    x, single = _ssim_stack(a, "mask_ssim a")
    y, _ = _ssim_stack(b, "mask_ssim b")
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim in (3, 4) and m.shape[-1] == 1 and m.shape[-3:-1] == x.shape[1:3]:
        m = m[..., 0]  # (H, W, 1) or (N, H, W, 1)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != x.shape[1:3] or m.shape[0] not in (1, x.shape[0]):
        raise DataError(f"mask_ssim: mask of shape {np.shape(mask)} does not fit images of shape "
                        f"{np.shape(a)}; expected (H, W) or (N, H, W).")
    m = m[..., None]  # (N, H, W, 1)
    r = ssim(x * m, y * m, data_range=data_range)
    return float(r[0]) if single else r


def paired_ssim(
    fakes: Sequence[np.ndarray], refs: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and mask-SSIM (NaN where no mask) per pair; refs are resized to each fake's size."""
    import cv2

    n = len(fakes)
    plain = np.full(n, np.nan)
    masked = np.full(n, np.nan)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(fakes):
        groups.setdefault(tuple(np.shape(f)), []).append(i)
    for shape, idx in groups.items():
        h, w = shape[:2]
        a = np.stack([fakes[i] for i in idx])
        b = np.stack([r if r.shape[:2] == (h, w) else cv2.resize(r, (w, h), interpolation=cv2.INTER_LINEAR)
                      for r in (np.asarray(refs[i]) for i in idx)])
        plain[idx] = ssim(a, b)
        if masks is not None:
            has = [k for k, i in enumerate(idx) if masks[i] is not None]
            if has:
                ms = [np.asarray(masks[idx[k]], dtype=np.float32) for k in has]
                m = np.stack([x if x.shape == (h, w) else cv2.resize(x, (w, h), interpolation=cv2.INTER_NEAREST)
                              for x in ms])
                masked[[idx[k] for k in has]] = mask_ssim(a[has], b[has], m)
    return plain, masked
