"""PN-GAN canonical poses: normalisation, deterministic masked k-means, rendering, the sheet."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidaug.data.synthetic import sample_pose
from reidaug.errors import DataError
from reidaug.pose.canonical import (
    assign,
    kmeans_poses,
    kmeans_poses_robust,
    normalize_poses,
    render_canonical,
    skeleton_sheet,
)
from reidaug.pose.skeleton import L_ANK, L_HIP, L_WRI, NOSE, R_ANK


def _synthetic(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h = int(rng.integers(96, 300))
        out.append(np.concatenate([sample_pose(rng, h, h // 2), np.ones((17, 1), np.float32)], 1))
    return np.stack(out)


def _planted(seed: int = 0, per: int = 40, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated prototype poses, each repeated with noise, scale and shift."""
    rng = np.random.default_rng(seed)
    protos = _synthetic(k, 123)[:, :, :2]
    protos[1, [9, 10], 1] -= 60  # arms raised
    protos[2, [15, 16], 0] += np.array([-40, 40])  # wide stance
    protos[3, :, 0] = 2 * protos[3, 11, 0] - protos[3, :, 0]  # mirrored
    poses, labels = [], []
    for c in range(k):
        for _ in range(per):
            s = rng.uniform(0.5, 2.0)
            xy = protos[c] * s + rng.uniform(-50, 50, 2) + rng.normal(0, 1.5, (17, 2))
            poses.append(np.concatenate([xy, np.full((17, 1), 0.9)], 1))
            labels.append(c)
    perm = rng.permutation(len(poses))
    return np.asarray(poses, np.float32)[perm], np.asarray(labels)[perm]


def test_normalisation_removes_position_and_scale() -> None:
    kp = _synthetic(1, 5)[0]
    moved = kp.copy()
    moved[:, :2] = kp[:, :2] * 2.5 + (40, -7)
    norm, kept = normalize_poses(np.stack([kp, moved]))
    assert norm.shape == (2, 17, 2) and norm.dtype == np.float32
    np.testing.assert_array_equal(kept, [0, 1])
    np.testing.assert_allclose(norm[0], norm[1], atol=1e-4)
    # the torso centre is the origin and the torso is one unit long
    mid_sho = (norm[0, 5] + norm[0, 6]) / 2
    mid_hip = (norm[0, 11] + norm[0, 12]) / 2
    np.testing.assert_allclose((mid_sho + mid_hip) / 2, 0, atol=1e-5)
    assert np.linalg.norm(mid_sho - mid_hip) == pytest.approx(1.0, abs=1e-5)


def test_low_confidence_poses_are_excluded_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    kp = _synthetic(10, 6)
    kp[2, :6, 2] = 0.1  # 11 confident points < 12
    kp[5, L_HIP, 2] = 0.0  # a torso point missing
    kp[7, [NOSE, L_WRI], 2] = 0.2  # still 15 confident: kept, those two points NaN
    with caplog.at_level(logging.INFO, logger="reidaug.pose.canonical"):
        norm, kept = normalize_poses(kp, min_confident=12, score_threshold=0.3)
    np.testing.assert_array_equal(kept, [0, 1, 3, 4, 6, 7, 8, 9])
    assert "kept 8 of 10 poses" in caplog.text
    assert "excluded 1 with fewer than 12" in caplog.text
    assert "1 without all four torso points" in caplog.text
    row = norm[list(kept).index(7)]
    assert np.isnan(row[[NOSE, L_WRI]]).all()
    assert np.isfinite(np.delete(row, [NOSE, L_WRI], 0)).all()


def test_kmeans_recovers_planted_clusters() -> None:
    kp, truth = _planted()
    norm, kept = normalize_poses(kp)
    assert len(kept) == len(kp)
    centers, labels = kmeans_poses(norm, k=4, seed=0)
    assert centers.shape == (4, 17, 2) and labels.shape == (len(kp),)
    # a perfect match up to renaming: each found cluster is exactly one planted cluster
    for c in range(4):
        assert len(set(truth[labels == c])) == 1
    assert len(set(zip(truth, labels))) == 4
    np.testing.assert_array_equal(assign(norm, centers), labels)


def test_kmeans_ignores_missing_joints_when_assigning() -> None:
    kp, truth = _planted(seed=1)
    norm, _ = normalize_poses(kp)
    centers, labels = kmeans_poses(norm, k=4, seed=0)
    holed = norm.copy()
    holed[::2, [L_ANK, R_ANK, NOSE]] = np.nan  # every other pose lacks feet and nose
    np.testing.assert_array_equal(assign(holed, centers), labels)
    centers2, labels2 = kmeans_poses(holed, k=4, seed=0)
    assert np.isfinite(centers2).all()
    assert len(set(zip(truth, labels2))) == 4
    np.testing.assert_allclose(centers2, centers, atol=0.05)
    holed[:, NOSE] = np.nan
    with pytest.raises(DataError, match=r"keypoint\(s\) \[0\] are missing in every pose"):
        kmeans_poses(holed, k=4)


def test_outlier_clusters_are_set_aside_and_kmeans_reruns_on_the_rest() -> None:
    # 3 planted poses x 40, plus 2 "diamond" outliers (legs crossed far outside the body): with k = 4 plain
    # k-means spends a centre on the 2 outliers; with min_cluster_size 3 they are set aside instead
    kp, truth = _planted()
    kp = kp[truth < 3]
    odd = kp[:2].copy()
    odd[:, [13, 14, 15, 16], 0] = odd[:, [14, 13, 16, 15], 0] + np.array([[300.0, -300.0, 400.0, -400.0]])
    norm, _ = normalize_poses(np.concatenate([kp, odd]))
    _, plain = kmeans_poses(norm, k=4, seed=0)
    assert sorted(np.bincount(plain).tolist())[0] <= 2  # the outlier "canonical pose"
    centers, labels, rounds = kmeans_poses_robust(norm, k=4, seed=0, min_cluster_size=3)
    assert rounds >= 2 and (labels[-2:] == -1).all() and (labels[:-2] >= 0).all()
    assert np.bincount(labels[labels >= 0], minlength=4).min() >= 3
    # min_cluster_size 1 is plain k-means
    c1, l1, r1 = kmeans_poses_robust(norm, k=4, seed=0, min_cluster_size=1)
    np.testing.assert_array_equal(l1, plain)
    assert r1 == 1
    with pytest.raises(DataError, match="fewer than k x min_cluster_size"):
        kmeans_poses_robust(norm, k=4, seed=0, min_cluster_size=40)


def test_outlier_rejection_leaves_an_empty_cluster_as_plain_kmeans_does() -> None:
    # 2 distinct poses x 6 copies and k = 3: one centre stays empty; nothing there to set aside
    kp, truth = _planted()
    base = np.concatenate([np.repeat(kp[truth == 0][:1], 6, 0), np.repeat(kp[truth == 1][:1], 6, 0)])
    norm, _ = normalize_poses(base)
    _, plain = kmeans_poses(norm, k=3, seed=0)
    _, robust, rounds = kmeans_poses_robust(norm, k=3, seed=0, min_cluster_size=3)
    np.testing.assert_array_equal(robust, plain)
    assert rounds == 1 and sorted(np.bincount(robust, minlength=3).tolist()) == [0, 6, 6]


def test_kmeans_is_deterministic_for_a_seed() -> None:
    norm, _ = normalize_poses(_synthetic(300, 7))
    c1, l1 = kmeans_poses(norm, k=8, seed=3, n_init=3)
    c2, l2 = kmeans_poses(norm, k=8, seed=3, n_init=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    sizes = np.bincount(l1, minlength=8)
    assert (np.diff(sizes) <= 0).all(), "clusters are ordered largest first"
    assert (sizes > 0).all()


def test_too_few_poses_is_a_clear_error() -> None:
    norm, _ = normalize_poses(_synthetic(5, 8))
    with pytest.raises(DataError, match="k=8 needs at least 8 poses.*found 5"):
        kmeans_poses(norm, k=8)


def test_render_and_sheet(tmp_path: Path) -> None:
    norm, _ = normalize_poses(_synthetic(200, 9))
    centers, _ = kmeans_poses(norm, k=8, seed=0, n_init=2)
    px = render_canonical(centers, (256, 128))
    assert px.shape == (8, 17, 3) and px.dtype == np.float32
    assert (px[..., 2] == 1).all()
    assert (px[..., 0] >= -0.5).all() and (px[..., 0] <= 127.5).all()
    assert (px[..., 1] >= -0.5).all() and (px[..., 1] <= 255.5).all()
    # people stand: head at the top, feet at the bottom, filling the height less the margin
    assert (px[:, NOSE, 1] < 60).all() and (px[:, [L_ANK, R_ANK], 1].max(1) > 200).all()
    out = tmp_path / "canonical.png"
    sheet = skeleton_sheet(px, out, (256, 128))
    assert sheet.shape == (256 + 16, 8 * 128 + 9 * 8, 3)
    back = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, sheet)
    assert [p.name for p in tmp_path.iterdir()] == ["canonical.png"]
