"""Evaluation with features on disk (reidaug.io.rowfile + the counting path of reidaug.eval.metrics):
the same CMC / mAP / mINP as the in-memory full ranking, ties and junk included, for both protocols
and both metrics, without ever holding the gallery whole."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import reidaug.eval.metrics as metrics
from reidaug.errors import DataError
from reidaug.eval.metrics import evaluate
from reidaug.io.rowfile import RowFile, write_rows


def rows_file(path: Path, a: np.ndarray, step: int = 7) -> RowFile:
    with write_rows(path, a.shape, a.dtype) as w:
        for s in range(0, len(a), step):
            w.append(a[s:s + step])
    return RowFile.open(path)


class Spy(RowFile):
    """A RowFile that remembers the largest block read and refuses to be read whole."""

    largest = 0

    def block(self, start: int, stop: int) -> np.ndarray:
        Spy.largest = max(Spy.largest, min(stop, len(self)) - start)
        return super().block(start, stop)

    def read(self) -> np.ndarray:
        raise AssertionError("the gallery was read whole")


def test_row_file_round_trip_is_a_plain_npy(tmp_path: Path) -> None:
    a = np.arange(60, dtype=np.float32).reshape(12, 5)
    f = rows_file(tmp_path / "a.npy", a, step=5)
    assert f.shape == (12, 5) and len(f) == 12 and f.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)  # any reader opens it
    np.testing.assert_array_equal(f.block(3, 8), a[3:8])
    np.testing.assert_array_equal(np.concatenate([b for _, _, b in f.blocks(5)]), a)
    assert f.block(10, 99).shape == (2, 5)  # clipped to N


def test_row_file_refuses_short_writes_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="3 of 4 declared rows"):
        with write_rows(tmp_path / "short.npy", (4, 2)) as w:
            w.append(np.zeros((3, 2), np.float32))
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even the temp file
    with pytest.raises(DataError, match=r"expected rows of shape \(n, 2\)"):
        with write_rows(tmp_path / "wide.npy", (4, 2)) as w:
            w.append(np.zeros((4, 3), np.float32))
    f = rows_file(tmp_path / "t.npy", np.ones((10, 4), np.float32))
    with open(f.path, "r+b") as fh:
        fh.truncate(f.offset + 5 * 16)
    with pytest.raises(DataError, match="truncated"):
        f.block(0, 10)
    with pytest.raises(DataError, match="does not exist"):
        RowFile.open(tmp_path / "none.npy")
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="is not a .npy file"):
        RowFile.open(tmp_path / "x.npy")


def test_hand_worked_query_on_disk(tmp_path: Path) -> None:
    # the hand-worked case of test_eval_metrics: junk g5 nearest, g2 removed (same pid and camera)
    g = rows_file(tmp_path / "g.npy", np.asarray([[1.0], [2.0], [3.0], [4.0], [5.0], [0.5]], np.float32))
    q = rows_file(tmp_path / "q.npy", np.zeros((1, 1), np.float32))
    m = evaluate(q, g, [1], [2, 1, 1, 3, 1, -1], [0], [1, 1, 0, 1, 2, 1])
    np.testing.assert_allclose(m.cmc, [0.0, 1.0, 1.0, 1.0, 1.0])
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)
    assert (m.num_queries, m.num_skipped) == (1, 0)


# Ties are tested with euclidean distances of integer features, which are exact whatever the block
# shape; tied cosine distances are equal only up to the matmul's rounding, which depends on the shape.
@pytest.mark.parametrize("metric,ties", [("euclidean", False), ("cosine", False), ("euclidean", True)],
                         ids=["euclidean", "cosine", "euclidean-duplicates-and-ties"])
@pytest.mark.parametrize("protocol", ["market", "cuhk03-sgs"])
def test_on_disk_equals_the_full_ranking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ties: bool,
                                         metric: str, protocol: str) -> None:
    rng = np.random.default_rng(1)
    nq, ng, d = 90, 700, 8
    # structured features (identity means + noise), so rankings are far from random
    means = rng.normal(size=(40, d))
    qp, gp = rng.integers(0, 40, nq), rng.integers(0, 40, ng)
    qf = (means[qp] + 0.7 * rng.normal(size=(nq, d))).astype(np.float32)
    gf = (means[gp] + 0.7 * rng.normal(size=(ng, d))).astype(np.float32)
    gp[rng.random(ng) < 0.05] = -1  # junk
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    if ties:  # exact duplicates across gallery blocks, and coarse values with many equal distances
        gf[350:500] = gf[0:150]
        qf, gf = np.round(qf, 0), np.round(gf, 0)
    ref = evaluate(qf, gf, qp, gp, qc, gc, metric=metric, protocol=protocol)
    # gallery blocks of 64 rows, query blocks of 16: many of both
    monkeypatch.setattr(metrics, "STREAM_BLOCK_BYTES", metrics.BYTES_PER_BLOCK_ELEMENT * 16 * 64)
    Spy.largest = 0
    g = Spy(*dataclass_fields(rows_file(tmp_path / "g.npy", gf)))
    q = rows_file(tmp_path / "q.npy", qf)
    got = evaluate(q, g, qp, gp, qc, gc, metric=metric, protocol=protocol, block_size=16)
    assert Spy.largest == 64
    assert (got.num_queries, got.num_skipped) == (ref.num_queries, ref.num_skipped)
    np.testing.assert_allclose(got.cmc, ref.cmc, rtol=0, atol=1e-12)
    assert got.mAP == pytest.approx(ref.mAP, abs=1e-12) and got.mINP == pytest.approx(ref.mINP, abs=1e-12)
    assert 0.15 < ref.mAP < 1.0  # a ranking with structure, not all-or-nothing


def dataclass_fields(f: RowFile) -> tuple:
    return f.path, f.shape, f.dtype, f.offset


def test_rerank_reads_files_whole_and_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    qf, gf = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(60, 4)).astype(np.float32)
    qp, gp = rng.integers(0, 10, 20), rng.integers(0, 10, 60)
    qc, gc = np.zeros(20, int), np.ones(60, int)
    ref = evaluate(qf, gf, qp, gp, qc, gc, rerank=True)
    got = evaluate(rows_file(tmp_path / "q.npy", qf), rows_file(tmp_path / "g.npy", gf), qp, gp, qc, gc, rerank=True)
    assert got.mAP == ref.mAP and np.array_equal(got.cmc, ref.cmc)


def test_on_disk_errors_name_the_mistake(tmp_path: Path) -> None:
    q = rows_file(tmp_path / "q.npy", np.zeros((2, 3), np.float32))
    g = rows_file(tmp_path / "g.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(DataError, match="query features are 3-d, gallery features 5-d"):
        evaluate(q, g, [0, 1], [0, 0, 1, 1], [0, 0], [1, 1, 1, 1])
    g = rows_file(tmp_path / "g3.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(DataError, match="g_pids"):
        evaluate(q, g, [0, 1], [0, 0, 1], [0, 0], [1, 1, 1, 1])
    with pytest.raises(DataError, match="none of the 2 queries"):
        evaluate(q, g, [0, 1], [5, 5, 6, 6], [0, 0], [1, 1, 1, 1])
    bad = np.zeros((4, 3), np.float32)
    bad[2, 1] = np.nan
    g = rows_file(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"gallery features in .*nan.npy: rows 2 contain NaN"):
        evaluate(q, g, [0, 1], [0, 0, 1, 1], [0, 0], [1, 1, 1, 1])
