"""CMC / mAP / mINP of reidaug.eval.metrics: hand-worked cases, the Market rules, a brute-force
reference in plain Python loops, block-size independence and the single-gallery-shot protocol."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidaug.errors import ConfigError, DataError, UnknownNameError
from reidaug.eval.distance import pairwise_distances
from reidaug.eval.metrics import Metrics, evaluate


def one_d(values: list[float]) -> np.ndarray:
    """1-D features: the euclidean distance is |a - b|, so rankings can be written by hand."""
    return np.asarray(values, dtype=np.float64)[:, None]


# Gallery on a line; the query of pid 1 / camera 0 sits at 0.
#   index  position  pid  cam   for query A (pid 1, cam 0)
#   g0     1.0       2    1     negative
#   g1     2.0       1    1     positive
#   g2     3.0       1    0     same pid AND same camera -> removed from A's ranking
#   g3     4.0       3    1     negative
#   g4     5.0       1    2     positive
#   g5     0.5      -1    1     junk -> removed from every ranking
G_POS = [1.0, 2.0, 3.0, 4.0, 5.0, 0.5]
G_PID = [2, 1, 1, 3, 1, -1]
G_CAM = [1, 1, 0, 1, 2, 1]


def test_hand_worked_single_query() -> None:
    m = evaluate(one_d([0.0]), one_d(G_POS), [1], G_PID, [0], G_CAM)
    # kept ranking of A: g0 (neg), g1 (pos), g3 (neg), g4 (pos); g5 junk and g2 removed
    # CMC: first match at rank 2 -> [0, 1, 1, 1, 1] (5 non-junk gallery images = CMC length)
    # AP = (1/2 + 2/4) / 2 = 0.5  (precision at each match: 1 of 2, then 2 of 4)
    # INP = matches / rank of the last match = 2 / 4 = 0.5
    np.testing.assert_allclose(m.cmc, [0.0, 1.0, 1.0, 1.0, 1.0])
    assert m.mAP == pytest.approx(0.5)
    assert m.mINP == pytest.approx(0.5)
    assert (m.num_queries, m.num_skipped) == (1, 0)
    assert m.rank(1) == 0.0 and m.rank(2) == 1.0


def test_hand_worked_multiple_queries_with_a_skipped_one() -> None:
    # A as above; B (pid 7) has no gallery image at all -> skipped;
    # C (pid 2, cam 0) at 1.1: distances g0 0.1, g5 0.6 (junk), g1 0.9, g2 1.9, ...
    #   its only match g0 (cam 1) is first -> CMC [1, 1, ...], AP = 1/1 = 1, INP = 1/1 = 1
    # averages over the 2 valid queries: CMC[0] = (0 + 1)/2 = 0.5, CMC[1:] = 1,
    # mAP = (0.5 + 1)/2 = 0.75, mINP = (0.5 + 1)/2 = 0.75
    m = evaluate(one_d([0.0, 100.0, 1.1]), one_d(G_POS), [1, 7, 2], G_PID, [0, 0, 0], G_CAM)
    np.testing.assert_allclose(m.cmc, [0.5, 1.0, 1.0, 1.0, 1.0])
    assert m.mAP == pytest.approx(0.75)
    assert m.mINP == pytest.approx(0.75)
    assert (m.num_queries, m.num_skipped) == (2, 1)
    d = m.as_dict()
    assert d["rank1"] == 0.5 and d["rank5"] == 1.0 and "rank10" not in d
    assert d["num_skipped"] == 1 and d["mAP"] == pytest.approx(0.75)


def test_same_camera_exclusion_rule() -> None:
    # Query pid 1 in camera 1 instead: now g1 (pid 1, cam 1) is the removed one and g2 (cam 0)
    # counts. Kept ranking: g0 (neg), g2 (pos), g3 (neg), g4 (pos) -> same numbers as A, but a
    # different image was dropped: AP = (1/2 + 2/4)/2 = 0.5.
    m = evaluate(one_d([0.0]), one_d(G_POS), [1], G_PID, [1], G_CAM)
    assert m.mAP == pytest.approx(0.5) and m.rank(1) == 0.0
    # Query at 2.9: distances g2 0.1, g1 0.9, g3 1.1, g0 1.9, g4 2.1.
    #   camera 0: g2 (pid 1, cam 0) removed; g1 (pos), g3, g0, g4 (pos)
    #     AP = (1/1 + 2/4)/2 = 0.75, INP = 2/4 = 0.5
    m0 = evaluate(one_d([2.9]), one_d(G_POS), [1], G_PID, [0], G_CAM)
    assert m0.mAP == pytest.approx(0.75) and m0.mINP == pytest.approx(0.5)
    #   camera 2: g4 (pid 1, cam 2) removed; g2 (pos), g1 (pos), g3, g0
    #     AP = (1/1 + 2/2)/2 = 1, INP = 2/2 = 1
    m2 = evaluate(one_d([2.9]), one_d(G_POS), [1], G_PID, [2], G_CAM)
    assert m2.mAP == pytest.approx(1.0) and m2.mINP == pytest.approx(1.0)


def test_query_whose_only_match_is_in_its_own_camera_is_skipped() -> None:
    # pid 3 appears only as g3 (camera 1): a camera-1 query has no valid match
    m = evaluate(one_d([0.0, 0.0]), one_d(G_POS), [3, 1], G_PID, [1, 0], G_CAM)
    assert (m.num_queries, m.num_skipped) == (1, 1)
    assert m.mAP == pytest.approx(0.5)  # only query A counts


def test_no_valid_query_raises() -> None:
    with pytest.raises(DataError, match="none of the 1 queries"):
        evaluate(one_d([0.0]), one_d(G_POS), [3], G_PID, [1], G_CAM)


def test_distractors_pid0_are_negatives() -> None:
    # a distractor (pid 0) closer than everything pushes A's matches down one rank
    pos, pid, cam = G_POS + [0.1], G_PID + [0], G_CAM + [3]
    m = evaluate(one_d([0.0]), one_d(pos), [1], pid, [0], cam)
    # kept: d(0.1), g0, g1 (pos), g3, g4 (pos) -> AP = (1/3 + 2/5)/2, INP = 2/5
    assert m.mAP == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert m.mINP == pytest.approx(2 / 5)


# ------------------------------------------------------------------ brute-force reference


def brute_force(qf, gf, qp, gp, qc, gc, metric, max_rank):
    """Plain-Python Market evaluation on the full distance matrix (no numpy vector tricks)."""
    qf, gf = qf.tolist(), gf.tolist()
    dist = []
    for q in qf:
        row = []
        for g in gf:
            if metric == "euclidean":
                row.append(math.sqrt(sum((a - b) ** 2 for a, b in zip(q, g))))
            else:
                nq = math.sqrt(sum(a * a for a in q))
                ng = math.sqrt(sum(b * b for b in g))
                row.append(1.0 - sum(a * b for a, b in zip(q, g)) / (nq * ng))
        dist.append(row)
    max_rank = min(max_rank, len(gf))
    cmc_sum = [0.0] * max_rank
    aps, inps = [], []
    for i in range(len(qf)):
        ranking = sorted(range(len(gf)), key=lambda j: dist[i][j])
        flags = []
        for j in ranking:
            if gp[j] == qp[i] and gc[j] == qc[i]:
                continue
            flags.append(gp[j] == qp[i])
        if not any(flags):
            continue
        first = flags.index(True)
        for r in range(first, max_rank):
            cmc_sum[r] += 1
        hits, precisions, last = 0, [], 0
        for r, f in enumerate(flags, start=1):
            if f:
                hits += 1
                precisions.append(hits / r)
                last = r
        aps.append(sum(precisions) / hits)
        inps.append(hits / last)
    n = len(aps)
    return [c / n for c in cmc_sum], sum(aps) / n, sum(inps) / n, n, len(qf) - n, dist


def random_set(seed, nq=25, ng=90, dim=6, n_ids=12, n_cams=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    qp = rng.integers(0, n_ids + 2, nq)  # some query ids are absent from the gallery
    gp = rng.integers(0, n_ids, ng)
    qf = np.vstack([centres[p % n_ids] for p in qp]) + rng.normal(size=(nq, dim))
    gf = centres[gp] + rng.normal(size=(ng, dim))
    return qf, gf, qp, gp, rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force_on_random_data(metric: str, seed: int) -> None:
    qf, gf, qp, gp, qc, gc = random_set(seed)
    cmc, mAP, mINP, n, skipped, dist = brute_force(
        qf, gf, qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist(), metric, 50)
    gaps = np.diff(np.sort(np.asarray(dist), axis=1), axis=1)
    assert gaps.min() > 1e-9, "test data has ties; pick another seed"
    assert skipped > 0 and n > 10  # the set exercises both paths
    m = evaluate(qf, gf, qp, gp, qc, gc, metric=metric, max_rank=50, block_size=7)
    np.testing.assert_allclose(m.cmc, cmc, atol=1e-12)
    assert m.mAP == pytest.approx(mAP, abs=1e-12)
    assert m.mINP == pytest.approx(mINP, abs=1e-12)
    assert (m.num_queries, m.num_skipped) == (n, skipped)
    assert 0.0 < m.mAP < 1.0 and 0.0 < m.rank(1) < 1.0


@pytest.mark.parametrize("protocol", ["market", "cuhk03-sgs"])
def test_block_size_does_not_change_results(protocol: str) -> None:
    qf, gf, qp, gp, qc, gc = random_set(5, nq=40, ng=150)
    ref = evaluate(qf, gf, qp, gp, qc, gc, protocol=protocol, block_size=10_000)
    for bs in (1, 3, 16, None):
        m = evaluate(qf, gf, qp, gp, qc, gc, protocol=protocol, block_size=bs)
        np.testing.assert_allclose(m.cmc, ref.cmc, atol=1e-12)
        assert m.mAP == pytest.approx(ref.mAP, abs=1e-12)
        assert m.mINP == pytest.approx(ref.mINP, abs=1e-12)
        assert (m.num_queries, m.num_skipped) == (ref.num_queries, ref.num_skipped)


def test_cosine_and_euclidean_agree_on_normalised_features() -> None:
    qf, gf, qp, gp, qc, gc = random_set(7, nq=40, ng=150, dim=16)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    # |a - b|^2 = 2 - 2 cos(a, b) on the unit sphere: the same ranking, so the same metrics
    e = evaluate(qf, gf, qp, gp, qc, gc, metric="euclidean")
    c = evaluate(qf, gf, qp, gp, qc, gc, metric="cosine")
    np.testing.assert_allclose(e.cmc, c.cmc)
    assert e.mAP == pytest.approx(c.mAP) and e.mINP == pytest.approx(c.mINP)


def test_torch_and_float32_inputs_give_the_numpy_result() -> None:
    qf, gf, qp, gp, qc, gc = random_set(9)
    ref = evaluate(qf, gf, qp, gp, qc, gc)
    m = evaluate(torch.from_numpy(qf).float(), torch.from_numpy(gf).float(),
                 torch.from_numpy(qp), torch.from_numpy(gp), qc.tolist(), gc.tolist())
    assert m.mAP == pytest.approx(ref.mAP, abs=1e-6)
    np.testing.assert_allclose(m.cmc, ref.cmc)


def test_pairwise_distances_blocks_cover_the_matrix() -> None:
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(11, 5)), rng.normal(size=(7, 5))
    full = np.sqrt(((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1))
    seen = np.full(full.shape, np.nan)
    for start, stop, block in pairwise_distances(qf, gf, block_size=4):
        assert isinstance(block, np.ndarray) and block.shape == (stop - start, 7)
        seen[start:stop] = block
    np.testing.assert_allclose(seen, full, atol=1e-10)
    cos = [b for _, _, b in pairwise_distances(torch.from_numpy(qf), torch.from_numpy(gf),
                                               "cosine", block_size=100)]
    assert len(cos) == 1 and isinstance(cos[0], torch.Tensor)
    expect = 1 - (qf @ gf.T) / np.outer(np.linalg.norm(qf, axis=1), np.linalg.norm(gf, axis=1))
    np.testing.assert_allclose(cos[0].numpy(), expect, atol=1e-10)


# ----------------------------------------------------------------- single gallery shot


def test_single_gallery_shot_hand_worked_expectation() -> None:
    # query pid 1 cam 0 at 0; positives at 1 and 3 (cam 1), one pid-2 image at 2.
    # Each repeat draws one positive: the one at 1 -> rank 1; the one at 3 -> the pid-2 image
    # is closer -> rank 2. Expected rank-1 = 1/2, rank-2 = 1. mAP is the full-ranking AP:
    # ranking pos, neg, pos -> (1/1 + 2/3)/2 = 5/6.
    m = evaluate(one_d([0.0]), one_d([1.0, 2.0, 3.0]), [1], [1, 2, 1], [0], [1, 1, 1],
                 protocol="cuhk03-sgs", repeats=4000, seed=3)
    assert m.rank(1) == pytest.approx(0.5, abs=0.04)  # binomial sd 0.008
    assert m.rank(2) == 1.0
    assert m.mAP == pytest.approx(5 / 6)
    again = evaluate(one_d([0.0]), one_d([1.0, 2.0, 3.0]), [1], [1, 2, 1], [0], [1, 1, 1],
                     protocol="cuhk03-sgs", repeats=4000, seed=3)
    assert again.rank(1) == m.rank(1)  # seeded


def test_single_gallery_shot_equals_market_with_one_image_per_identity() -> None:
    rng = np.random.default_rng(4)
    gf = rng.normal(size=(30, 8))
    gp = np.arange(30)
    qp = rng.integers(0, 30, 20)
    qf = gf[qp] + rng.normal(scale=0.8, size=(20, 8))
    qc, gc = np.zeros(20, int), np.ones(30, int)
    mk = evaluate(qf, gf, qp, gp, qc, gc)
    sg = evaluate(qf, gf, qp, gp, qc, gc, protocol="cuhk03-sgs", repeats=3)
    np.testing.assert_allclose(sg.cmc, mk.cmc)  # nothing to sample: the same ranking
    assert sg.mAP == mk.mAP and sg.num_queries == mk.num_queries
    assert 0 < mk.rank(1) < 1


# ------------------------------------------------------------------------------- errors


def test_errors_name_what_is_wrong() -> None:
    qf, gf, qp, gp, qc, gc = random_set(0)
    with pytest.raises(UnknownNameError, match='Did you mean "cosine"'):
        evaluate(qf, gf, qp, gp, qc, gc, metric="cosin")
    with pytest.raises(UnknownNameError, match="market"):
        evaluate(qf, gf, qp, gp, qc, gc, protocol="duke")
    with pytest.raises(DataError, match="6-d.*5-d"):
        evaluate(qf, gf[:, :5], qp, gp, qc, gc)
    with pytest.raises(DataError, match="g_pids"):
        evaluate(qf, gf, qp, gp[:-1], qc, gc)
    bad = qf.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        evaluate(bad, gf, qp, gp, qc, gc)
    m = evaluate(qf, gf, qp, gp, qc, gc, max_rank=10)
    assert isinstance(m, Metrics) and len(m.cmc) == 10
    with pytest.raises(ConfigError, match="from 1 to 10"):
        m.rank(11)


def test_labels_beyond_int32_give_the_same_result() -> None:
    qf, gf, qp, gp, qc, gc = random_set(2)
    ref = evaluate(qf, gf, qp, gp, qc, gc)
    big = 2**40  # e.g. hashed identity names
    m = evaluate(qf, gf, qp + big, gp + big, qc + big, gc + big)
    assert m.mAP == ref.mAP and m.num_skipped == ref.num_skipped
