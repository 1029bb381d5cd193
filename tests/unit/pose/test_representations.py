"""Heatmaps, limb maps and PG2 body masks: values at known keypoints, rescaling, numpy = torch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reidaug.errors import ConfigError, DataError
from reidaug.pose.representations import body_mask, heatmaps, limb_maps
from reidaug.pose.skeleton import COCO17_LIMBS, L_ANK, L_KNE, L_SHO, NOSE, R_SHO


def _pose() -> np.ndarray:
    """A plausible standing pose in a 256x128 frame, every point present (score 0.9)."""
    xy = [(64, 30), (68, 26), (60, 26), (73, 28), (55, 28), (80, 60), (48, 60), (86, 95),
          (42, 95), (88, 128), (40, 128), (74, 130), (54, 130), (75, 180), (53, 180),
          (76, 230), (52, 230)]
    return np.array([(x, y, 0.9) for x, y in xy], np.float32)


def test_heatmap_peak_value_location_and_sigma() -> None:
    kp = _pose()
    maps = heatmaps(kp, (256, 128), sigma=6.0)
    assert maps.shape == (17, 256, 128) and maps.dtype == np.float32
    for j in range(17):
        y, x = np.unravel_index(maps[j].argmax(), maps[j].shape)
        assert (x, y) == (kp[j, 0], kp[j, 1])
        assert maps[j, y, x] == pytest.approx(1.0, abs=1e-6)
    # one sigma away (along x and along y) the value is exp(-1/2)
    x, y = int(kp[NOSE, 0]), int(kp[NOSE, 1])
    assert maps[NOSE, y, x + 6] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert maps[NOSE, y - 6, x] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert maps[NOSE, y + 3, x + 4] == pytest.approx(math.exp(-25 / 72), rel=1e-5)


def test_heatmap_missing_keypoint_and_threshold_give_zero_maps() -> None:
    kp = _pose()
    kp[L_KNE, 2] = 0.0  # missing
    kp[NOSE, 2] = 0.2  # below a detector cutoff
    kp[L_ANK, :2] = np.nan  # a NaN coordinate is missing too, and must not poison anything
    maps = heatmaps(kp, (256, 128), threshold=0.3)
    assert not maps[L_KNE].any() and not maps[NOSE].any() and not maps[L_ANK].any()
    assert np.isfinite(maps).all()
    assert maps[L_SHO].max() == pytest.approx(1.0)
    # the default threshold 0 keeps the low-scored nose
    assert heatmaps(kp, (256, 128))[NOSE].max() == pytest.approx(1.0)


def test_rescaling_between_frames_uses_pixel_centres() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[NOSE] = (10.25, 20.25, 1.0)  # (x + 0.5) * 2 - 0.5 = 21, (y + 0.5) * 2 - 0.5 = 41
    maps = heatmaps(kp, (256, 128), src_hw=(128, 64), sigma=4.0)
    y, x = np.unravel_index(maps[NOSE].argmax(), maps[NOSE].shape)
    assert (x, y) == (21, 41) and maps[NOSE, y, x] == pytest.approx(1.0, abs=1e-6)
    # anisotropic: only the height changes
    maps = heatmaps(kp, (64, 64), src_hw=(128, 64))
    y, x = np.unravel_index(maps[NOSE].argmax(), maps[NOSE].shape)
    assert (x, y) == (10, 10)


def test_batched_input_matches_single_poses() -> None:
    a, b = _pose(), _pose()
    b[:, 0] += 7
    batch = heatmaps(np.stack([a, b]), (128, 64), src_hw=(256, 128))
    assert batch.shape == (2, 17, 128, 64)
    np.testing.assert_allclose(batch[1], heatmaps(b, (128, 64), src_hw=(256, 128)))


def _dist_to_segment(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    v = b - a
    t = np.clip(((px - a) @ v) / (v @ v), 0, 1)
    return np.linalg.norm(px - (a + t[:, None] * v), axis=1)


def test_limb_maps_are_one_on_the_segment_and_fall_off_with_distance() -> None:
    kp = _pose()
    kp[R_SHO, 2] = 0.0
    maps = limb_maps(kp, (256, 128), sigma=3.0)
    assert maps.shape == (len(COCO17_LIMBS), 256, 128) and maps.dtype == np.float32
    for i, (a, b) in enumerate(COCO17_LIMBS):
        if R_SHO in (a, b):
            assert not maps[i].any(), "a limb with a missing end must be empty"
            continue
        for t in (0.0, 0.3, 1.0):
            x, y = kp[a, :2] + t * (kp[b, :2] - kp[a, :2])
            if float(x).is_integer() and float(y).is_integer():
                assert maps[i, int(y), int(x)] == pytest.approx(1.0, abs=1e-5)
    # every pixel's value is exp(-d^2 / 2 sigma^2) of its distance to the segment
    i = COCO17_LIMBS.index((L_ANK, L_KNE))
    yy, xx = np.mgrid[0:256, 0:128]
    px = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    d = _dist_to_segment(px, kp[L_ANK, :2].astype(np.float64), kp[L_KNE, :2].astype(np.float64))
    np.testing.assert_allclose(maps[i].ravel(), np.exp(-d**2 / 18), atol=1e-6)


def small_head_only_limbs(kp: np.ndarray) -> np.ndarray:
    """The limb capsules alone (what the mask would be without the head disk), as a reference."""
    yy, xx = np.mgrid[0:256, 0:128]
    px = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    near = np.zeros(len(px), bool)
    for a, b in COCO17_LIMBS:
        near |= _dist_to_segment(px, kp[a, :2].astype(np.float64),
                                 kp[b, :2].astype(np.float64)) <= 6
    return near.reshape(256, 128)


def test_body_mask_covers_limbs_torso_head_and_nothing_far() -> None:
    kp = _pose()
    mask = body_mask(kp, (256, 128), limb_width=8, dilation=2)
    assert mask.shape == (256, 128) and mask.dtype == bool
    yy, xx = np.mgrid[0:256, 0:128]
    px = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    near = np.zeros(len(px), bool)
    for a, b in COCO17_LIMBS:
        d = _dist_to_segment(px, kp[a, :2].astype(np.float64), kp[b, :2].astype(np.float64))
        near |= d <= 4 + 2  # inside the dilated capsule
        assert mask.ravel()[d <= 0.5].all(), f"limb {a}-{b} not covered"
    assert mask.ravel()[near].all()
    assert mask[95, 64], "the torso centre must be inside the mask"
    # the head disk (centre ~ (64, 27.6), radius = face spread 9 + 4 + 2) reaches above the
    # face points, where no limb capsule does
    assert mask[14, 64] and not small_head_only_limbs(kp)[14, 64]
    # nothing further than the largest reach (head disk ~ 9 + 4 + 2) from every keypoint
    dmin = np.min(np.linalg.norm(px[:, None] - kp[None, :, :2], axis=2), axis=1)
    assert not mask.ravel()[dmin > 60].any()
    assert not mask[:, :20].any() and not mask[250:].any()
    # dilation grows the mask; a bigger limb width too
    small = body_mask(kp, (256, 128), limb_width=8, dilation=0)
    assert small.sum() < mask.sum() and (mask | small).sum() == mask.sum()


def test_body_mask_without_keypoints_is_empty_and_rescales() -> None:
    kp = _pose()
    kp[:, 2] = 0
    assert not body_mask(kp, (256, 128)).any()
    full = body_mask(_pose(), (256, 128), limb_width=8, dilation=2)
    half = body_mask(_pose(), (128, 64), src_hw=(256, 128), limb_width=4, dilation=1)
    down = full.reshape(128, 2, 64, 2).mean(axis=(1, 3))
    assert np.mean(half == (down >= 0.5)) > 0.97


def test_bad_shapes_and_sizes_raise_clear_errors() -> None:
    with pytest.raises(DataError, match=r"\(17, 3\).*found shape \(18, 3\)"):
        heatmaps(np.zeros((18, 3)), (256, 128))
    with pytest.raises(ConfigError, match="out_hw"):
        heatmaps(_pose(), (0, 128))
    with pytest.raises(ConfigError, match="sigma"):
        limb_maps(_pose(), (256, 128), sigma=-1)


def _batch() -> np.ndarray:
    a = _pose()
    b = _pose()
    b[:, :2] = b[:, :2] * 0.8 + 10
    b[[L_KNE, NOSE], 2] = 0
    return np.stack([a, b])


def test_torch_cpu_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    kp = _batch()
    kt = torch.from_numpy(kp)
    for fn, kw in ((heatmaps, {}), (limb_maps, {}), (body_mask, {"limb_width": 7.0})):
        ref = fn(kp, (200, 100), src_hw=(256, 128), **kw)
        got = fn(kt, (200, 100), src_hw=(256, 128), **kw)
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == ref.shape
        if ref.dtype == bool:
            assert got.dtype == torch.bool
            assert (got.numpy() != ref).sum() <= 2  # float rounding on a boundary at most
        else:
            assert got.dtype == torch.float32
            np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    single = heatmaps(kt[0], (64, 32), src_hw=(256, 128))
    assert tuple(single.shape) == (17, 64, 32)


@pytest.mark.gpu
def test_cuda_matches_numpy() -> None:
    import torch

    kp = _batch()
    kt = torch.from_numpy(kp).cuda()
    for fn in (heatmaps, limb_maps, body_mask):
        got = fn(kt, (256, 128))
        assert got.device.type == "cuda"
        ref = fn(kp, (256, 128))
        if ref.dtype == bool:
            assert (got.cpu().numpy() != ref).sum() <= 4
        else:
            np.testing.assert_allclose(got.cpu().numpy(), ref, atol=1e-4)
