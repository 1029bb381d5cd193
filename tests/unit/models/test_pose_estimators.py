"""Pose backends: real keypoints on CUHK01 crops, the letterbox mapping, mmpose batching."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidaug.errors import ConfigError, DataError, DependencyError, UnknownNameError
from reidaug.models.pose_estimators import (
    ESTIMATORS,
    Letterbox,
    MMPoseEstimator,
    build_estimator,
    check_images,
    mmpose_predict_per_image,
    to_crop_frame,
)
from reidaug.pose.skeleton import L_ANK, L_HIP, L_SHO, NOSE, R_ANK, R_HIP, R_SHO

MOVENET = "movenet_singlepose_lightning_int8.tflite"


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crops(cuhk01_dir: Path) -> list[np.ndarray]:
    """16 CUHK01 crops of 16 different identities, both cameras (160 x 60 each)."""
    with open(cuhk01_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = rows[:: len(rows) // 16][:16]
    return [_read_rgb(cuhk01_dir / r["path"]) for r in picked]


@pytest.fixture(scope="module")
def movenet(shared_dir: Path):
    path = shared_dir / "models" / MOVENET
    if not path.is_file():
        pytest.skip(f"MoveNet model not found at {path}")
    return build_estimator("movenet", model_path=str(path))


@pytest.fixture(scope="module")
def mediapipe_est():
    est = build_estimator("mediapipe")
    yield est
    est.close()


@pytest.fixture(scope="module")
def movenet_kp(movenet, crops) -> np.ndarray:
    return movenet.predict(crops)


@pytest.fixture(scope="module")
def mediapipe_kp(mediapipe_est, crops) -> np.ndarray:
    return mediapipe_est.predict(crops)


def _assert_in_frames(kp: np.ndarray, images: list[np.ndarray]) -> None:
    for k, img in zip(kp, images):
        h, w = img.shape[:2]
        assert (k[:, 0] >= 0).all() and (k[:, 0] <= w).all(), k[:, 0]
        assert (k[:, 1] >= 0).all() and (k[:, 1] <= h).all(), k[:, 1]


def _assert_upright(kp: np.ndarray, conf: float = 0.3) -> None:
    """Pedestrians stand: nose above shoulders above hips above ankles (x/y not swapped)."""
    def mean_y(idx: tuple[int, ...]) -> float:
        sel = kp[:, idx]
        ok = sel[..., 2] > conf
        return float(sel[..., 1][ok].mean())

    assert mean_y((NOSE,)) < mean_y((L_SHO, R_SHO)) < mean_y((L_HIP, R_HIP)) \
        < mean_y((L_ANK, R_ANK))


def pck(ref: np.ndarray, other: np.ndarray, thr: float = 0.1, conf: float = 0.3) -> float:
    """PCK@thr of the torso size (mid-shoulder to mid-hip of ``ref``), over keypoints both
    backends are confident about, in images where ref's torso is confident."""
    torso = np.linalg.norm((ref[:, L_SHO, :2] + ref[:, R_SHO, :2]) / 2
                           - (ref[:, L_HIP, :2] + ref[:, R_HIP, :2]) / 2, axis=1)  # (B,)
    ok = (ref[..., 2] > conf) & (other[..., 2] > conf) \
        & (ref[:, [L_SHO, R_SHO, L_HIP, R_HIP], 2].min(1) > conf)[:, None]  # (B, 17)
    dist = np.linalg.norm(ref[..., :2] - other[..., :2], axis=-1) / np.maximum(torso, 1)[:, None]
    return float((dist[ok] < thr).mean())


# ---- letterbox and frame helpers --------------------------------------------------------------
@pytest.mark.parametrize("hw", [(160, 60), (128, 64), (256, 128), (50, 300), (192, 192), (7, 3)])
def test_letterbox_round_trip_is_exact(hw):
    h, w = hw
    box = Letterbox.fit(h, w, 192, 192)
    assert box.new_h <= 192 and box.new_w <= 192 and max(box.new_h, box.new_w) == 192
    pts = np.random.default_rng(0).uniform([0, 0], [w, h], size=(50, 2))
    np.testing.assert_allclose(box.to_crop(box.to_input(pts)), pts, rtol=0, atol=1e-9)
    # the crop's corners land on the resized area's corners, inside the canvas
    corners = box.to_input(np.array([[0, 0], [w, h]]))
    np.testing.assert_allclose(corners, [[box.pad_x, box.pad_y],
                                         [box.pad_x + box.new_w, box.pad_y + box.new_h]])


@pytest.mark.parametrize("hw,centre", [((160, 60), (20.5, 110.5)), ((60, 240), (200.5, 15.5))])
def test_letterbox_mapping_matches_the_pixels(hw, centre):
    """A bright blob at a known crop point shows up where to_input says (enlarge and shrink)."""
    h, w = hw
    img = np.zeros((h, w, 3), np.uint8)
    cx, cy = int(centre[0]), int(centre[1])
    img[cy - 2:cy + 3, cx - 2:cx + 3] = 255  # 5x5 blob centred on pixel (cx, cy) → (cx+.5, cy+.5)
    box = Letterbox.fit(h, w, 192, 192)
    canvas = box.apply(img)
    assert canvas.shape == (192, 192, 3)
    mass = canvas[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:192, 0:192]
    found = np.array([(mass * (xs + 0.5)).sum(), (mass * (ys + 0.5)).sum()]) / mass.sum()
    np.testing.assert_allclose(found, box.to_input(np.array(centre)), atol=0.3)
    np.testing.assert_allclose(box.to_crop(found), centre, atol=0.3 / min(box.scale_x, 1))
    # the padding stays black
    assert canvas[:, : box.pad_x].max(initial=0) == 0 and canvas[: box.pad_y].max(initial=0) == 0


def test_to_crop_frame_clips_and_zeroes_points_outside():
    kp = np.zeros((17, 3), np.float32)
    kp[:, 2] = 0.9
    kp[0, :2] = (-3, 10)   # left of the crop
    kp[1, :2] = (20, 170)  # below it
    kp[2, :2] = (60, 160)  # exactly on the far corner: inside
    kp[3, :2] = (30, 80)
    out = to_crop_frame(kp, height=160, width=60)
    np.testing.assert_allclose(out[:4], [[0, 10, 0], [20, 160, 0], [60, 160, 0.9], [30, 80, 0.9]],
                               atol=1e-6)
    assert out.dtype == np.float32 and kp[0, 0] == -3  # input untouched


def test_images_must_be_rgb_uint8():
    with pytest.raises(DataError, match=r"image 1 must be an RGB uint8 array.*float64"):
        check_images([np.zeros((8, 4, 3), np.uint8), np.zeros((8, 4, 3))])
    with pytest.raises(DataError, match=r"\(8, 4\)"):
        check_images([np.zeros((8, 4), np.uint8)])


# ---- registry and errors ----------------------------------------------------------------------
def test_registry_names_and_unknown_name():
    assert set(ESTIMATORS) == {"movenet", "mediapipe", "mmpose"}
    with pytest.raises(UnknownNameError, match=r'Did you mean "movenet"\?.*mediapipe, mmpose'):
        build_estimator("movenett")


def test_missing_movenet_model_names_the_path(tmp_path):
    missing = tmp_path / "nope" / MOVENET
    with pytest.raises(DependencyError, match="does not exist") as info:
        build_estimator("movenet", model_path=str(missing))
    assert str(missing) in str(info.value) and "Kaggle" in str(info.value)


def test_missing_package_names_the_install_step(shared_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    with pytest.raises(DependencyError, match=r"ai-edge-litert.*scripts/install_pose\.sh"):
        build_estimator("movenet", model_path=str(shared_dir / "models" / MOVENET))


def test_options_a_backend_does_not_take_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r'"mediapipe" does not take model_path'):
        build_estimator("mediapipe", model_path=str(tmp_path / "x.tflite"))
    with pytest.raises(ConfigError, match="needs model_path"):
        build_estimator("movenet")


# ---- movenet ----------------------------------------------------------------------------------
def test_movenet_on_cuhk01_crops(movenet_kp, crops):
    assert movenet_kp.shape == (16, 17, 3) and movenet_kp.dtype == np.float32
    mean_score = float(movenet_kp[..., 2].mean())
    assert 0.5 < mean_score < 0.8, mean_score  # NOTICE.md: 0.58-0.70 on CUHK01
    _assert_in_frames(movenet_kp, crops)
    _assert_upright(movenet_kp)
    # shoulders sit in the upper half of a 160 x 60 crop, ankles in the bottom fifth
    assert np.median(movenet_kp[:, [L_SHO, R_SHO], 1]) < 80
    assert np.median(movenet_kp[:, [L_ANK, R_ANK], 1]) > 128


def test_movenet_batch_equals_one_by_one(movenet, movenet_kp, crops):
    for i in (0, 7, 15):
        np.testing.assert_array_equal(movenet.predict([crops[i]])[0], movenet_kp[i])
    assert movenet.predict([]).shape == (0, 17, 3)


# ---- mediapipe --------------------------------------------------------------------------------
def test_mediapipe_on_cuhk01_crops(mediapipe_kp, crops):
    assert mediapipe_kp.shape == (16, 17, 3) and mediapipe_kp.dtype == np.float32
    detected = mediapipe_kp[..., 2].max(axis=1) > 0
    assert detected.mean() >= 0.75, detected.mean()  # measured 0.93 on 200 crops
    assert not mediapipe_kp[~detected].any()  # no person: an all-zero row
    _assert_in_frames(mediapipe_kp, crops)
    _assert_upright(mediapipe_kp[detected])


def test_mediapipe_no_person_gives_zero_rows(mediapipe_est):
    blank = np.full((160, 60, 3), 128, np.uint8)
    out = mediapipe_est.predict([blank])
    assert out.shape == (1, 17, 3) and not out.any()


def test_movenet_and_mediapipe_agree(movenet_kp, mediapipe_kp):
    agreement = pck(movenet_kp, mediapipe_kp)
    assert agreement > 0.3, agreement  # measured 0.72 on 200 CUHK01 crops


# ---- mmpose (random weights: plumbing only) ---------------------------------------------------
@pytest.fixture(scope="module")
def rtmpose() -> MMPoseEstimator:
    return build_estimator("mmpose", config="rtmpose-t", random_init=True, seed=0)


@pytest.fixture(scope="module")
def mixed_crops() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            for h, w in [(160, 60), (256, 128), (96, 40), (64, 200)]]


@pytest.mark.mmpose
def test_mmpose_batched_shapes_and_frames(rtmpose, mixed_crops):
    out = rtmpose.predict(mixed_crops)
    assert out.shape == (4, 17, 3) and out.dtype == np.float32
    _assert_in_frames(out, mixed_crops)
    raw = rtmpose.predict_raw(mixed_crops)
    # Before clipping, each crop's points lie in ITS OWN box as mmpose widens it: the crop made
    # 192:256 in aspect, times 1.25 padding, around the crop's centre.
    for k, img in zip(raw, mixed_crops):
        h, w = img.shape[:2]
        bw, bh = max(w, h * 0.75) * 1.25, max(h, w / 0.75) * 1.25
        assert (np.abs(k[:, 0] - w / 2) <= bw / 2 + 1e-3).all()
        assert (np.abs(k[:, 1] - h / 2) <= bh / 2 + 1e-3).all()
    # points mmpose put outside the crop are clipped and scored 0; the others keep their score
    inside = (raw[..., 0] >= 0) & (raw[..., 0] <= [[im.shape[1]] for im in mixed_crops]) \
        & (raw[..., 1] >= 0) & (raw[..., 1] <= [[im.shape[0]] for im in mixed_crops])
    np.testing.assert_array_equal(out[..., 2], np.where(inside, raw[..., 2], 0))


@pytest.mark.mmpose
def test_mmpose_batched_equals_per_image_reference(rtmpose, mixed_crops):
    batched = rtmpose.predict_raw(mixed_crops)
    reference = mmpose_predict_per_image(rtmpose, mixed_crops, raw=True)
    np.testing.assert_allclose(batched, reference, rtol=0, atol=1e-3)
    # order does not matter: crop 2 alone gives its row of the batch
    np.testing.assert_allclose(rtmpose.predict_raw([mixed_crops[2]])[0], batched[2], atol=1e-3)


@pytest.mark.mmpose
def test_mmpose_random_init_depends_on_the_seed_only(rtmpose, mixed_crops):
    again = build_estimator("mmpose", config="rtmpose-t", random_init=True, seed=0)
    np.testing.assert_array_equal(again.predict_raw(mixed_crops[:1]),
                                  rtmpose.predict_raw(mixed_crops[:1]))


@pytest.mark.mmpose
def test_mmpose_needs_a_checkpoint_and_says_where_to_get_it(tmp_path):
    with pytest.raises(DependencyError, match=r"no checkpoint.*download\.openmmlab\.com"):
        build_estimator("mmpose", config="rtmpose-t")
    missing = tmp_path / "rtmpose-t.pth"
    with pytest.raises(DependencyError, match="does not exist") as info:
        build_estimator("mmpose", config="hrnet-w32", checkpoint=str(missing))
    assert str(missing) in str(info.value) and "hrnet" in str(info.value)
    with pytest.raises(UnknownNameError, match='Did you mean "rtmpose-t"'):
        build_estimator("mmpose", config="rtmpose-tt", random_init=True)


def test_mmengine_lines_go_through_logging_not_stdout(capsys, caplog):
    pytest.importorskip("mmengine")
    import logging

    from mmengine.logging import print_log

    from reidaug.models.pose_estimators import route_mmengine_logs

    route_mmengine_logs()
    route_mmengine_logs()  # idempotent: one forwarding handler
    with caplog.at_level(logging.INFO, logger="mmengine"):
        print_log("Loads checkpoint by local backend from path: x.pth", logger="current")
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.name == "mmengine"] == [
        "Loads checkpoint by local backend from path: x.pth"]
