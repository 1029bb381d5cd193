"""The HDF5 format v1 contract: round trip, atomicity, verify, versioning, soft targets."""
from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from reidaug.data.h5format import (
    H5Writer,
    densify_target,
    densify_targets,
    make_targets,
    open_h5,
    verify,
)
from reidaug.errors import ConfigError, DataError, UnknownNameError


def smooth_images(n: int, h: int = 64, w: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients (JPEG-friendly), distinct per image: (n, h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        out[i, ..., 0] = 127 + 100 * np.sin(yy / h * a * np.pi)
        out[i, ..., 1] = 127 + 100 * np.cos(xx / w * b * np.pi)
        out[i, ..., 2] = (yy + xx) * c % 255
    return out


def write_small(path: Path, encoding: str = "raw", image_size=(64, 32), **kw) -> dict:
    """6 real train images (3 ids x 2 cams), 2 camstyle fakes (LSR), 2 query, 2 gallery."""
    imgs = smooth_images(10)
    kps = np.random.default_rng(1).uniform(0, 30, (6, 17, 3)).astype(np.float32)
    with H5Writer(path, encoding=encoding, image_size=image_size,
                  attrs={"pipeline_key": "k" * 64, "stage_keys": {"camstyle": "abc", "ingest": "def"}},
                  **kw) as w:
        w.append("train", images=imgs[:6], pid=[11, 11, 22, 22, 33, 33], camid=[0, 1, 0, 1, 0, 1],
                 label=[0, 0, 1, 1, 2, 2], path=[f"real/{i}.png" for i in range(6)], keypoints=kps)
        idx, val = make_targets("lsr", [0, 1], 3, epsilon=0.1)
        w.append("train", images=imgs[6:8], pid=[11, 22], camid=[1, 0], label=[0, 1],
                 source="camstyle", origin=[0, 3], gen_target_camid=[1, 0], gen_checksum="sha256:ab12",
                 label_scheme="lsr", target_index=idx, target_value=val, path=["f/a.png", "f/b.png"])
        w.append("query", images=imgs[8:9], pid=[11], camid=0, path=["q/0.png"])
        w.append("gallery", images=imgs[9:10], pid=[11], camid=1, path=["g/0.png"])
    return {"imgs": imgs, "kps": kps}


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_round_trip_pixels_and_metadata(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "d.h5"
    src = write_small(path, encoding)
    with open_h5(path) as f:
        assert f.splits == ("train", "query", "gallery")
        assert f.num_classes == 3
        assert f.info.image_encoding == encoding
        assert f.info.label_smoothing == "precomputed"
        assert f.info.stage_keys == {"camstyle": "abc", "ingest": "def"}
        m = f.meta("train")
        assert m.pid.tolist() == [11, 11, 22, 22, 33, 33, 11, 22]
        assert m.label.tolist() == [0, 0, 1, 1, 2, 2, 0, 1]
        assert m.camid.tolist() == [0, 1, 0, 1, 0, 1, 1, 0]
        assert [m.source_name(i) for i in (0, 6)] == ["real", "camstyle"]
        assert m.origin.tolist() == [-1] * 6 + [0, 3]
        assert m.gen_target_camid.tolist()[6:] == [1, 0]
        assert f.gen_checksums[m.gen_checksum[6]] == "sha256:ab12" and m.gen_checksum[0] == -1
        assert m.path[6] == "f/a.png"
        assert [m.label_scheme_names[c] for c in m.label_scheme[[0, 6]]] == ["onehot", "lsr"]
        np.testing.assert_array_equal(m.keypoints[:6], src["kps"])
        assert np.isnan(m.keypoints[6:]).all()  # appended without keypoints
        assert f.meta("query").label.tolist() == [-1]
        for i in range(8):
            got = f.read_image("train", i)
            assert got.dtype == np.uint8 and got.shape == (64, 32, 3)
            if encoding == "jpeg":
                assert np.abs(got.astype(int) - src["imgs"][i]).mean() < 3.0
            else:
                np.testing.assert_array_equal(got, src["imgs"][i])
        np.testing.assert_array_equal(f.read_image("gallery", 0), src["imgs"][9]) if encoding != "jpeg" else None
    assert verify(path) == []


def test_resize_to_image_size_moves_keypoints_by_the_pixel_centre_rule(tmp_path: Path) -> None:
    img = smooth_images(1, h=160, w=60)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :, 0], kp[0, :, 1], kp[0, :, 2] = 29.5, 79.5, 0.9  # centre of the 60x160 image
    with H5Writer(tmp_path / "r.h5", image_size=(256, 128)) as w:
        w.append("train", images=img, pid=1, camid=0, label=0, keypoints=kp)
    with open_h5(tmp_path / "r.h5") as f:
        assert f.read_image("train", 0).shape == (256, 128, 3)
        m = f.meta("train")
        assert m.native_hw.tolist() == [[160, 60]]
        np.testing.assert_allclose(m.keypoints[0, 0], [63.5, 127.5, 0.9], rtol=1e-6)  # still the centre


def test_a_2x_resize_maps_pixel_centres_not_coordinates(tmp_path: Path) -> None:
    """Pixel i's centre spans [i - 0.5, i + 0.5]; at 2x it covers pixels 2i and 2i + 1, whose
    shared centre is 2i + 0.5 (x * 2 would be half a pixel off). Unresized rows keep their bits."""
    big, small = smooth_images(1, h=32, w=16), smooth_images(1, h=64, w=32, seed=1)
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, :, 0], kp[:, :, 1], kp[:, :, 2] = np.arange(17) * 0.7, np.arange(17) * 1.3 + 0.1, 0.5
    with H5Writer(tmp_path / "r.h5", image_size=(64, 32)) as w:
        w.append("train", images=[big[0], small[0]], pid=[1, 2], camid=0, label=[0, 1], keypoints=kp)
    with open_h5(tmp_path / "r.h5") as f:
        got = f.meta("train").keypoints
    np.testing.assert_allclose(got[0, :, :2], kp[0, :, :2] * 2 + 0.5, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[0, 0, :2], [0.5, 0.7], rtol=1e-6)  # (0, 0.1) -> (0.5, 0.7)
    np.testing.assert_array_equal(got[1], kp[1])  # already 64x32: untouched
    np.testing.assert_array_equal(got[:, :, 2], kp[:, :, 2])


def test_pad_resize_keeps_the_aspect_ratio_of_a_real_crop_and_moves_keypoints_with_it(
        tmp_path: Path, cuhk01_dir: Path) -> None:
    """A CUHK01 crop (160 x 60) into 128 x 64: scaled by 0.8 to 128 x 48, 8 px margins left and right
    in the fill colour; the body inside equals a plain resize to 128 x 48; a keypoint at the crop's
    centre stays at the stored image's centre, one at the top-left pixel centre moves in by the margin."""
    import cv2

    from reidaug.data.images import LETTERBOX_FILL

    rel = sorted((cuhk01_dir / "images").glob("*.png"))[0]
    img = cv2.cvtColor(cv2.imread(str(rel)), cv2.COLOR_BGR2RGB)
    assert img.shape == (160, 60, 3)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :, 2] = 0.9
    kp[0, 0, :2], kp[0, 1, :2] = (29.5, 79.5), (0.0, 0.0)
    with H5Writer(tmp_path / "p.h5", image_size=(128, 64), resize="pad") as w:
        w.append("train", images=[img], pid=1, camid=0, label=0, keypoints=kp)
    with open_h5(tmp_path / "p.h5") as f:
        assert f.info.image_resize == "pad"
        got, kp_got = f.read_image("train", 0), f.meta("train").keypoints[0]
    assert got.shape == (128, 64, 3)
    assert (got[:, :8] == LETTERBOX_FILL).all() and (got[:, 56:] == LETTERBOX_FILL).all()
    np.testing.assert_array_equal(got[:, 8:56], cv2.resize(img, (48, 128), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(kp_got[0], [31.5, 63.5, 0.9], rtol=1e-6)  # still the centre
    np.testing.assert_allclose(kp_got[1, :2], [0.5 * 0.8 - 0.5 + 8, 0.5 * 0.8 - 0.5], rtol=1e-6)
    with H5Writer(tmp_path / "s.h5", image_size=(128, 64)) as w:  # the default stretches, and says nothing
        w.append("train", images=[img], pid=1, camid=0, label=0)
    with open_h5(tmp_path / "s.h5") as f:
        assert f.info.image_resize == "stretch" and "image_resize" not in h5py.File(tmp_path / "s.h5").attrs
    with pytest.raises(UnknownNameError, match="resize mode.*Known resize modes: pad, stretch"):
        H5Writer(tmp_path / "x.h5", image_size=(128, 64), resize="crop")


def test_real_cuhk01_png_round_trip_is_lossless(tmp_path: Path, cuhk01_dir: Path) -> None:
    import cv2

    with open(cuhk01_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:8]
    imgs = [cv2.cvtColor(cv2.imread(str(cuhk01_dir / r["path"])), cv2.COLOR_BGR2RGB) for r in rows]
    pids = [int(r["pid"]) for r in rows]
    labels = np.unique(pids, return_inverse=True)[1]
    with H5Writer(tmp_path / "c.h5", encoding="png", image_size=None) as w:
        w.append("train", images=imgs, pid=pids, camid=[int(r["camid"]) - 1 for r in rows],
                 label=labels, path=[r["path"] for r in rows])
    with open_h5(tmp_path / "c.h5") as f:
        for i, img in enumerate(imgs):
            np.testing.assert_array_equal(f.read_image("train", i), img)
        assert f.meta("train").path == [r["path"] for r in rows]


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    final = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with H5Writer(final, image_size=(64, 32)) as w:
            w.append("train", images=smooth_images(2), pid=[1, 2], camid=0, label=[0, 1])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_close_keeps_previous_file(tmp_path: Path) -> None:
    final = tmp_path / "out.h5"
    write_small(final)
    before = final.read_bytes()
    # labels 0 and 2 only: not contiguous, so close() refuses and must not touch the old file
    with pytest.raises(DataError, match="contiguous"):
        with H5Writer(final, image_size=(64, 32)) as w:
            w.append("train", images=smooth_images(2), pid=[1, 2], camid=0, label=[0, 2])
    assert final.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_verify_detects_flipped_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    assert verify(path) == []
    with h5py.File(path, "r") as f:
        ds = f["train/images"]
        offset = ds.id.get_offset()  # uncompressed contiguous-in-chunk data: find first chunk
        if offset is None:
            offset = ds.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 100)
        b = fh.read(4)
        fh.seek(offset + 100)
        fh.write(bytes(x ^ 0xFF for x in b))
    problems = verify(path)
    assert [p.where for p in problems] == ["/train/images"]
    assert "checksum mismatch" in problems[0].message


def test_verify_detects_changed_metadata(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    with h5py.File(path, "r+") as f:
        f["train/camid"][0] = 5
    assert [p.where for p in verify(path)] == ["/train/camid"]


def test_wrong_format_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(DataError) as exc:
        open_h5(path)
    msg = str(exc.value)
    assert str(path) in msg and "format_version 2" in msg and "reads format_version 1" in msg
    assert "upgrade reidaug" in msg
    assert "format_version 2" in verify(path)[0].message


def test_not_a_reidaug_file(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(DataError, match="not a reidaug dataset file"):
        open_h5(path)
    with pytest.raises(DataError, match="not found"):
        open_h5(tmp_path / "missing.h5")


def test_sparse_topk_plus_rest_densifies_to_one() -> None:
    # a teacher's top-3 of 10 classes; the leftover 0.1 spreads over the 7 others
    value = np.array([0.6, 0.2, 0.1, 0], np.float16)
    rest = 1.0 - float(value.astype(np.float32).sum())  # as the writer stores it
    d = densify_target(np.array([4, 1, 7, -1], np.int32), value, rest, 10)
    assert d.dtype == np.float32 and d.shape == (10,)
    assert d.sum() == pytest.approx(1.0, abs=1e-6)
    assert d[4] == pytest.approx(0.6, abs=1e-3)
    np.testing.assert_allclose(d[[0, 2, 3, 5, 6, 8, 9]], rest / 7, rtol=1e-5)
    assert rest == pytest.approx(0.1, abs=1e-3)
    # LSRO: nothing listed, uniform
    np.testing.assert_allclose(densify_target(np.array([-1]), np.array([0.0]), 1.0, 4), 0.25)


def test_stored_targets_match_schemes(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=2).astype(np.float32)
    with H5Writer(path, image_size=(64, 32), target_topk=2) as w:
        w.append("train", images=smooth_images(4), pid=[1, 2, 3, 4], camid=0, label=[0, 1, 2, 3])
        idx, val = make_targets("lsr", [2], 4, epsilon=0.2)
        w.append("train", images=smooth_images(1), pid=3, camid=1, label=2, source="camstyle", origin=2,
                 label_scheme="lsr", target_index=idx, target_value=val)
        w.append("train", images=smooth_images(1), pid=-1, camid=1, label=-1, source="dcgan",
                 label_scheme="lsro", target_index=np.full((1, 1), -1), target_value=np.zeros((1, 1)))
        w.append("train", images=smooth_images(2), pid=[1, 2], camid=1, label=[0, 1], source="pose",
                 origin=[0, 1], label_scheme="teacher", target_probs=probs)
    with open_h5(path) as f:
        t = f.targets("train", np.arange(8))
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(t[0], [1, 0, 0, 0])
    np.testing.assert_allclose(t[4], [0.05, 0.05, 0.85, 0.05], atol=1e-3)  # LSR eps=0.2, C=4
    np.testing.assert_allclose(t[5], 0.25)  # LSRO
    top2 = np.argsort(-probs, axis=1)[:, :2]
    for r in range(2):
        np.testing.assert_allclose(t[6 + r, top2[r]], probs[r, top2[r]], atol=1e-3)


def test_dense_storage_equals_sparse(tmp_path: Path) -> None:
    targets = {}
    for storage in ("sparse", "dense"):
        path = tmp_path / f"{storage}.h5"
        with H5Writer(path, image_size=(64, 32), target_storage=storage, num_classes=3) as w:
            w.append("train", images=smooth_images(3), pid=[5, 6, 7], camid=0, label=[0, 1, 2])
            idx, val = make_targets("lsr", [1], 3, epsilon=0.1)
            w.append("train", images=smooth_images(1), pid=6, camid=1, label=1, source="camstyle",
                     origin=1, label_scheme="lsr", target_index=idx, target_value=val)
        with open_h5(path) as f:
            targets[storage] = f.targets("train", [0, 3])
        assert verify(path) == []
    np.testing.assert_allclose(targets["dense"], targets["sparse"], atol=1e-3)


def test_batched_densify_equals_single() -> None:
    rng = np.random.default_rng(0)
    idx = np.array([[3, 0, -1], [-1, -1, -1], [1, 2, 4]], np.int32)
    val = rng.uniform(0, 0.3, (3, 3)).astype(np.float16) * (idx >= 0)
    rest = 1 - val.astype(np.float32).sum(axis=1)
    batch = densify_targets(idx, val, rest, 5)
    for i in range(3):
        np.testing.assert_allclose(batch[i], densify_target(idx[i], val[i], rest[i], 5), atol=1e-7)


def test_bad_input_is_refused_with_reasons(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs image_size"):
        H5Writer(tmp_path / "x.h5", image_size=None, encoding="raw")
    with H5Writer(tmp_path / "y.h5", image_size=(64, 32)) as w:
        with pytest.raises(DataError, match="needs label"):
            w.append("train", images=smooth_images(1), pid=1, camid=0)
        with pytest.raises(DataError, match="RGB uint8"):
            w.append("train", images=[np.zeros((64, 32), np.uint8)], pid=1, camid=0, label=0)
        with pytest.raises(DataError, match="0-based"):
            w.append("query", images=smooth_images(1), pid=1, camid=-1)
        # camid -1 is for a fake with no identity and no origin only (LSRO's samples)
        with pytest.raises(DataError, match="0-based"):
            w.append("train", images=smooth_images(1), pid=-1, camid=-1, label=-1, source="real",
                     label_scheme="lsro", target_index=[[0]], target_value=[[1.0]])
        with pytest.raises(DataError, match="0-based"):
            w.append("train", images=smooth_images(1), pid=1, camid=-1, label=0, source="dcgan")
        with pytest.raises(KeyError, match='Did you mean "camstyle"'):
            w.append("query", images=smooth_images(1), pid=1, camid=0, source="camstyl")
        with pytest.raises(DataError, match="total mass"):
            w.append("train", images=smooth_images(1), pid=1, camid=0, label=0, label_scheme="teacher",
                     target_index=[[0, 1]], target_value=[[0.9, 0.5]])
        w.append("train", images=smooth_images(1), pid=1, camid=0, label=0)
    assert (tmp_path / "y.h5").exists()
    assert not (tmp_path / "x.h5").exists()


def test_rows_reads_a_slice_of_fields_equal_to_the_whole_split_meta(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    write_small(path)
    with open_h5(path) as f:
        m = f.meta("train")
        got = f.rows("train", 2, 7, ("pid", "camid", "path", "keypoints", "source"))
        assert got["pid"].tolist() == m.pid[2:7].tolist()
        assert got["camid"].tolist() == m.camid[2:7].tolist()
        assert got["path"] == m.path[2:7]
        assert got["source"].tolist() == m.source[2:7].tolist()
        np.testing.assert_array_equal(got["keypoints"], m.keypoints[2:7])
        assert f.rows("train", 3, 3, ("pid",))["pid"].shape == (0,)
        with pytest.raises(IndexError, match="train has 8 rows; rows 5:9"):
            f.rows("train", 5, 9, ("pid",))
        with pytest.raises(UnknownNameError, match="pids"):
            f.rows("train", 0, 2, ("pids",))
        with pytest.raises(DataError, match="'query' has no 'keypoints'.*Fix"):
            f.rows("query", 0, 1, ("keypoints",))


def _write_holding_handles(path: Path, order: str) -> bytes:
    """40 train rows written while handles to every dataset are held open in ``order`` (sorted / reverse):
    HDF5 then flushes their dirty chunks at close in that order, as a garbage-collected handle would."""
    imgs = smooth_images(40)
    with H5Writer(path, encoding="raw", image_size=(64, 32), attrs={"pipeline_key": "k" * 64}) as w:
        w.append("train", images=imgs[:1], pid=[0], camid=[0], label=[0], path=["p/0"])
        names: list[str] = []
        w._f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        held = [w._f[n] for n in sorted(names, reverse=order == "reverse")]  # noqa: F841 (kept open)
        w.append("train", images=imgs[1:], pid=list(range(1, 40)), camid=[i % 2 for i in range(1, 40)],
                 label=list(range(1, 40)), path=[f"p/{i}" for i in range(1, 40)])
    return path.read_bytes()


def _write_releasing_handles(path: Path, release_after_first: bool) -> bytes:
    """40 train rows in two appends, with outside handles to every dataset dropped between the appends or at
    the end: what a handle caught in a reference cycle does when the garbage collector runs mid-write."""
    imgs = smooth_images(40)
    with H5Writer(path, encoding="raw", image_size=(64, 32), attrs={"pipeline_key": "k" * 64}) as w:
        w.append("train", images=imgs[:1], pid=[0], camid=[0], label=[0], path=["p/0"])
        names: list[str] = []
        w._f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        held = [w._f[n] for n in names]
        if release_after_first:
            held.clear()
        w.append("train", images=imgs[1:], pid=list(range(1, 40)), camid=[i % 2 for i in range(1, 40)],
                 label=list(range(1, 40)), path=[f"p/{i}" for i in range(1, 40)])
        held.clear()
    return path.read_bytes()


def test_equal_contents_give_equal_bytes_whenever_outside_handles_are_released(tmp_path):
    """A dataset whose last handle goes is closed and its cached chunks placed in the file then: the writer holds
    its own handles until close, so the moment the GC frees someone else's does not move the layout (it did:
    the threaded and the dask-cluster export of one pipeline differed in ~1 run of 10)."""
    assert _write_releasing_handles(tmp_path / "a.h5", True) == _write_releasing_handles(tmp_path / "b.h5", False)


def test_equal_contents_give_equal_bytes_whatever_order_open_handles_are_flushed_in(tmp_path, monkeypatch):
    """Resume promises the same bytes; the layout must not depend on which handles the GC still holds."""
    assert _write_holding_handles(tmp_path / "a.h5", "sorted") == _write_holding_handles(tmp_path / "b.h5", "reverse")
    # the forcing is real: without the writer's ordered flush the two layouts differ (HDF5 1.14 / h5py 3)
    monkeypatch.setattr(H5Writer, "_flush_in_order", lambda self: None)
    if _write_holding_handles(tmp_path / "c.h5", "sorted") == _write_holding_handles(tmp_path / "d.h5", "reverse"):
        pytest.skip("this HDF5 lays out equal contents alike in either flush order: the guard above is vacuous here")
