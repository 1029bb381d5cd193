"""k-reciprocal re-ranking (reidaug.eval.rerank): a dense reference written from the paper,
the effect on mAP on data with planted identities, and the size refusal."""
from __future__ import annotations

import numpy as np
import pytest

from reidaug.errors import ConfigError
from reidaug.eval.metrics import evaluate
from reidaug.eval.rerank import re_ranking, rerank_memory_bytes


def reference_rerank(qf, gf, k1, k2, lam):
    """Zhong et al. 2017 on dense matrices, loops and Python sets, float64."""
    x = np.vstack([qf, gf])
    n, nq = x.shape[0], qf.shape[0]
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # squared euclidean
    d = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for c in r:
            rc = reciprocal(c, half)
            if len(set(rc) & set(r)) > 2 / 3 * len(rc):
                expanded |= set(rc)
        idx = sorted(expanded)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    final = np.zeros((nq, n - nq))
    for q in range(nq):
        for j in range(nq, n):
            jac = 1 - np.minimum(v[q], v[j]).sum() / np.maximum(v[q], v[j]).sum()
            final[q, j - nq] = (1 - lam) * jac + lam * d[q, j]
    return final


def planted(seed, n_ids=8, per_id=6, n_query_per_id=2, dim=10, noise=0.9):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    gp = np.repeat(np.arange(n_ids), per_id)
    qp = np.repeat(np.arange(n_ids), n_query_per_id)
    gf = centres[gp] + noise * rng.normal(size=(gp.size, dim))
    qf = centres[qp] + noise * rng.normal(size=(qp.size, dim))
    return qf, gf, qp, gp, np.zeros(qp.size, int), np.ones(gp.size, int)


def euclid(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


@pytest.mark.parametrize("k1,k2", [(20, 6), (5, 3), (6, 1)])
def test_matches_dense_reference(k1: int, k2: int) -> None:
    qf, gf, *_ = planted(0)
    got = re_ranking(euclid(qf, gf), euclid(qf, qf), euclid(gf, gf), k1=k1, k2=k2,
                     lambda_value=0.3)
    ref = reference_rerank(qf, gf, k1, k2, 0.3)
    assert got.shape == (qf.shape[0], gf.shape[0]) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # lambda = 1 is the original (normalised squared) distance: re-ranking switched off
    only_d = re_ranking(euclid(qf, gf), euclid(qf, qf), euclid(gf, gf), k1=k1, k2=k2,
                        lambda_value=1.0)
    d = np.vstack([euclid(qf, np.vstack([qf, gf]))]) ** 2
    np.testing.assert_allclose(only_d, (d / d.max(axis=1, keepdims=True))[:, qf.shape[0]:],
                               atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k1,k2", [(20, 6), (6, 3)])
def test_rerank_improves_or_keeps_map_on_planted_identities(seed: int, k1: int, k2: int) -> None:
    # 10 identities x (8 gallery + 2 query) images around 16-d centres: tight enough that
    # neighbours of neighbours share the identity (the structure k-reciprocal encoding uses),
    # noisy enough that the plain ranking is imperfect (mAP about 0.8)
    qf, gf, qp, gp, qc, gc = planted(seed, n_ids=10, per_id=8, dim=16, noise=0.8)
    base = evaluate(qf, gf, qp, gp, qc, gc)
    rr = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, k1=k1, k2=k2)
    assert base.mAP < 0.95  # not already perfect, so the test can see a change
    assert rr.mAP >= base.mAP
    assert rr.num_queries == base.num_queries


def test_evaluate_rerank_uses_the_rerank_distances() -> None:
    qf, gf, qp, gp, qc, gc = planted(3)
    dist = reference_rerank(qf, gf, 6, 3, 0.3)
    # mAP from the reference re-ranked distances (no same-camera pairs here: cams 0 vs 1)
    m = evaluate(qf, gf, qp, gp, qc, gc, rerank=True, k1=6, k2=3)
    aps = []
    for i in range(len(qp)):
        flags = gp[np.argsort(dist[i], kind="stable")] == qp[i]
        hits = np.cumsum(flags)[flags]
        aps.append(np.mean(hits / (np.flatnonzero(flags) + 1)))
    assert m.mAP == pytest.approx(np.mean(aps), abs=1e-6)


def test_refuses_above_the_memory_limit_with_the_estimate() -> None:
    qf, gf, qp, gp, qc, gc = planted(0)
    need = rerank_memory_bytes(len(qp), len(gp))
    with pytest.raises(ConfigError, match=r"16 queries \+ 48 gallery = 64 images.*GiB"):
        evaluate(qf, gf, qp, gp, qc, gc, rerank=True, rerank_max_bytes=need - 1)
    # Market-1501 (3,368 queries, 15,913 gallery) fits the default limit; 20k x 100k does not
    assert rerank_memory_bytes(3368, 15913) < 4 << 30
    assert rerank_memory_bytes(20000, 100000) > 40 << 30
    with pytest.raises(ConfigError, match="Evaluate without re-ranking"):
        re_ranking(np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), max_bytes=1)
    with pytest.raises(ConfigError, match="lambda_value"):
        re_ranking(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), lambda_value=2.0)
