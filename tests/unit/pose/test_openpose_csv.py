"""OpenPose-18 <-> COCO-17 and the pose-transfer annotation CSV (pose-gan / Pose-Transfer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidaug.data.synthetic import sample_pose
from reidaug.errors import DataError
from reidaug.pose.openpose import (
    OPENPOSE18_NAMES,
    coco17_to_openpose18,
    openpose18_to_coco17,
    read_openpose_csv,
    write_openpose_csv,
)
from reidaug.pose.skeleton import COCO17_NAMES, L_EAR, L_SHO, R_SHO

# A line in the exact format pose-gan's compute_coordinates.py prints, "%s: %s: %s" % (name,
# str(list(y)), str(list(x))), as in market-annotation-*.csv (coordinates made up).
REAL_FORMAT = (
    "name:keypoints_y:keypoints_x\n"
    "0002_c1s1_000451_03.jpg: [18, 31, 31, 52, 70, 32, 53, 72, 66, 94, 119, 66, 95, 121, 15, 15,"
    " -1, 17]: [31, 31, 21, 19, 19, 43, 46, 44, 24, 23, 21, 38, 39, 39, 28, 35, -1, 40]\n"
)


def _pose(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([sample_pose(rng, 128, 64), np.ones((17, 1), np.float32)], 1)


def test_index_maps_follow_the_names() -> None:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = np.arange(17)  # x = COCO index
    kp[:, 2] = 1
    op = coco17_to_openpose18(kp)
    coco_of = {"Nose": "nose", "REye": "right_eye", "LEye": "left_eye", "REar": "right_ear",
               "LEar": "left_ear"}
    for i, name in enumerate(OPENPOSE18_NAMES):
        if name == "Neck":
            continue
        side = {"R": "right_", "L": "left_"}.get(name[0], "")
        part = {"Shoulder": "shoulder", "Elbow": "elbow", "Wrist": "wrist", "Hip": "hip",
                "Knee": "knee", "Ankle": "ankle"}.get(name[1:], "")
        expected = coco_of.get(name, side + part)
        assert COCO17_NAMES[int(op[i, 0])] == expected, name


def test_neck_is_shoulder_midpoint_only_when_both_present() -> None:
    kp = _pose(np.random.default_rng(0))
    kp[L_SHO, 2], kp[R_SHO, 2] = 0.8, 0.6
    op = coco17_to_openpose18(kp)
    np.testing.assert_allclose(op[1, :2], (kp[L_SHO, :2] + kp[R_SHO, :2]) / 2)
    assert op[1, 2] == pytest.approx(0.6)
    kp[R_SHO, 2] = 0
    op = coco17_to_openpose18(kp)
    assert tuple(op[1]) == (-1, -1, 0) and tuple(op[2]) == (-1, -1, 0)  # neck and RShoulder
    back = openpose18_to_coco17(op)
    assert back[R_SHO, 2] == 0 and back[L_SHO, 2] == pytest.approx(0.8)


def test_batched_conversion_round_trips() -> None:
    rng = np.random.default_rng(1)
    kp = np.stack([_pose(rng) for _ in range(5)])
    back = openpose18_to_coco17(coco17_to_openpose18(kp))
    np.testing.assert_array_equal(back, kp)


def test_csv_round_trip_equals_rounded_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    poses = {f"{i:04d}_c1s1_{i:06d}_01.jpg": _pose(rng) for i in range(20)}
    poses["0003_c1s1_000003_01.jpg"][L_EAR, 2] = 0  # a missing point
    path = tmp_path / "market-annotation-train.csv"
    write_openpose_csv(path, poses)
    assert path.read_text().splitlines()[0] == "name:keypoints_y:keypoints_x"
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left"
    back = read_openpose_csv(path)
    assert list(back) == list(poses)
    for name, kp in poses.items():
        present = kp[:, 2] > 0
        np.testing.assert_array_equal(back[name][present, :2], np.rint(kp[present, :2]))
        np.testing.assert_array_equal(back[name][:, 2], present.astype(np.float32))
        assert not back[name][~present].any()


def test_csv_is_readable_the_way_the_generators_read_it(tmp_path: Path) -> None:
    """pose-gan / Pose-Transfer: split on ':' and json.loads each list (y first)."""
    import json

    kp = _pose(np.random.default_rng(3))
    path = tmp_path / "a.csv"
    write_openpose_csv(path, {"x.jpg": kp})
    name, ys, xs = path.read_text().splitlines()[1].split(":")
    assert name == "x.jpg"
    y18, x18 = json.loads(ys), json.loads(xs)
    assert len(y18) == len(x18) == 18
    assert y18[0] == round(float(kp[0, 1])) and x18[0] == round(float(kp[0, 0]))  # nose: y, x


def test_real_format_line_parses(tmp_path: Path) -> None:
    path = tmp_path / "market-annotation-test.csv"
    path.write_text(REAL_FORMAT)
    kp = read_openpose_csv(path)["0002_c1s1_000451_03.jpg"]
    assert kp.shape == (17, 3) and kp.dtype == np.float32
    assert tuple(kp[0]) == (31, 18, 1)  # nose: x = 31, y = 18
    assert tuple(kp[R_SHO]) == (21, 31, 1)  # OpenPose index 2
    assert tuple(kp[L_SHO]) == (43, 32, 1)  # OpenPose index 5
    assert tuple(kp[4]) == (0, 0, 0)  # right_ear = OpenPose REar (16) is -1: missing
    assert tuple(kp[3]) == (40, 17, 1)  # left_ear = OpenPose LEar (17)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a.jpg: [1, 2]: [1, 2]", r"bad\.csv:2: column keypoints_y should hold 18 values.*found 2"),
        ("a.jpg [1, 2, 3]", r"bad\.csv:2: expected 'name: \[18 y values\].*found 1 field"),
        ("a.jpg: [1, 2, x]: [1]", r"bad\.csv:2: column keypoints_y is not a list of integers"),
        ("a.jpg: " + str([1.5] * 18) + ": " + str([1] * 18), r"bad\.csv:2:.*holds 1\.5"),
    ],
)
def test_bad_line_names_file_line_expected_and_found(tmp_path: Path, line: str,
                                                     message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name:keypoints_y:keypoints_x\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_openpose_csv(path)


def test_bad_header_duplicate_names_and_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,keypoints_y,keypoints_x\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: expected the header line"):
        read_openpose_csv(path)
    line = REAL_FORMAT.splitlines()[1]
    path.write_text(REAL_FORMAT + "\n" + line + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:4: .*annotated twice \(first on line 2\)"):
        read_openpose_csv(path)
    with pytest.raises(DataError, match="without ':'"):
        write_openpose_csv(tmp_path / "o.csv", {"a:b.jpg": np.zeros((17, 3))})
    assert not (tmp_path / "o.csv").exists()


def test_negative_coordinates_are_clipped_not_turned_into_missing(tmp_path: Path) -> None:
    kp = _pose(np.random.default_rng(4))
    kp[0, :2] = (-0.8, -3.0)
    path = tmp_path / "a.csv"
    write_openpose_csv(path, {"a.jpg": kp})
    back = read_openpose_csv(path)["a.jpg"]
    assert tuple(back[0]) == (0, 0, 1)
