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
