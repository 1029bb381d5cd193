"""Camera style by colour statistics: the non-GAN baseline of camera-style transfer.

CamStyle (Zhong et al., CVPR 2018) renders a train image in another camera's style with a
CycleGAN per camera pair. The cheap alternative measured against it here moves the image's
colour statistics from its own camera's to the target camera's, in CIE Lab (8-bit OpenCV Lab:
L, a, b each 0..255), with statistics over the *train* images of each camera only:

- ``reinhard`` — per channel, ``(x - mean_s) / std_s * std_t + mean_t`` with the source and
  target *camera's* mean and standard deviation (Reinhard et al., "Color Transfer between
  Images", IEEE CG&A 2001, applied at the camera level rather than per image: per-image
  statistics would paint every person in the camera's average colours and erase the clothes
  that identify them);
- ``histogram`` — per channel, the monotone map that sends the source camera's cumulative
  histogram onto the target camera's (histogram matching as a 256-entry lookup table).

Both are a fixed function of the pixel value per (source, target) pair: the person's relative
colours, texture and shape are kept exactly, which is the point of the baseline — if a GAN
cannot beat a colour shift, its cost buys nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import cv2
import numpy as np

Method = Literal["reinhard", "histogram"]
METHODS: tuple[str, ...] = ("reinhard", "histogram")


@dataclass
class CameraStats:
    """Per-camera Lab statistics accumulated over images: pixel count, sums, and 256-bin histograms."""

    count: dict[int, int] = field(default_factory=dict)
    sums: dict[int, np.ndarray] = field(default_factory=dict)   # (3,) float64: sum of x
    sq: dict[int, np.ndarray] = field(default_factory=dict)     # (3,) float64: sum of x^2
    hist: dict[int, np.ndarray] = field(default_factory=dict)   # (3, 256) int64

    def add(self, camera: int, rgb: np.ndarray) -> None:
        lab = to_lab(rgb).reshape(-1, 3)
        values = lab.astype(np.float64)
        self.count[camera] = self.count.get(camera, 0) + len(lab)
        self.sums[camera] = self.sums.get(camera, np.zeros(3)) + values.sum(0)
        self.sq[camera] = self.sq.get(camera, np.zeros(3)) + (values * values).sum(0)
        h = np.stack([np.bincount(lab[:, c], minlength=256) for c in range(3)]).astype(np.int64)
        self.hist[camera] = self.hist.get(camera, np.zeros((3, 256), np.int64)) + h

    @property
    def cameras(self) -> list[int]:
        return sorted(self.count)

    def mean_std(self, camera: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.count[camera]
        mean = self.sums[camera] / n
        var = np.maximum(self.sq[camera] / n - mean * mean, 0.0)
        return mean, np.sqrt(var)

    def summary(self) -> dict[str, dict[str, list[float]]]:
        """Mean and std of L, a, b per camera (what the stage reports)."""
        out = {}
        for cam in self.cameras:
            mean, std = self.mean_std(cam)
            out[str(cam)] = {"mean": [round(float(v), 2) for v in mean], "std": [round(float(v), 2) for v in std]}
        return out


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> uint8 OpenCV Lab (H, W, 3)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)


def camera_stats(images: Iterable[tuple[int, np.ndarray]]) -> CameraStats:
    """Accumulate :class:`CameraStats` over ``(camera, rgb uint8)`` pairs."""
    stats = CameraStats()
    for camera, rgb in images:
        stats.add(int(camera), rgb)
    return stats


def lookup_tables(stats: CameraStats, source: int, target: int, method: Method) -> np.ndarray:
    """The (3, 256) uint8 lookup table per Lab channel that moves camera ``source``'s statistics
    onto camera ``target``'s."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; found {method!r}")
    values = np.arange(256, dtype=np.float64)
    if method == "reinhard":
        (ms, ss), (mt, st) = stats.mean_std(source), stats.mean_std(target)
        scale = np.where(ss > 1e-6, st / np.maximum(ss, 1e-6), 1.0)
        table = (values[None, :] - ms[:, None]) * scale[:, None] + mt[:, None]
    else:
        table = np.empty((3, 256))
        for c in range(3):
            cdf_s = np.cumsum(stats.hist[source][c]) / max(1, stats.hist[source][c].sum())
            cdf_t = np.cumsum(stats.hist[target][c]) / max(1, stats.hist[target][c].sum())
            # each source level goes to the first target level whose CDF reaches the source's
            table[c] = np.minimum(np.searchsorted(cdf_t, cdf_s - 1e-12, side="left"), 255)
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def apply_tables(rgb: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Map an RGB uint8 image through per-Lab-channel ``tables`` (3, 256); returns RGB uint8."""
    lab = to_lab(rgb)
    out = np.empty_like(lab)
    for c in range(3):
        out[..., c] = tables[c][lab[..., c]]
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
