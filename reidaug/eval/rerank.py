"""k-reciprocal re-ranking of re-ID distances (Zhong et al., CVPR 2017).

Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal Encoding",
CVPR 2017. The algorithm is the authors' (github.com/zhunzhong07/person-re-ranking, python
version) as torchreid ships it in ``torchreid/utils/rerank.py`` (``re_ranking``), step by step:

1. Over all N = Q + G images, the distances d are squared and each row divided by its maximum
   (the authors divide columns by their max and transpose; the matrix is symmetric).
2. k-reciprocal neighbours R(i, k1): the i's top-(k1+1) neighbours that also have i in their
   top-(k1+1). It is expanded with R(c, round(k1/2)) of each member c when more than 2/3 of
   that set is already in R(i, k1).
3. V[i, j] = exp(-d[i, j]) over the expanded set, normalised to sum 1 (the k-reciprocal
   feature); then "local query expansion": V[i] is replaced by the mean of V over i's top-k2
   neighbours (when k2 > 1).
4. Jaccard distance 1 - sum_j min(V[q, j], V[g, j]) / sum_j max(...), computed through an
   inverted index as the authors do (sum max = 2 - sum min, each V row sums to 1).
5. final = (1 - lambda) * jaccard + lambda * d (normalised squared), for query rows and
   gallery columns.

Differences, none of which changes the result beyond float rounding (or the order of exactly
equal distances): V is stored sparse (scipy CSR/CSC) instead of dense N x N, the top-k
neighbours come from ``torch.topk`` instead of a full argsort, and the reciprocal sets are
computed once for all images. Input distances are plain (not squared) distances, squared in
step 1 as in the authors' code; torchreid passes its squared euclidean matrix, so it squares
twice (same initial ranking, different weights). Memory: the dense N x N float32 distance matrix
dominates (see :func:`rerank_memory_bytes`); above ``max_bytes`` the functions refuse with the
estimate instead of exhausting the machine.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from reidaug.errors import ConfigError, DataError
from reidaug.eval.distance import distance_blocks
from reidaug.eval.inputs import check_positive_int

LOG = logging.getLogger(__name__)

#: Default refusal threshold of the re-ranking memory estimate. The estimate is an upper bound:
#: Market-1501-sized (3,368 queries + 15,913 gallery) is estimated at 3.5 GiB; bench/eval.py
#: measured a 1.75 GiB peak increase on random 512-d features.
DEFAULT_MAX_BYTES = 4 << 30


def _expansion_bound(k1: int, k2: int) -> int:
    """Upper bound of non-zeros per row of V after query expansion."""
    half = int(np.around(k1 / 2.0))
    return max(1, k2) * (k1 + 1) * (half + 2)


def rerank_memory_bytes(num_query: int, num_gallery: int, k1: int = 20, k2: int = 6) -> int:
    """Peak memory estimate (bytes) of re-ranking Q queries against G gallery images.

    Dense N x N float32 distances (N = Q + G), the Q x N Jaccard and final rows (float32 and
    float64 temporaries), sparse V and its expansion (CSR + CSC, 12 bytes a non-zero, with an
    upper bound of non-zeros per row) and the neighbour tables.
    """
    n = num_query + num_gallery
    nnz_row = min(n, _expansion_bound(k1, k2))
    return int(4 * n * n + 12 * num_query * n + 2 * 2 * 12 * n * nnz_row + 8 * n * (k1 + 1) ** 2)


def check_rerank_size(
    num_query: int, num_gallery: int, k1: int, k2: int, max_bytes: int
) -> int:
    """Return the estimate, or raise ConfigError when it is above ``max_bytes``."""
    need = rerank_memory_bytes(num_query, num_gallery, k1, k2)
    if need > max_bytes:
        n = num_query + num_gallery
        raise ConfigError(
            f"re-ranking refused: k-reciprocal encoding needs the dense (Q+G)^2 distance matrix, "
            f"{num_query} queries + {num_gallery} gallery = {n} images, about "
            f"{need / 2**30:.1f} GiB, above the limit of {max_bytes / 2**30:.1f} GiB. Evaluate "
            f"without re-ranking, re-rank a subset of the gallery, or raise the limit "
            f"(rerank_max_bytes / max_bytes) if this machine has the memory."
        )
    return need


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    for name, value in (("k1", k1), ("k2", k2)):
        check_positive_int(value, f"re-ranking {name}", " (paper: k1=20, k2=6)")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ConfigError(
            f"re-ranking lambda_value must be in [0, 1] (weight of the original distance; "
            f"paper: 0.3); got {lambda_value!r}."
        )


def _top_neighbours(dist: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """(N, k) indices of each row's k smallest entries, nearest first."""
    n = dist.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, block):
        rows = torch.from_numpy(dist[s:s + block])
        out[s:s + block] = rows.topk(k, dim=1, largest=False, sorted=True).indices.numpy()
    return out


def _reciprocal(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward top-(k+1) lists and a mask of those whose own top-(k+1) holds the row's image."""
    n = ranks.shape[0]
    fwd = ranks[:, :k + 1]  # (N, k+1)
    mask = np.empty(fwd.shape, dtype=bool)
    for s in range(0, n, 4096):
        back = ranks[fwd[s:s + 4096], :k + 1]  # (b, k+1, k+1)
        mask[s:s + 4096] = (back == np.arange(s, s + back.shape[0])[:, None, None]).any(axis=2)
    return fwd, mask


def _k_reciprocal_inplace(
    dist: np.ndarray, num_query: int, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    """Re-rank the (N, N) distance matrix ``dist`` (overwritten); return (Q, N-Q) float32."""
    n = dist.shape[0]
    # step 1: squared, each row divided by its max (symmetric: = column max, transposed)
    np.square(dist, out=dist)
    row_max = dist.max(axis=1)
    row_max[row_max <= 0] = 1.0  # an all-zero row (identical images) stays zero
    dist /= row_max[:, None]

    k_top = min(n, max(k1 + 1, k2))
    ranks = _top_neighbours(dist, k_top)  # (N, k_top), self first unless duplicated
    half = int(np.around(k1 / 2.0))
    fwd_k, mask_k = _reciprocal(ranks, min(k1, k_top - 1))
    fwd_h, mask_h = _reciprocal(ranks, min(half, k_top - 1))

    # steps 2-3: sparse k-reciprocal features V (N, N)
    indptr = np.zeros(n + 1, dtype=np.int64)
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for i in range(n):
        recip = fwd_k[i][mask_k[i]]
        parts = [recip]
        for c in recip:
            c_recip = fwd_h[c][mask_h[c]]
            if np.intersect1d(c_recip, recip).size > 2.0 / 3.0 * c_recip.size:
                parts.append(c_recip)
        idx = np.unique(np.concatenate(parts))
        w = np.exp(-dist[i, idx].astype(np.float64))
        cols.append(idx)
        vals.append((w / w.sum()).astype(np.float32))
        indptr[i + 1] = indptr[i] + idx.size
    v = sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr), shape=(n, n))
    del cols, vals
    if k2 != 1:
        # local query expansion: V[i] <- mean of V over i's top-k2 neighbours
        kk = min(k2, k_top)
        avg = sp.csr_matrix(
            (np.full(n * kk, 1.0 / kk, dtype=np.float32), ranks[:, :kk].ravel(),
             np.arange(0, n * kk + 1, kk)),
            shape=(n, n),
        )
        v = (avg @ v).tocsr()
    del ranks, fwd_k, mask_k, fwd_h, mask_h

    # step 4: Jaccard distance of each query to everything, through an inverted index
    # (CSC: the rows where each column of V is non-zero)
    v_csc = v.tocsc()
    final = np.empty((num_query, n - num_query), dtype=np.float32)
    for i in range(num_query):
        nz = v.indices[v.indptr[i]:v.indptr[i + 1]]
        vi = v.data[v.indptr[i]:v.indptr[i + 1]]
        starts, stops = v_csc.indptr[nz], v_csc.indptr[nz + 1]
        lengths = stops - starts
        # concatenated ranges [starts[j], stops[j]) without a Python loop
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        pos = np.arange(lengths.sum()) + offsets
        mins = np.minimum(np.repeat(vi, lengths), v_csc.data[pos])
        temp_min = np.bincount(v_csc.indices[pos], weights=mins, minlength=n)[num_query:]
        jaccard = 1.0 - temp_min / (2.0 - temp_min)
        # step 5
        final[i] = jaccard * (1.0 - lambda_value) + dist[i, num_query:] * lambda_value
    return final


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Re-ranked (Q, G) distances from query-gallery, query-query and gallery-gallery distances.

    Same signature and meaning as torchreid's ``re_ranking`` (distances, not squared; the
    paper's k1=20, k2=6, lambda_value=0.3). Raises ConfigError above ``max_bytes``.
    """
    _check_params(k1, k2, lambda_value)
    qg = np.asarray(q_g_dist, dtype=np.float32)
    qq = np.asarray(q_q_dist, dtype=np.float32)
    gg = np.asarray(g_g_dist, dtype=np.float32)
    nq, ng = qg.shape if qg.ndim == 2 else (-1, -1)
    if qg.ndim != 2 or qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise DataError(
            f"re_ranking: expected q_g (Q, G), q_q (Q, Q), g_g (G, G) distance matrices; got "
            f"{qg.shape}, {qq.shape}, {gg.shape}. Compute all three with the same metric."
        )
    check_rerank_size(nq, ng, k1, k2, max_bytes)
    full = np.empty((nq + ng, nq + ng), dtype=np.float32)
    full[:nq, :nq], full[:nq, nq:], full[nq:, :nq], full[nq:, nq:] = qq, qg, qg.T, gg
    return _k_reciprocal_inplace(full, nq, k1, k2, lambda_value)


def rerank_distances(
    qf: torch.Tensor,
    gf: torch.Tensor,
    *,
    metric: str = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances straight from features (Q, D) and (G, D).

    Builds the (Q+G)^2 distance matrix in row blocks (no second copy), after the size check.
    """
    _check_params(k1, k2, lambda_value)
    nq, ng = qf.shape[0], gf.shape[0]
    need = check_rerank_size(nq, ng, k1, k2, max_bytes)
    LOG.info("re-ranking %d queries x %d gallery images (about %.2f GiB)", nq, ng, need / 2**30)
    allf = torch.cat([qf, gf], dim=0)
    full = np.empty((nq + ng, nq + ng), dtype=np.float32)
    for s, e, d in distance_blocks(allf, allf, metric, 1024):
        full[s:e] = d.cpu().numpy()
    # the blocked matmul leaves ~1e-7 asymmetry; the algorithm assumes a symmetric matrix
    np.fill_diagonal(full, 0.0)
    return _k_reciprocal_inplace(full, nq, k1, k2, lambda_value)
