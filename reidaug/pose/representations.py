"""Dense pose representations that pose-guided generators take as input.

From COCO-17 keypoints (``(17, 3)`` or ``(B, 17, 3)`` = ``(x, y, score)``, see
:mod:`reidaug.pose.skeleton`) this computes, at any output size:

* :func:`heatmaps`: one Gaussian per keypoint, ``exp(-d^2 / (2 sigma^2))`` with peak 1.0 at the
  keypoint and all zeros for a missing one: the 18-channel pose input of PG2 (Ma et al., "Pose
  Guided Person Image Generation", NeurIPS 2017), Deformable GAN (Siarohin et al., CVPR 2018),
  PATN (Zhu et al., CVPR 2019) and PN-GAN (Qian et al., ECCV 2018). Their code
  (``cords_to_map`` in pose-gan / Pose-Transfer) uses sigma = 6 at 128x64; here sigma is in
  output pixels.
* :func:`limb_maps`: one map per limb of :data:`~reidaug.pose.skeleton.COCO17_LIMBS` (the 19
  mmpose / OpenPose-visualiser COCO links), ``exp(-d^2 / (2 sigma^2))`` where ``d`` is the
  distance to the limb *segment*: an anti-aliased thick line of value 1.0 on the segment.
* :func:`body_mask`: PG2's pose mask (their ``produce_ma_mask``: thick limbs and joint disks,
  then morphological closing/dilation): the union of thick limbs, joint disks, a filled torso
  polygon (shoulders, hips) and a head disk, dilated by a disk of radius ``dilation``. The
  dilation is done exactly rather than with a kernel: dilating a union of capsules / disks /
  a polygon by a disk of radius r is the union of the same shapes with r added to their radius
  (the polygon gains its edges as capsules of radius r, which the limbs already give).

Every function takes a numpy array (computed on the CPU with numpy) or a torch tensor (computed
on its device, batched) and returns the same kind. Keypoints given in a source frame
``src_hw`` are rescaled to the output frame ``out_hw`` with the pixel-centre convention of
``cv2.resize``: ``x_out = (x + 0.5) * W_out / W_src - 0.5``. A keypoint counts when its score is
above ``threshold`` (default 0: the score-0-means-missing contract; pass a detector's cutoff,
e.g. mmpose's 0.3, for raw detections) and its coordinates are finite.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from reidaug.errors import ConfigError, DataError
from reidaug.pose.keypoints import rescale_coords
from reidaug.pose.skeleton import COCO17_LIMBS, FACE, NUM_KEYPOINTS, TORSO

HW = tuple[int, int]


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # never import torch for a numpy caller
    return torch is not None and isinstance(x, torch.Tensor)


class _Ops:
    """The few array operations the maps need, for numpy or torch (on the tensor's device).

    ``xp`` is the module; torch takes numpy's ``axis=`` for ``stack``, ``amax`` and ``clip`` too.
    """

    def __init__(self, like: Any) -> None:
        self.torch = _is_tensor(like)
        if self.torch:
            import torch

            self.xp = torch
            self.device = like.device
        else:
            self.xp = np
            self.device = None

    def arange(self, n: int) -> Any:
        if self.torch:
            return self.xp.arange(n, dtype=self.xp.float32, device=self.device)
        return np.arange(n, dtype=np.float32)

    def where(self, cond: Any, a: Any, b: float) -> Any:
        return self.xp.where(cond, a, self.xp.full_like(a, b)) if self.torch \
            else np.where(cond, a, np.float32(b))

    def zeros_bool(self, shape: tuple[int, ...]) -> Any:
        if self.torch:
            return self.xp.zeros(shape, dtype=self.xp.bool, device=self.device)
        return np.zeros(shape, dtype=bool)

    def float32(self, x: Any) -> Any:
        return x.to(self.xp.float32) if self.torch else x.astype(np.float32)


def _check_hw(name: str, hw: Any) -> HW:
    try:
        h, w = (int(v) for v in hw)
        ok = h > 0 and w > 0 and (h, w) == tuple(hw)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"{name}: expected (height, width) as two positive integers, found {hw!r}. "
            f"Fix: pass e.g. (256, 128)."
        )
    return h, w


def _prepare(kp: Any, out_hw: Any, src_hw: Any, threshold: float
             ) -> tuple[_Ops, Any, Any, Any, bool, HW]:
    """Keypoints as batched output-frame ``x, y`` (B, 17) and a presence mask ``ok`` (B, 17)."""
    ops = _Ops(kp)
    if ops.torch:
        arr = kp.to(ops.xp.float32)
        shape = tuple(arr.shape)
    else:
        arr = np.asarray(kp, dtype=np.float32)
        shape = arr.shape
    single = len(shape) == 2
    if single:
        arr = arr[None]
    if len(arr.shape) != 3 or tuple(arr.shape[1:]) != (NUM_KEYPOINTS, 3):
        raise DataError(
            f"pose representation: expected COCO-17 keypoints of shape (17, 3) or (B, 17, 3) "
            f"as (x, y, score), found shape {shape}. Fix: reshape, or convert OpenPose-18 "
            f"with reidaug.pose.openpose.openpose18_to_coco17."
        )
    h, w = _check_hw("out_hw", out_hw)
    sh, sw = (h, w) if src_hw is None else _check_hw("src_hw", src_hw)
    x = rescale_coords(arr[..., 0], sw, w)  # (B, 17), the pixel-centre rule
    y = rescale_coords(arr[..., 1], sh, h)
    xp = ops.xp
    ok = (arr[..., 2] > threshold) & xp.isfinite(x) & xp.isfinite(y)  # (B, 17)
    x = ops.where(ok, x, 0.0)  # keeps NaN / inf of missing points out of the arithmetic
    y = ops.where(ok, y, 0.0)
    return ops, x, y, ok, single, (h, w)


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
        raise ConfigError(f"{name}: expected a positive number of output pixels, found "
                          f"{value!r}. Fix: pass e.g. 6.0.")
    return float(value)


def heatmaps(kp: Any, out_hw: HW, src_hw: HW | None = None, sigma: float = 6.0,
             threshold: float = 0.0) -> Any:
    """Gaussian keypoint heatmaps: (17, H, W) or (B, 17, H, W) float32, peak 1.0.

    ``sigma`` is in output pixels; a missing keypoint (score <= threshold) gives an all-zero map.
    """
    sigma = _check_positive("heatmaps sigma", sigma)
    ops, x, y, ok, single, (h, w) = _prepare(kp, out_hw, src_hw, threshold)
    inv = -0.5 / sigma**2
    # The 2-D Gaussian is separable: (B, 17, H, 1) * (B, 17, 1, W).
    gx = ops.xp.exp(inv * (ops.arange(w) - x[..., None]) ** 2)  # (B, 17, W)
    gy = ops.xp.exp(inv * (ops.arange(h) - y[..., None]) ** 2)  # (B, 17, H)
    gy = gy * ops.float32(ok)[..., None]
    maps = gy[..., :, None] * gx[..., None, :]  # (B, 17, H, W)
    return maps[0] if single else maps


def _segment_dist2(ops: _Ops, gx: Any, gy: Any, ax: Any, ay: Any, bx: Any, by: Any) -> Any:
    """Squared distance from every pixel to the segments a-b: (B, H, W) for (B,) endpoints."""
    vx, vy = (bx - ax)[:, None, None], (by - ay)[:, None, None]  # (B, 1, 1)
    dx, dy = gx - ax[:, None, None], gy - ay[:, None, None]  # (B, H, W)
    vv = vx * vx + vy * vy
    t = ops.xp.clip((dx * vx + dy * vy) / ops.where(vv > 0, vv, 1.0), 0.0, 1.0)  # a point: t = 0
    ex, ey = dx - t * vx, dy - t * vy
    return ex * ex + ey * ey


def _grid(ops: _Ops, h: int, w: int) -> tuple[Any, Any]:
    gx = ops.arange(w)[None, None, :]  # (1, 1, W)
    gy = ops.arange(h)[None, :, None]  # (1, H, 1)
    return gx, gy


def limb_maps(kp: Any, out_hw: HW, src_hw: HW | None = None, sigma: float = 3.0,
              threshold: float = 0.0) -> Any:
    """One map per COCO-17 limb (19, the mmpose skeleton): (19, H, W) or (B, 19, H, W) float32.

    Each map is ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance to the limb segment (1.0 on
    it); a limb with a missing end gives an all-zero map. Channel order = ``COCO17_LIMBS``.
    """
    sigma = _check_positive("limb_maps sigma", sigma)
    ops, x, y, ok, single, (h, w) = _prepare(kp, out_hw, src_hw, threshold)
    gx, gy = _grid(ops, h, w)
    inv = -0.5 / sigma**2
    maps = []
    for a, b in COCO17_LIMBS:
        d2 = _segment_dist2(ops, gx, gy, x[:, a], y[:, a], x[:, b], y[:, b])  # (B, H, W)
        present = ops.float32(ok[:, a] & ok[:, b])[:, None, None]
        maps.append(ops.xp.exp(inv * d2) * present)
    out = ops.xp.stack(maps, axis=1)  # (B, 19, H, W)
    return out[0] if single else out


def _inside_polygon(ops: _Ops, gx: Any, gy: Any, px: Any, py: Any) -> Any:
    """Even-odd point-in-polygon test for (B, P) vertices: (B, H, W) bool."""
    inside = None
    n = px.shape[1]
    for i in range(n):
        ax, ay = px[:, i, None, None], py[:, i, None, None]
        bx, by = px[:, (i + 1) % n, None, None], py[:, (i + 1) % n, None, None]
        crosses = (ay > gy) != (by > gy)  # (B, H, 1)
        dy = ops.where(by != ay, by - ay, 1.0)
        x_at = ax + (bx - ax) * (gy - ay) / dy  # where the edge crosses this row
        hit = crosses & (gx < x_at)  # (B, H, W)
        inside = hit if inside is None else inside ^ hit
    return inside


def body_mask(kp: Any, out_hw: HW, src_hw: HW | None = None, limb_width: float | None = None,
              dilation: float | None = None, threshold: float = 0.0) -> Any:
    """PG2's pose mask: (H, W) or (B, H, W) bool, True on the body.

    The union of: capsules of diameter ``limb_width`` around every limb with both ends present,
    disks of that diameter on every present keypoint, the filled torso quadrilateral (left
    shoulder, right shoulder, right hip, left hip; only when all four are present), and a head
    disk around the present face points (centre = their mean, radius = their largest distance
    from it + limb_width / 2); then dilated by a disk of radius ``dilation``. Both are in output
    pixels; by default ``limb_width = H / 25.6`` and ``dilation = H / 51.2`` (10 and 5 at 256).
    """
    ops, x, y, ok, single, (h, w) = _prepare(kp, out_hw, src_hw, threshold)
    lw = h / 25.6 if limb_width is None else _check_positive("body_mask limb_width", limb_width)
    if dilation is None:
        dil = h / 51.2
    elif isinstance(dilation, (int, float)) and np.isfinite(dilation) and dilation >= 0:
        dil = float(dilation)
    else:
        raise ConfigError(f"body_mask dilation: expected a number of output pixels >= 0, "
                          f"found {dilation!r}. Fix: pass e.g. 5.0 (0 = no dilation).")
    gx, gy = _grid(ops, h, w)
    b = x.shape[0]
    r2 = (lw / 2 + dil) ** 2
    mask = ops.zeros_bool((b, h, w))
    for a, c in COCO17_LIMBS:
        d2 = _segment_dist2(ops, gx, gy, x[:, a], y[:, a], x[:, c], y[:, c])
        mask |= (d2 <= r2) & (ok[:, a] & ok[:, c])[:, None, None]
    for j in range(NUM_KEYPOINTS):  # isolated joints (e.g. only a nose) still mark the body
        d2 = (gx - x[:, j, None, None]) ** 2 + (gy - y[:, j, None, None]) ** 2
        mask |= (d2 <= r2) & ok[:, j, None, None]
    # Head disk around the present face points.
    face = list(FACE)
    fok = ops.float32(ok[:, face])  # (B, 5)
    n = fok.sum(1)  # (B,)
    denom = ops.where(n > 0, n, 1.0)
    cx = (x[:, face] * fok).sum(1) / denom
    cy = (y[:, face] * fok).sum(1) / denom
    spread = ((x[:, face] - cx[:, None]) ** 2 + (y[:, face] - cy[:, None]) ** 2) ** 0.5 * fok
    radius = ops.xp.amax(spread, axis=1) + lw / 2 + dil  # (B,)
    d2 = (gx - cx[:, None, None]) ** 2 + (gy - cy[:, None, None]) ** 2
    mask |= (d2 <= (radius**2)[:, None, None]) & (n > 0)[:, None, None]
    # Torso polygon (its edges are limbs, already dilated above).
    torso = list(TORSO)
    all_torso = ok[:, torso].all(1)  # (B,)
    mask |= _inside_polygon(ops, gx, gy, x[:, torso], y[:, torso]) & all_torso[:, None, None]
    return mask[0] if single else mask
