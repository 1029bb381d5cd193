"""`reidaug inspect` building blocks: summary table, verify, sample grid."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from reidaug.data.h5format import H5Writer, make_targets
from reidaug.data.inspect import grid, summary, verify


def write_small(path: Path) -> None:
    """6 real train images (3 ids x 2 cameras), 2 camstyle fakes with LSR targets, 1 query."""
    imgs = np.random.default_rng(0).integers(0, 256, (9, 64, 32, 3), dtype=np.uint8)
    with H5Writer(path, image_size=(64, 32)) as w:
        w.append("train", images=imgs[:6], pid=[11, 11, 22, 22, 33, 33], camid=[0, 1, 0, 1, 0, 1],
                 label=[0, 0, 1, 1, 2, 2])
        idx, val = make_targets("lsr", [0, 1], 3, epsilon=0.1)
        w.append("train", images=imgs[6:8], pid=[11, 22], camid=[1, 0], label=[0, 1],
                 source="camstyle", origin=[0, 3], label_scheme="lsr", target_index=idx,
                 target_value=val)
        w.append("query", images=imgs[8:], pid=[11], camid=0)


def test_summary_lists_splits_ids_sources(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    text = summary(path)
    lines = text.splitlines()
    train = next(line for line in lines if line.startswith("train "))
    # split, ids, images, cameras, real, fake
    assert train.split()[:6] == ["train", "3", "8", "2", "6", "2"]
    assert "sources camstyle 2, real 6" in text
    assert "label schemes lsr 2, onehot 6" in text
    assert "3 classes" in text and "raw, none, 64x32 (HxW)" in text
    assert any(line.startswith("query ") for line in lines)


def test_verify_reports_problem_location(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    assert verify(path) == []
    with h5py.File(path, "r+") as f:
        f["train/origin"][6] = 7  # a fake pointing at a fake
    where = {p.where for p in verify(path)}
    assert where == {"/train/origin"}


def test_grid_has_one_row_per_source_and_column_per_camera(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    out = grid(path, tmp_path / "grid.png", per_cell=2, cell_height=64)
    img = np.asarray(Image.open(out).convert("RGB"))
    # 2 sources (real, camstyle) x 2 cameras x 2 per cell: size follows the layout
    assert img.shape == (18 + 2 * (64 + 18 + 8), 90 + 2 * (2 * (32 + 4) + 8), 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_grid_puts_camstyle_fakes_under_their_target_camera(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    imgs = np.zeros((4, 64, 32, 3), np.uint8)
    imgs[3] = (10, 200, 30)  # the fake rendered into camera 2: green
    with H5Writer(path, image_size=(64, 32)) as w:
        w.append("train", images=imgs[:2], pid=[11, 11], camid=[0, 1], label=[0, 0])
        idx, val = make_targets("lsr", [0, 0], 1, epsilon=0.1)
        w.append("train", images=imgs[2:], pid=[11, 11], camid=[1, 0], label=[0, 0], source="camstyle",
                 origin=[1, 0], gen_target_camid=[0, 2], label_scheme="lsr", target_index=idx, target_value=val)
    out = grid(path, tmp_path / "grid.png", per_cell=1, cell_height=64)
    img = np.asarray(Image.open(out).convert("RGB"))
    col = 32 + 4 + 8
    assert img.shape[1] == 90 + 3 * col  # cameras 0, 1 (real) and 2 (only a fake's target)
    fake_row = 18 + (64 + 18 + 8) + 18 // 2  # below the real row
    x2 = 90 + 2 * col + 4 + 16  # the middle of camera 2's cell
    row_y = slice(fake_row, fake_row + 40)
    assert (img[row_y, x2] == (10, 200, 30)).all(), "the camera-2 fake is not in camera 2's column"
    x1 = 90 + 1 * col + 4 + 16
    assert not (img[row_y, x1] == (10, 200, 30)).all(axis=-1).any(), "camera 1's fake cell should be empty"
