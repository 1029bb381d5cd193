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


def _fakes_file(path: Path, order: list[int], origins_of: list[str], seed: int) -> np.ndarray:
    """Real rows r0..r5 (paths real/i.png) in ``order``, then one fake per path in ``origins_of``."""
    imgs = np.random.default_rng(seed).integers(0, 256, (6 + len(origins_of), 64, 32, 3), dtype=np.uint8)
    rows = {f"real/{i}.png": r for r, i in enumerate(order)}
    with H5Writer(path, image_size=(64, 32)) as w:
        w.append("train", images=imgs[:6], pid=[11 * (i // 2 + 1) for i in order], camid=[i % 2 for i in order],
                 label=[i // 2 for i in order], path=[f"real/{i}.png" for i in order])
        n = len(origins_of)
        idx, val = make_targets("lsr", [0] * n, 3, epsilon=0.1)
        w.append("train", images=imgs[6:], pid=[11] * n, camid=[1] * n, label=[0] * n, source="camstyle",
                 origin=[rows[p] for p in origins_of], label_scheme="lsr", target_index=idx, target_value=val,
                 path=[f"fake/{j}.png" for j in range(n)])
    return imgs


def test_compare_grid_puts_each_files_fake_of_the_same_real_image_side_by_side(tmp_path: Path) -> None:
    from reidaug.data.inspect import compare_fakes_grid

    real = tmp_path / "real.h5"
    _fakes_file(real, list(range(6)), [], 0)
    a = _fakes_file(tmp_path / "a.h5", list(range(6)), ["real/1.png", "real/4.png", "real/5.png"], 1)
    # b stores its real rows in another order: origins are matched by path, not by row
    b = _fakes_file(tmp_path / "b.h5", [5, 4, 3, 2, 1, 0], ["real/4.png", "real/1.png"], 2)
    out = compare_fakes_grid(real, {"A": tmp_path / "a.h5", "B": tmp_path / "b.h5"}, tmp_path / "c.png", count=8)
    img = np.asarray(Image.open(out).convert("RGB"))
    # two rows (real/1 and real/4 have a fake in both files), three columns (real, A, B) of 128 x 64 cells
    assert img.shape == (16 + 2 * (128 + 4) + 4, 110 + 3 * (64 + 4) + 4, 3)
    def cell(r: int, c: int) -> np.ndarray:
        return img[20 + r * 132:20 + r * 132 + 128, 114 + c * 68:114 + c * 68 + 64]

    up = lambda x: np.asarray(Image.fromarray(x).resize((64, 128), Image.Resampling.BILINEAR))  # noqa: E731
    # row 0 is real/1: A's fake 0 and B's fake 1 (image 6 + 1 of b)
    assert np.abs(cell(0, 1).astype(int) - up(a[6]).astype(int)).mean() < np.abs(cell(0, 1).astype(int)
                                                                                  - up(a[8]).astype(int)).mean()
    assert np.abs(cell(0, 2).astype(int) - up(b[7]).astype(int)).mean() < np.abs(cell(0, 2).astype(int)
                                                                                  - up(b[6]).astype(int)).mean()


def test_compare_grid_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    import pytest

    from reidaug.data.inspect import compare_fakes_grid
    from reidaug.errors import DataError

    real = tmp_path / "real.h5"
    _fakes_file(real, list(range(6)), [], 0)
    _fakes_file(tmp_path / "a.h5", list(range(6)), ["real/1.png"], 1)
    _fakes_file(tmp_path / "b.h5", list(range(6)), ["real/2.png"], 2)
    with pytest.raises(DataError, match=r"real.h5 \(A\): split 'train' has no fakes.*Fix"):
        compare_fakes_grid(tmp_path / "a.h5", {"A": real}, tmp_path / "c.png")
    with pytest.raises(DataError, match="no image of .* has a fake in every file of A, B.*same ingest"):
        compare_fakes_grid(real, {"A": tmp_path / "a.h5", "B": tmp_path / "b.h5"}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_inspect_cli_compare_needs_both_options_and_label_equals_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from reidaug.cli import main

    real = tmp_path / "real.h5"
    _fakes_file(real, list(range(6)), [], 0)
    _fakes_file(tmp_path / "a.h5", list(range(6)), ["real/1.png"], 1)
    r = CliRunner().invoke(main, ["inspect", str(real), "--compare", f"A={tmp_path / 'a.h5'}"])
    assert r.exit_code != 0 and "--compare and --compare-png go together" in r.output
    r = CliRunner().invoke(main, ["inspect", str(real), "--compare", str(tmp_path / "a.h5"), "--compare-png", "x.png"])
    assert r.exit_code != 0 and "expected LABEL=FILE" in r.output
    out = tmp_path / "c.png"
    r = CliRunner().invoke(main, ["inspect", str(real), "--compare", f"A={tmp_path / 'a.h5'}",
                                  "--compare-png", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 200 and "each beside its fake in A" in r.output
