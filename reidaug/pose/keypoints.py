"""Keypoint frames: the one pixel-centre rule for moving keypoints between image sizes.

Keypoints are COCO-17 ``(x, y, score)`` in pixels of the image they were found on, with pixel
centres at integer coordinates, so a ``W``-wide frame spans ``-0.5 .. W - 0.5``. Resizing an image
from ``(H, W)`` to ``(H', W')`` (``cv2.resize`` does the same) maps

    x' = (x + 0.5) * W' / W - 0.5        y' = (y + 0.5) * H' / H - 0.5

Every conversion in the project (generators, pose maps, inspect, the HDF5 writer) calls
:func:`rescale_keypoints`; the argument order is always *from*, then *to*. Works on numpy arrays
and torch tensors (any leading shape, last axis ``(x, y[, score, ...])``; scores kept).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def rescale_coords(coord: Any, src_len: Any, dst_len: Any) -> Any:
    """One axis: ``(c + 0.5) * dst / src - 0.5`` (numpy, torch or Python numbers)."""
    return (coord + 0.5) * (dst_len / src_len) - 0.5


def rescale_keypoints(kp: Any, src_hw: Any, dst_hw: Any) -> Any:
    """Keypoints ``(..., K, 2+)`` in pixels of ``src_hw`` → pixels of ``dst_hw`` (a new array).

    ``src_hw`` / ``dst_hw``: one ``(h, w)``, or one per pose ``(N, 2)`` for ``kp`` ``(N, K, 2+)``.
    A numpy input comes back as float32; equal sizes return an unchanged copy (bit for bit).
    """
    if _is_torch(kp):
        import torch

        out = kp.clone()
        src = torch.as_tensor(src_hw, dtype=torch.float64, device=kp.device).reshape(-1, 2)
        dst = torch.as_tensor(dst_hw, dtype=torch.float64, device=kp.device).reshape(-1, 2)
        if torch.equal(src, dst) or (src.shape[0] == 1 and dst.shape[0] == 1 and bool((src == dst).all())):
            return out
        ratio = (dst / src).to(kp.dtype)  # (N or 1, 2) as (h, w)
        rx, ry = ratio[:, 1], ratio[:, 0]
        if kp.dim() >= 3 and ratio.shape[0] > 1:
            rx, ry = rx.reshape(-1, *([1] * (kp.dim() - 2))), ry.reshape(-1, *([1] * (kp.dim() - 2)))
        out[..., 0] = (kp[..., 0] + 0.5) * rx - 0.5
        out[..., 1] = (kp[..., 1] + 0.5) * ry - 0.5
        return out
    out = np.array(kp, dtype=np.float32, copy=True)
    src = np.asarray(src_hw, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_hw, dtype=np.float64).reshape(-1, 2)
    if src.shape == dst.shape and np.array_equal(src, dst):
        return out
    # float64 ratios as arrays (never 0-d scalars, whose promotion differs between numpy 1 and 2):
    # the arithmetic runs in float64 and is rounded to float32 once
    ratio = dst / src  # (N or 1, 2) as (h, w)
    lead = ratio.shape[0] if out.ndim >= 3 and ratio.shape[0] > 1 else 1
    rx = ratio[:, 1].reshape(lead, *([1] * max(out.ndim - 2, 1)))  # broadcasts over K
    ry = ratio[:, 0].reshape(lead, *([1] * max(out.ndim - 2, 1)))
    if out.ndim == 2:
        rx, ry = rx.reshape(1), ry.reshape(1)
    out[..., 0] = (out[..., 0] + 0.5) * rx - 0.5
    out[..., 1] = (out[..., 1] + 0.5) * ry - 0.5
    return out


def confident_mask(kp: Any, threshold: float) -> Any:
    """``(..., K)`` bool: score above ``threshold`` and finite coordinates (numpy or torch)."""
    if _is_torch(kp):
        import torch

        return (kp[..., 2] > threshold) & torch.isfinite(kp[..., :2]).all(-1)
    kp = np.asarray(kp, dtype=np.float32)
    return (kp[..., 2] > threshold) & np.isfinite(kp[..., :2]).all(-1)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def letterbox_geometry(
    src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """How :func:`reidaug.data.images.letterbox` places an image of ``src_hw`` in ``dst_hw``: the scale, the scaled
    size ``(h, w)`` and the top-left offset ``(top, left)`` of the scaled image.

    One scale ``min(H'/H, W'/W)`` for both axes (the aspect ratio kept), the scaled size rounded
    and at least 1 pixel, centred (the odd pixel of a margin goes to the bottom / right).
    """
    (h, w), (th, tw) = src_hw, dst_hw
    scale = min(th / h, tw / w)
    nh, nw = min(th, max(1, round(h * scale))), min(tw, max(1, round(w * scale)))
    return scale, (nh, nw), ((th - nh) // 2, (tw - nw) // 2)


def letterbox_keypoints(kp: np.ndarray, src_hw: Any, dst_hw: tuple[int, int]) -> np.ndarray:
    """Keypoints ``(N, K, 2+)`` of images of sizes ``src_hw`` ``(N, 2)`` → the frame of their
    :func:`reidaug.data.images.letterbox` into ``dst_hw``: the pixel-centre rule with the scaled
    size's own ratios, then the margin's offset. Float32 out; other columns (scores) unchanged."""
    return _letterbox_map(kp, src_hw, dst_hw, inverse=False, where="letterbox_keypoints")


def unletterbox_keypoints(kp: np.ndarray, src_hw: Any, dst_hw: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`letterbox_keypoints`: keypoints ``(N, K, 2+)`` in the padded ``dst_hw``
    frame → the frames of the original images of sizes ``src_hw`` ``(N, 2)``."""
    return _letterbox_map(kp, src_hw, dst_hw, inverse=True, where="unletterbox_keypoints")


def _letterbox_map(kp: np.ndarray, src_hw: Any, dst_hw: tuple[int, int], inverse: bool, where: str) -> np.ndarray:
    """Both directions of the letterbox frame change, per pose (each image has its own geometry)."""
    out = np.array(kp, dtype=np.float32, copy=True)
    src = np.asarray(src_hw, dtype=np.int64).reshape(-1, 2)
    if len(src) not in (1, out.shape[0]):
        raise ValueError(f"{where}: {len(src)} source sizes for {out.shape[0]} poses (expected 1 or "
                         f"{out.shape[0]})")
    for i in range(out.shape[0]):
        h, w = (int(v) for v in src[i if len(src) > 1 else 0])
        _, (nh, nw), (top, left) = letterbox_geometry((h, w), dst_hw)
        x, y = out[i, :, 0].astype(np.float64), out[i, :, 1].astype(np.float64)
        if inverse:
            out[i, :, 0] = (x - left + 0.5) * (w / nw) - 0.5
            out[i, :, 1] = (y - top + 0.5) * (h / nh) - 0.5
        else:
            out[i, :, 0] = (x + 0.5) * (nw / w) - 0.5 + left
            out[i, :, 1] = (y + 0.5) * (nh / h) - 0.5 + top
    return out
