"""The synthetic demo dataset: layout, determinism, camera styles, learnable identities."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidaug.data import synthetic as syn
from reidaug.errors import ConfigError, DataError

NAME_RE = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_00\.jpg$")
SMALL = syn.SyntheticSpec(
    num_ids=6, num_cams=3, images_per_id_per_cam=3, height=64, width=32, seed=7
)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"unreadable {path}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _neutral_style() -> syn.CameraStyle:
    """A camera that changes nothing: flat mid-grey scene, no cast, blur or noise."""
    return syn.CameraStyle(
        cam=0, gain=(1.0, 1.0, 1.0), contrast=1.0, brightness=0.0, gamma=1.0, blur_sigma=0.0,
        noise_sigma=0.0, bg_top=(0.5, 0.5, 0.5), bg_mid=(0.5, 0.5, 0.5), floor=(0.5, 0.5, 0.5),
        horizon=0.7, texture="blobs", texture_strength=0.0, scene_seed=0,
    )


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "small"
    syn.write_dataset(out, SMALL)
    return out


def test_market_layout_names_and_splits(small_dataset: Path) -> None:
    spec = SMALL
    seen: dict[str, list[tuple[int, int]]] = {}
    for split in syn.SPLIT_DIRS:
        seen[split] = []
        for f in sorted((small_dataset / split).iterdir()):
            m = NAME_RE.match(f.name)
            assert m, f"bad Market name {f.name}"
            img = _read_rgb(f)
            assert img.shape == (spec.height, spec.width, 3)
            seen[split].append((int(m.group(1)), int(m.group(2))))
    # First half of the ids train, the second half test; pids start at 0001, cameras at c1.
    assert {p for p, _ in seen["bounding_box_train"]} == {1, 2, 3}
    assert {p for p, _ in seen["query"]} == {p for p, _ in seen["bounding_box_test"]} == {4, 5, 6}
    assert {c for _, c in seen["bounding_box_train"]} == {1, 2, 3}
    # Query: exactly one image per test identity per camera; the rest go to the gallery.
    assert sorted(seen["query"]) == [(p, c) for p in (4, 5, 6) for c in (1, 2, 3)]
    assert len(seen["bounding_box_test"]) == 3 * 3 * (3 - 1)
    assert len(seen["bounding_box_train"]) == 3 * 3 * 3

    meta = json.loads((small_dataset / "meta.json").read_text())
    assert meta["spec"] == spec.to_dict()
    assert meta["counts"] == {"num_train": 27, "num_query": 9, "num_gallery": 18,
                              "num_gt_camstyle": 108, "num_train_ids": 3, "num_test_ids": 3}


def test_gt_camstyle_holds_every_image_under_every_other_camera(small_dataset: Path) -> None:
    for split in syn.SPLIT_DIRS:
        for f in (small_dataset / split).iterdir():
            cam = int(NAME_RE.match(f.name).group(2))
            for target in range(1, SMALL.num_cams + 1):
                gt = small_dataset / syn.GT_CAMSTYLE_DIR / str(target) / f.name
                assert gt.is_file() == (target != cam), (f.name, target)
    # The truth is the same person in the same pose under the other camera, as render() draws it.
    spec = SMALL
    name = syn.market_name(2, 0, 1, spec.images_per_id_per_cam)
    pose = syn.sample_pose(syn.pose_rng(spec.seed, 2, 0, 1), spec.height, spec.width)
    img, _ = syn.render(syn.identity_appearance(2, spec.seed), pose, syn.camera_style(2, spec.seed),
                        spec.height, spec.width, syn.image_rng(spec.seed, 2, 0, 1, 2))
    written = small_dataset / syn.GT_CAMSTYLE_DIR / "3" / name
    assert written.read_bytes() == syn._encode_jpeg(img, name)
    source = _read_rgb(small_dataset / "bounding_box_train" / name).astype(float)
    assert np.abs(source.mean((0, 1)) - _read_rgb(written).astype(float).mean((0, 1))).sum() > 10


def test_keypoints_json_covers_every_image_in_pixels(small_dataset: Path) -> None:
    doc = json.loads((small_dataset / "keypoints.json").read_text())
    assert doc["names"] == list(syn.KEYPOINT_NAMES)
    written = {str(p.relative_to(small_dataset)) for p in small_dataset.rglob("*.jpg")}
    assert set(doc["images"]) == written
    for rel, kps in doc["images"].items():
        kps = np.asarray(kps)
        assert kps.shape == (17, 3), rel
        vis = kps[:, 2] > 0
        assert vis.sum() >= 10, rel  # a whole pedestrian is mostly visible
        assert (kps[vis, 0] >= 0).all() and (kps[vis, 0] < SMALL.width).all()
        assert (kps[vis, 1] >= 0).all() and (kps[vis, 1] < SMALL.height).all()
        # Upright: head above shoulders above hips above ankles (image y grows downwards).
        assert kps[0, 1] < kps[5, 1] < kps[11, 1] < kps[15, 1], rel


def test_same_spec_gives_byte_identical_files(tmp_path: Path) -> None:
    spec = syn.SyntheticSpec(num_ids=4, images_per_id_per_cam=2, height=64, width=32, seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    syn.write_dataset(a, spec)
    syn.write_dataset(b, spec)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # ... and the seed matters.
    c = tmp_path / "c"
    syn.write_dataset(c, syn.SyntheticSpec(num_ids=4, images_per_id_per_cam=2, height=64,
                                           width=32, seed=4))
    rel = next(r for r in files_a if r.suffix == ".jpg")
    assert (a / rel).read_bytes() != (c / rel).read_bytes()


def test_output_folder_is_never_partial_and_user_data_is_never_replaced(tmp_path: Path) -> None:
    spec = syn.SyntheticSpec(num_ids=2, images_per_id_per_cam=2, height=64, width=32)
    out = tmp_path / "ds"
    summary = syn.write_dataset(out, spec)
    assert not summary.skipped
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp folder left behind
    # The same spec again: nothing rewritten.
    stamp = (out / "meta.json").stat().st_mtime_ns
    again = syn.write_dataset(out, spec)
    assert again.skipped and again.num_train == summary.num_train
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    # Another spec replaces the old synthetic dataset as a whole.
    bigger = syn.SyntheticSpec(num_ids=4, images_per_id_per_cam=2, height=64, width=32)
    syn.write_dataset(out, bigger)
    assert json.loads((out / "meta.json").read_text())["spec"]["num_ids"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # A folder that holds something else is refused and left alone.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to replace"):
        syn.write_dataset(mine, spec)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_cams", 1), ("num_cams", 7), ("num_ids", 1), ("images_per_id_per_cam", 1), ("height", 8)],
)
def test_spec_out_of_range_is_a_config_error_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"SyntheticSpec\.{field}: expected .* found {value}"):
        syn.SyntheticSpec(**{field: value})


def test_two_cameras_look_clearly_different() -> None:
    h, w = 128, 64
    styles = [syn.camera_style(c, 0) for c in range(6)]
    for pid in range(1, 7):
        app = syn.identity_appearance(pid, 0)
        pose = syn.sample_pose(np.random.default_rng(pid), h, w)
        a0, _ = syn.render(app, pose, styles[0], h, w, np.random.default_rng(1))
        a0b, _ = syn.render(app, pose, styles[0], h, w, np.random.default_rng(2))
        a1, _ = syn.render(app, pose, styles[1], h, w, np.random.default_rng(1))
        noise = np.abs(a0.astype(float).mean((0, 1)) - a0b.astype(float).mean((0, 1))).sum()
        cams = np.abs(a0.astype(float).mean((0, 1)) - a1.astype(float).mean((0, 1))).sum()
        # Mean colour (summed over R, G, B) moves far more between cameras than between two
        # renders of one camera.
        assert cams > 20.0 and cams > 5 * noise, (pid, cams, noise)
    # Every pair of the six cameras has its own colour cast.
    gains = np.array([s.gain for s in styles])
    casts = gains / gains.mean(1, keepdims=True)
    dists = np.abs(casts[:, None] - casts[None]).sum(-1)[np.triu_indices(6, 1)]
    assert dists.min() > 0.1


def test_render_draws_the_given_pose_and_marks_keypoints() -> None:
    h, w = 128, 64
    app = syn.identity_appearance(5, 0)
    pose = syn.sample_pose(np.random.default_rng(0), h, w)
    img, kps = syn.render(app, pose, _neutral_style(), h, w, np.random.default_rng(0))
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert kps.shape == (17, 3) and kps.dtype == np.float32
    np.testing.assert_allclose(kps[:, :2], pose)
    grey = np.array([128, 128, 128])
    # The body is drawn where the pose says: knees and hip centre are not background.
    for x, y in [pose[13], pose[14], (pose[11] + pose[12]) / 2]:
        assert np.abs(img[int(y), int(x)].astype(int) - grey).sum() > 30, (x, y)
    # The same person shifted 12 px right is drawn 12 px to the right.
    moved, _ = syn.render(app, pose + [12.0, 0.0], _neutral_style(), h, w, np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(moved[:, 12:].astype(int) - img[:, :-12]).mean(), 0, atol=2.0)
    # Points outside the image are marked invisible.
    shifted = pose + [w - np.median(pose[:, 0]), 0.0]  # half the body leaves the image
    _, off = syn.render(app, shifted, _neutral_style(), h, w, np.random.default_rng(0))
    outside = shifted[:, 0] >= w
    assert outside.any() and (off[outside, 2] == 0).all() and (off[~outside, 2] > 0).any()


def test_render_rejects_a_malformed_pose() -> None:
    with pytest.raises(DataError, match=r"expected a \(17, 2\)"):
        syn.render(syn.identity_appearance(1, 0), np.zeros((16, 2)), _neutral_style(), 64, 32,
                   np.random.default_rng(0))
    with pytest.raises(DataError, match="no usable torso"):
        syn.render(syn.identity_appearance(1, 0), np.zeros((17, 2)), _neutral_style(), 64, 32,
                   np.random.default_rng(0))


def _body_hist(img: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Grey-world normalised 4x4x4 colour histogram of the keypoints' bounding box."""
    x0, y0 = np.floor(kps[:, :2].min(0)).astype(int).clip(0)
    x1, y1 = np.ceil(kps[:, :2].max(0)).astype(int) + 1
    box = img[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64)
    box = np.clip(box / (box.mean(0) + 1e-6) * 0.5, 0, 0.999)  # remove the camera's colour cast
    hist = np.histogramdd(box, bins=(4, 4, 4), range=[(0, 1)] * 3)[0].ravel()
    return np.sqrt(hist / hist.sum())  # Hellinger


def test_identity_is_retrievable_across_cameras_by_colour_histogram(tmp_path: Path) -> None:
    spec = syn.SyntheticSpec()  # the demo default: 12 test identities, 2 cameras
    out = tmp_path / "demo"
    syn.write_dataset(out, spec)
    kp = json.loads((out / "keypoints.json").read_text())["images"]

    def load(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feats, pids, cams = [], [], []
        for f in sorted((out / split).iterdir()):
            m = NAME_RE.match(f.name)
            feats.append(_body_hist(_read_rgb(f), np.asarray(kp[f"{split}/{f.name}"])))
            pids.append(int(m.group(1)))
            cams.append(int(m.group(2)))
        return np.stack(feats), np.array(pids), np.array(cams)

    qf, qp, qc = load("query")
    gf, gp, gc = load("bounding_box_test")
    hits = []
    for f, p, c in zip(qf, qp, qc):
        other = gc != c  # cross-camera only: identity must show through the camera style
        d = np.linalg.norm(gf[other] - f, axis=1)
        hits.append(gp[other][np.argmin(d)] == p)
    rank1 = float(np.mean(hits))
    chance = 1.0 / len(set(gp))
    print(f"cross-camera rank-1 {rank1:.3f}, chance {chance:.3f}")
    assert rank1 > 3 * chance, f"rank-1 {rank1:.2f} vs chance {chance:.2f}"
