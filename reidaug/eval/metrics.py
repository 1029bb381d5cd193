"""Re-ID retrieval metrics: CMC, mAP and mINP, computed in query blocks so memory stays bounded.

Follows torchreid's ``torchreid/metrics/rank.py`` (``eval_market1501`` and ``eval_cuhk03``) and
the Market-1501 protocol of Zheng et al., "Scalable Person Re-identification: A Benchmark",
ICCV 2015; mINP is the mean inverse negative penalty of Ye et al., "Deep Learning for Person
Re-identification: A Survey and Outlook", TPAMI 2021, as fast-reid reports it.

Protocols
---------
``market`` (torchreid ``eval_market1501``, Zheng et al.)
    For each query, the gallery is ranked by distance; gallery images with the query's pid AND
    the query's camera are removed from that query's ranking (they are too easy). CMC, AP and INP
    are computed on what remains. A query with no remaining match is counted in
    ``Metrics.num_skipped`` and left out of every average, as torchreid does (it ``continue``s),
    but here the count is reported instead of being dropped silently.

``cuhk03-sgs`` (torchreid ``eval_cuhk03``, single gallery shot)
    Same exclusion rule; then, for each query and each of ``repeats`` repetitions, one gallery
    image per identity is drawn uniformly at random among that identity's remaining images, and
    the CMC of that one-per-identity ranking is averaged over repetitions and queries. Draws are
    seeded per query (``seed`` and the query's index), so results do not depend on the block
    size. mAP and mINP are computed as torchreid's ``eval_cuhk03`` does: on the full ranking
    (all remaining gallery images, nothing sampled), i.e. equal to the ``market`` values.

Identities
----------
- ``junk_pid`` (default -1, Market-1501's junk boxes): gallery images with it are removed from
  every ranking, as Zheng et al.'s official evaluation does (torchreid's parser drops them before
  evaluation, which is the same); a query with it has no valid match and is skipped (counted).
- Distractors (Market-1501 pid 0) get no special treatment: they are ordinary gallery entries,
  so they are negatives for every query whose pid is not 0, as in torchreid. (Market has no
  query with pid 0; a dataset whose real identity 0 is a person, such as CUHK01, stays correct.)

Ties
----
Rankings use a stable sort: equal distances are ordered by gallery index, so results are
deterministic (torchreid's ``np.argsort`` leaves the order of ties unspecified).

Memory
------
``evaluate`` never builds the Q x G matrix. Query rows are processed in blocks of ``block_size``
(auto: as many rows as fit :data:`AUTO_BLOCK_BYTES`, at most 2048): one block of distances
(``block_size`` x G), its full stable sort (AP needs the whole ranking of each query) and the
match flags in sorted order, about :data:`BYTES_PER_BLOCK_ELEMENT` bytes per block element. AP
is then computed from the positions of the matches only (few per query), not from dense
cumulative sums. Re-ranking (``rerank=True``) is the exception: k-reciprocal encoding needs the
(Q+G)^2 distances; see :mod:`reidaug.eval.rerank`.

Features on disk (flat memory)
------------------------------
When the query or gallery features are a :class:`~reidaug.io.rowfile.RowFile` (what
``extract_features(out=...)`` writes), neither set is ever held whole and no query's full ranking
is built: memory depends on the block sizes, not on Q or G. A query's positives are few, and the
1-based rank of a positive among the kept gallery images is one plus the number of kept images
that sort before it, so counting is enough. Every distance gets an exact int64 sort key: the
float32 bits made order-preserving in the high half, the gallery index in the low half, so the
key order is the stable (distance, gallery index) order of the in-memory path, ties included.
Per block of query rows, two passes over the gallery blocks: the first gathers the keys of each
query's positives and same-camera removals (and the single-shot draws), the second sorts each
(queries x gallery block) key block and counts, with ``searchsorted``, the keys before each
positive. Rank, AP, INP and the single-shot CMC follow from those counts exactly as from the full
sort. Distances are computed in float32 (the file's rows are converted if stored wider).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from reidaug.errors import ConfigError, DataError, unknown_name
from reidaug.eval.distance import block_distances, check_metric, distance_blocks, query_gallery, resolve_device
from reidaug.eval.inputs import check_positive_int
from reidaug.io.rowfile import RowFile

LOG = logging.getLogger(__name__)

PROTOCOLS = ("market", "cuhk03-sgs")
#: Working-set target of one query block when ``block_size`` is None (auto).
AUTO_BLOCK_BYTES = 1 << 30
#: Bytes per (query, gallery) element of a block at its peak, rounded up: distances (4), sorted
#: values (4) and indices (8), gathered gallery pids (4), flags (1), and the sort's scratch.
BYTES_PER_BLOCK_ELEMENT = 32
MAX_AUTO_BLOCK_ROWS = 2048
#: On-disk path: working set of one (query block x gallery block) of keys, the bytes of one gallery
#: block's features (read, then normalised or squared: about three copies at once), query rows per block.
STREAM_BLOCK_BYTES = 128 << 20
STREAM_FEATURE_BYTES = 32 << 20
STREAM_QUERY_ROWS = 256


@dataclass(frozen=True)
class Metrics:
    """Result of :func:`evaluate`; averages are over the ``num_queries`` valid queries."""

    cmc: np.ndarray  # (max_rank,) float64; cmc[k-1] = fraction of queries with a match in top k
    mAP: float
    mINP: float
    num_queries: int  # queries with at least one valid gallery match
    num_skipped: int  # queries with none (left out of the averages, reported here)
    protocol: str = "market"

    def rank(self, k: int) -> float:
        """Rank-k accuracy (``cmc[k-1]``), ``k`` from 1 to ``len(cmc)``."""
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self.cmc):
            raise ConfigError(
                f"rank k must be an integer from 1 to {len(self.cmc)} (the CMC length, "
                f"max_rank clipped to the gallery size); got {k!r}. Ask for a smaller k or "
                f"evaluate with a larger max_rank."
            )
        return float(self.cmc[int(k) - 1])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: rank1/5/10 (those within the CMC), mAP, mINP and the counts."""
        out: dict[str, Any] = {f"rank{k}": float(self.cmc[k - 1]) for k in (1, 5, 10) if k <= len(self.cmc)}
        out.update(mAP=float(self.mAP), mINP=float(self.mINP), num_queries=int(self.num_queries),
                   num_skipped=int(self.num_skipped), max_rank=int(len(self.cmc)), protocol=self.protocol)
        return out


# ----------------------------------------------------------------------------------- inputs


def _labels(x: Any, name: str, n: int, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{name}: expected one {what} per feature row, shape ({n},); got shape "
            f"{arr.shape}. Pass the labels in the same order as the features."
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise DataError(
                f"{name}: expected integer {what}s; got dtype {arr.dtype}. Pass integer labels."
            )
    return arr.astype(np.int64)


def _checked_labels(
    q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, n_q: int, n_g: int, junk_pid: int | None, max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Labels as int64 arrays checked against the feature counts, the mask of gallery images that are
    not junk, and ``max_rank`` clipped to the kept gallery; an empty query set or kept gallery is a
    DataError. Returns ``(qp, qc, gp, gc, keep, max_rank)``."""
    qp = _labels(q_pids, "q_pids", n_q, "person id")
    qc = _labels(q_camids, "q_camids", n_q, "camera id")
    gp = _labels(g_pids, "g_pids", n_g, "person id")
    gc = _labels(g_camids, "g_camids", n_g, "camera id")
    if n_q == 0:
        raise DataError("query set is empty: nothing to evaluate. Pass at least one query.")
    keep = gp != junk_pid if junk_pid is not None else np.ones(n_g, bool)
    n_kept = int(keep.sum())
    if n_kept < n_g:
        LOG.info("removed %d junk gallery images (pid %d) from every ranking", n_g - n_kept, junk_pid)
    if n_kept == 0:
        raise DataError(
            f"gallery is empty{' after removing junk (pid %d)' % junk_pid if n_g else ''}: "
            f"nothing to rank against. Pass gallery features."
        )
    if max_rank > n_kept:
        LOG.info("max_rank %d > gallery size %d: CMC clipped to %d ranks", max_rank, n_kept, n_kept)
        max_rank = n_kept
    return qp, qc, gp, gc, keep, max_rank


# ---------------------------------------------------------------------------------- ranking


def _market_block(
    dist: torch.Tensor, qp: torch.Tensor, qc: torch.Tensor, gp: torch.Tensor, gc: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank one block of queries (Market rule) from its distances.

    dist (B, G); qp/qc (B,) query pids/cameras; gp/gc (G,) gallery pids/cameras (junk removed).
    Returns per query: number of valid matches, 1-based rank of the first match among the kept
    gallery images (0 when none), AP and INP (0 when none).
    """
    b, g = dist.shape
    order = torch.sort(dist, dim=1, stable=True).indices  # (B, G) gallery index by rank
    same_pid = gp[order] == qp[:, None]  # (B, G) bool
    sr, sc = same_pid.nonzero(as_tuple=True)  # row-major: (row, rank) of each same-pid image
    del same_pid
    same_cam = gc[order[sr, sc]] == qc[sr]  # same pid AND same camera: removed
    del order
    er, ec = sr[same_cam], sc[same_cam]  # masking keeps the row-major order, so the keys
    pr, pc = sr[~same_cam], sc[~same_cam]  # below stay sorted
    ex_keys = er * g + ec
    # rank (1-based) of each positive among the kept images: its sorted position minus the
    # number of removed images of the same query sorted before it
    removed_before = torch.searchsorted(ex_keys, pr * g + pc) - torch.searchsorted(ex_keys, pr * g)
    kept_rank = (pc + 1 - removed_before).to(torch.float64)  # (P,)
    num_pos = torch.bincount(pr, minlength=b)  # (B,)
    row_start = torch.cumsum(num_pos, 0) - num_pos
    hits = (torch.arange(pr.numel(), device=pr.device) - row_start[pr] + 1).to(torch.float64)
    ap_sum = torch.zeros(b, dtype=torch.float64, device=dist.device).index_add_(
        0, pr, hits / kept_rank
    )
    valid = num_pos > 0
    first = torch.zeros(b, dtype=torch.float64, device=dist.device)
    last = torch.zeros(b, dtype=torch.float64, device=dist.device)
    first[valid] = kept_rank[row_start[valid]]
    last[valid] = kept_rank[row_start[valid] + num_pos[valid] - 1]
    npos = num_pos.to(torch.float64)
    ap = torch.where(valid, ap_sum / npos.clamp(min=1), 0.0)
    # INP = (number of correct matches) / (rank of the hardest correct match)  [Ye et al.]
    inp = torch.where(valid, npos / last.clamp(min=1), 0.0)
    return (
        num_pos.cpu().numpy(),
        first.cpu().numpy().astype(np.int64),
        ap.cpu().numpy(),
        inp.cpu().numpy(),
    )


class _SingleShot:
    """Single-gallery-shot CMC (torchreid ``eval_cuhk03``), with per-query seeded draws."""

    def __init__(self, gp: np.ndarray, gc: np.ndarray, repeats: int, seed: int) -> None:
        self.gc = gc
        self.ids, gid = np.unique(gp, return_inverse=True)  # identities present in the gallery
        self.by_id = np.argsort(gid, kind="stable")  # gallery indices grouped by identity
        self.count = np.bincount(gid, minlength=len(self.ids))  # (P,)
        self.start = np.cumsum(self.count) - self.count  # (P,)
        self.gp = gp
        self.repeats = repeats
        self.seed = seed

    def draw(self, q_index: int, qp: int, qc: int) -> np.ndarray | None:
        """Gallery index of each identity's sample, (repeats, identities), the query's own identity
        drawn among its kept images; None for a query without a match. Seeded by the query's index."""
        k = int(np.searchsorted(self.ids, qp))
        if k >= len(self.ids) or self.ids[k] != qp:
            return None  # identity absent from the gallery
        members = self.by_id[self.start[k]:self.start[k] + self.count[k]]
        positives = members[self.gc[members] != qc]  # same pid, other camera
        if positives.size == 0:
            return None
        rng = np.random.default_rng([self.seed, int(q_index)])
        u = rng.random((self.repeats, len(self.ids)))  # (R, P): one draw per identity per repeat
        pick = self.start[None, :] + np.floor(u * self.count[None, :]).astype(np.int64)
        chosen = self.by_id[pick]  # (R, P) gallery index of each identity's sample
        # the query's own identity is drawn among its kept images only
        chosen[:, k] = positives[np.floor(u[:, k] * positives.size).astype(np.int64)]
        return chosen

    def ranks(self, dist: np.ndarray, q_index: np.ndarray, qp: np.ndarray, qc: np.ndarray
              ) -> np.ndarray:
        """0-based rank of the sampled match, (B, repeats); -1 for queries with no match."""
        b = dist.shape[0]
        out = np.full((b, self.repeats), -1, dtype=np.int64)
        q_id = np.searchsorted(self.ids, qp)
        for i in range(b):
            chosen = self.draw(int(q_index[i]), qp[i], qc[i])
            if chosen is None:
                continue
            k = q_id[i]
            d = dist[i, chosen]  # (R, P)
            d_pos = d[:, k:k + 1]
            g_pos = chosen[:, k:k + 1]
            closer = (d < d_pos) | ((d == d_pos) & (chosen < g_pos))  # stable tie order
            out[i] = closer.sum(axis=1)  # own identity never counts (neither < nor tie-less)
        return out


def _auto_block_rows(num_gallery: int) -> int:
    rows = AUTO_BLOCK_BYTES // max(1, BYTES_PER_BLOCK_ELEMENT * num_gallery)
    return int(max(1, min(MAX_AUTO_BLOCK_ROWS, rows)))


def evaluate(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    metric: str = "euclidean",
    protocol: str = "market",
    max_rank: int = 50,
    block_size: int | None = None,
    device: str | torch.device | None = None,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    rerank_max_bytes: int | None = None,
    repeats: int = 10,
    seed: int = 0,
    junk_pid: int | None = -1,
) -> Metrics:
    """CMC, mAP and mINP of query features against gallery features.

    qf (Q, D), gf (G, D): features (numpy or torch); q_pids/q_camids (Q,), g_pids/g_camids (G,):
    integer labels. ``metric``: "euclidean" or "cosine". ``protocol``: "market" or
    "cuhk03-sgs" (see the module docstring for both, junk and distractor handling, and ties).
    ``max_rank`` is clipped to the gallery size. ``block_size``: query rows per block (None:
    auto, about 1 GiB of working memory, at most 2048 rows); results do not depend on it.
    ``rerank``: k-reciprocal re-ranking (Zhong et al. 2017) with ``k1``, ``k2``,
    ``lambda_value``; it needs the (Q+G)^2 distance matrix and refuses above
    ``rerank_max_bytes`` (default :data:`reidaug.eval.rerank.DEFAULT_MAX_BYTES`).
    ``repeats``/``seed``: draws of the single-gallery-shot protocol. Raises DataError when no
    query has a valid match. ``qf`` / ``gf`` may be :class:`~reidaug.io.rowfile.RowFile` s: then
    the features are read a block at a time and memory stays flat in Q and G (module docstring;
    ``block_size`` is then the query rows per block, default :data:`STREAM_QUERY_ROWS`).
    """
    if protocol not in PROTOCOLS:
        raise unknown_name("evaluation protocol", str(protocol), PROTOCOLS)
    check_metric(metric)
    check_positive_int(max_rank, "max_rank")
    check_positive_int(repeats, "repeats")
    if block_size is not None:
        check_positive_int(block_size, "block_size", " or None (auto)")
    if isinstance(qf, RowFile) or isinstance(gf, RowFile):
        if rerank:  # k-reciprocal encoding needs every distance: the features are read whole
            qf = qf.read() if isinstance(qf, RowFile) else qf
            gf = gf.read() if isinstance(gf, RowFile) else gf
        else:
            return _evaluate_streamed(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=metric, protocol=protocol,
                                      max_rank=max_rank, query_rows=block_size, device=device, repeats=repeats,
                                      seed=seed, junk_pid=junk_pid)
    q, g = query_gallery(qf, gf, device)
    n_q = q.shape[0]
    qp, qc, gp, gc, keep, max_rank = _checked_labels(q_pids, g_pids, q_camids, g_camids, n_q, g.shape[0],
                                                     junk_pid, max_rank)
    if not keep.all():
        keep_t = torch.from_numpy(np.flatnonzero(keep)).to(g.device)
        g, gp, gc = g[keep_t], gp[keep], gc[keep]
    n_g = g.shape[0]
    rows = int(block_size) if block_size is not None else _auto_block_rows(n_g)

    if rerank:
        from reidaug.eval.rerank import DEFAULT_MAX_BYTES, rerank_distances

        final = rerank_distances(
            q, g, metric=metric, k1=k1, k2=k2, lambda_value=lambda_value,
            max_bytes=DEFAULT_MAX_BYTES if rerank_max_bytes is None else rerank_max_bytes,
        )  # (Q, G) float32 numpy
        final_t = torch.from_numpy(final).to(g.device)
        blocks: Iterator[tuple[int, int, torch.Tensor]] = (
            (s, min(s + rows, n_q), final_t[s:min(s + rows, n_q)]) for s in range(0, n_q, rows)
        )
    else:
        blocks = distance_blocks(q, g, metric, rows)

    # int32 labels (when they fit) halve the (B, G) gather in _market_block
    small = all(np.abs(a).max(initial=0) < 2**31 for a in (qp, qc, gp, gc))
    lab = np.int32 if small else np.int64
    gp_t = torch.from_numpy(gp.astype(lab)).to(g.device)
    gc_t = torch.from_numpy(gc.astype(lab)).to(g.device)
    single = _SingleShot(gp, gc, repeats, seed) if protocol == "cuhk03-sgs" else None
    hist = np.zeros(max_rank + 1, dtype=np.float64)  # hist[r-1]: first match at rank r
    ap_sum = inp_sum = 0.0
    n_valid = 0
    for start, stop, dist in blocks:
        bqp, bqc = qp[start:stop], qc[start:stop]
        num_pos, first, ap, inp = _market_block(
            dist, torch.from_numpy(bqp.astype(lab)).to(g.device),
            torch.from_numpy(bqc.astype(lab)).to(g.device),
            gp_t, gc_t,
        )
        valid = num_pos > 0
        if junk_pid is not None:
            valid &= bqp != junk_pid
        n_valid += int(valid.sum())
        ap_sum += float(ap[valid].sum())
        inp_sum += float(inp[valid].sum())
        if single is None:
            hist += np.bincount(np.minimum(first[valid], max_rank + 1) - 1,
                                minlength=max_rank + 1)[:max_rank + 1]
        else:
            ranks = single.ranks(dist.cpu().numpy(), np.arange(start, stop), bqp, bqc)[valid]
            hist += np.bincount(np.minimum(ranks.ravel(), max_rank),
                                minlength=max_rank + 1)[:max_rank + 1] / repeats
        LOG.debug("evaluated queries %d-%d of %d", start, stop, n_q)
    return _summary(hist, ap_sum, inp_sum, n_valid, n_q, max_rank, protocol)


def _summary(hist: np.ndarray, ap_sum: float, inp_sum: float, n_valid: int, n_q: int, max_rank: int,
             protocol: str) -> Metrics:
    n_skipped = n_q - n_valid
    if n_valid == 0:
        raise DataError(
            f"none of the {n_q} queries has a valid gallery match (same pid, another camera, "
            f"not junk), so CMC and mAP are undefined. Check that query and gallery pids use "
            f"the same labelling and that camera ids are not all equal."
        )
    if n_skipped:
        LOG.info("%d of %d queries have no valid gallery match; left out of the averages",
                 n_skipped, n_q)
    cmc = np.cumsum(hist[:max_rank]) / n_valid
    cmc.flags.writeable = False  # Metrics is frozen; so is its curve
    return Metrics(
        cmc=cmc,
        mAP=ap_sum / n_valid,
        mINP=inp_sum / n_valid,
        num_queries=n_valid,
        num_skipped=n_skipped,
        protocol=protocol,
    )



# ----------------------------------------------------------------------- features on disk


def _sort_keys(dist: torch.Tensor, gallery_index: torch.Tensor) -> torch.Tensor:
    """int64 keys whose order is the (distance, gallery index) order: the float32 bits made
    order-preserving (negative floats: every bit but the sign flipped) in the high 32 bits, the
    index in the low 32. dist (B, Gb) float32; gallery_index (Gb,) int64, < 2**32."""
    bits = (dist + 0.0).contiguous().view(torch.int32)  # + 0.0: -0.0 becomes +0.0 (they compare equal)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return (bits << 32) | gallery_index[None, :]


def _rows(src: Any, start: int, stop: int, name: str) -> np.ndarray:
    """Rows [start, stop) of a row file or an array, checked finite (as the in-memory path checks all)."""
    rows = src.block(start, stop) if isinstance(src, RowFile) else np.asarray(src[start:stop])
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        where = f" in {src.path}" if isinstance(src, RowFile) else ""
        raise DataError(
            f"{name}{where}: rows {', '.join(str(start + i) for i in np.flatnonzero(bad)[:5])} contain NaN or inf. "
            f"Check the model output (a diverged checkpoint or a division by a zero norm) before evaluating."
        )
    return rows


def _padded(lists: list[np.ndarray]) -> np.ndarray:
    """Rows of different lengths as one (B, M) int64 array, -1 where a row is shorter."""
    width = max((len(x) for x in lists), default=0)
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for i, x in enumerate(lists):
        out[i, :len(x)] = x
    return out


def _evaluate_streamed(
    qf: Any, gf: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, *, metric: str, protocol: str,
    max_rank: int, query_rows: int | None, device: Any, repeats: int, seed: int, junk_pid: int | None,
) -> Metrics:
    """:func:`evaluate` by counting, gallery block by gallery block (module docstring)."""
    dev = resolve_device(device, None)
    n_q, n_g_all = len(qf), len(gf)
    d_q = qf.shape[1]
    if gf.shape[1] != d_q:
        raise DataError(f"feature size differs: query features are {d_q}-d, gallery features {gf.shape[1]}-d. "
                        "Extract both with the same model.")
    if n_g_all >= 2**32:
        raise DataError(f"gallery of {n_g_all} images: the on-disk ranking indexes at most 2**32 - 1")
    qp, qc, gp, gc, keep, max_rank = _checked_labels(q_pids, g_pids, q_camids, g_camids, n_q, n_g_all,
                                                     junk_pid, max_rank)
    kept_rows = np.flatnonzero(keep)  # gallery position (after junk removal) -> file row
    q_rows = int(query_rows) if query_rows is not None else STREAM_QUERY_ROWS
    g_rows = int(max(1, min(STREAM_BLOCK_BYTES // (BYTES_PER_BLOCK_ELEMENT * q_rows),
                            STREAM_FEATURE_BYTES // (4 * max(1, d_q)))))
    # the kept gallery grouped by identity, in gallery order (file rows); also the single-shot draws
    groups = _SingleShot(gp[kept_rows], gc[kept_rows], repeats, seed)
    ids, by_id, count, start_of = groups.ids, kept_rows[groups.by_id], groups.count, groups.start
    single = groups if protocol == "cuhk03-sgs" else None
    junk_t = torch.from_numpy(~keep).to(dev)
    big = torch.iinfo(torch.int64).max  # a junk image's key: after every real key, never counted


    def block_keys(qb: torch.Tensor, gs: int, ge: int) -> torch.Tensor:
        """Sort keys of query block ``qb`` against gallery rows [gs, ge); junk images get ``big``."""
        gb = torch.from_numpy(_rows(gf, gs, ge, "gallery features")).to(dev, torch.float32)
        key = _sort_keys(block_distances(qb, gb, metric), torch.arange(gs, ge, dtype=torch.int64, device=dev))
        return key.masked_fill_(junk_t[gs:ge][None, :], big)

    hist = np.zeros(max_rank + 1, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    n_valid = 0
    for qs in range(0, n_q, q_rows):
        qe = min(qs + q_rows, n_q)
        b = qe - qs
        qb = torch.from_numpy(_rows(qf, qs, qe, "query features")).to(dev, torch.float32)
        pos, excl = [], []
        for i in range(qs, qe):
            k = np.searchsorted(ids, qp[i])
            if junk_pid is not None and qp[i] == junk_pid or k >= len(ids) or ids[k] != qp[i]:
                members = np.empty(0, np.int64)
            else:
                members = by_id[start_of[k]:start_of[k] + count[k]]
            same_cam = gc[members] == qc[i]
            pos.append(members[~same_cam])
            excl.append(members[same_cam])
        need = [_padded(pos), _padded(excl)]
        if single is not None:  # the single-shot draws, as file rows (-1: the query has no draw)
            draws = np.full((b, repeats, len(ids)), -1, dtype=np.int64)
            for r, i in enumerate(range(qs, qe)):
                chosen = single.draw(i, qp[i], qc[i])
                if chosen is not None:
                    draws[r] = kept_rows[chosen]
            need.append(draws.reshape(b, -1))
        widths = [x.shape[1] for x in need]
        need_t = torch.from_numpy(np.concatenate(need, axis=1)).to(dev)  # (B, M) file rows, -1 padding
        keys = torch.full(need_t.shape, big, dtype=torch.int64, device=dev)
        blocks = [(gs, min(gs + g_rows, n_g_all)) for gs in range(0, n_g_all, g_rows)]

        for gs, ge in blocks:  # pass 1: the keys of every needed gallery image
            inside = (need_t >= gs) & (need_t < ge)
            if bool(inside.any()):
                r, c = inside.nonzero(as_tuple=True)
                keys[r, c] = block_keys(qb, gs, ge)[r, need_t[r, c] - gs]
        n_pos, n_ex = widths[0], widths[1]
        pos_keys = keys[:, :n_pos].contiguous()  # (B, P); padding keeps `big`
        before = torch.zeros((b, n_pos), dtype=torch.int64, device=dev)
        if n_pos:
            for gs, ge in blocks:  # pass 2: how many gallery images sort before each positive
                sorted_keys = torch.sort(block_keys(qb, gs, ge), dim=1).values
                before += torch.searchsorted(sorted_keys, pos_keys)
        ex_keys = keys[:, n_pos:n_pos + n_ex]  # (B, E)
        removed_before = (ex_keys[:, None, :] < pos_keys[:, :, None]).sum(dim=2)  # (B, P)
        pos_valid = need_t[:, :n_pos] >= 0
        rank = torch.where(pos_valid, before - removed_before + 1, torch.iinfo(torch.int64).max)
        rank = torch.sort(rank, dim=1).values.to(torch.float64)  # (B, P) ascending, padding last
        num_pos = pos_valid.sum(dim=1)
        hit = torch.arange(1, n_pos + 1, dtype=torch.float64, device=dev)[None, :]
        ok = hit <= num_pos[:, None]
        ap = torch.where(ok, hit / rank, 0.0).sum(dim=1) / num_pos.clamp(min=1)
        last = torch.gather(rank, 1, (num_pos - 1).clamp(min=0)[:, None])[:, 0] if n_pos else rank.new_ones(b)
        inp = num_pos.to(torch.float64) / last
        valid = (num_pos > 0).cpu().numpy()
        n_valid += int(valid.sum())
        ap_sum += float(ap.cpu().numpy()[valid].sum())
        inp_sum += float(inp.cpu().numpy()[valid].sum())
        if single is None:
            first = rank[:, 0].cpu().numpy()[valid].astype(np.int64) if n_pos else np.empty(0, np.int64)
            hist += np.bincount(np.minimum(first, max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank + 1]
        else:
            drawn = keys[:, n_pos + n_ex:].reshape(b, repeats, len(ids))
            own = torch.from_numpy(np.searchsorted(ids, qp[qs:qe]).clip(max=len(ids) - 1)).to(dev)
            own_key = torch.gather(drawn, 2, own[:, None, None].expand(b, repeats, 1))  # (B, R, 1)
            ranks = (drawn < own_key).sum(dim=2).cpu().numpy()[valid]  # (valid, R) 0-based
            hist += np.bincount(np.minimum(ranks.ravel(), max_rank), minlength=max_rank + 1)[:max_rank + 1] / repeats
        LOG.debug("evaluated queries %d-%d of %d (features on disk)", qs, qe, n_q)
    return _summary(hist, ap_sum, inp_sum, n_valid, n_q, max_rank, protocol)
