"""Evaluation benchmark: blocked ``reidaug.eval.evaluate`` vs a naive full-matrix evaluation.

Data: random 512-d float32 features with a planted identity structure (identity centre + noise,
about 20 gallery images per identity, 6 cameras), so CMC/mAP are neither 0 nor 1 and both
implementations can be checked to agree.

Methods
- ``naive``: what most re-ID code does (torchreid's ``compute_distance_matrix`` +
  ``eval_market1501`` pattern): the full Q x G float32 distance matrix in numpy, a full
  ``np.argsort`` of it (int64, Q x G), then a per-query loop over the sorted match flags.
- ``blocked``: ``reidaug.eval.evaluate`` (auto block size, torch CPU, Market protocol).
- ``disk``: the same ``evaluate`` on features in ``.npy`` row files (``reidaug.io.rowfile``, written
  before the measured call and dropped from memory): gallery block by gallery block, counting
  what sorts before each positive, so neither feature set is ever in memory.
- ``rerank`` (only with ``--rerank QxG``): ``evaluate(..., rerank=True)``, k1=20, k2=6,
  lambda 0.3, which holds the dense (Q+G)^2 matrix by design.

Every (method, size) runs in a fresh subprocess, so one run's memory cannot hide in another's.
Memory reported: ``peak_delta`` = the process's peak resident set size during the evaluation
call minus its RSS just before it (features already in memory). The peak is Linux ``VmHWM``,
reset with ``/proc/self/clear_refs`` just before the call (falls back to ``ru_maxrss`` where that
is unavailable). It counts everything the call touches (numpy, torch, BLAS buffers), not
allocations alone. Time is wall clock of the call only (data generation excluded).

    .venv/bin/python bench/eval.py                       # 2k x 10k and 5k x 25k side by side,
                                                         # then 20k x 100k blocked alone
    .venv/bin/python bench/eval.py --sizes 2000x10000 --big none
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from common import RESULTS, ROOT, load_average, machine, now_utc, write_result

#: Noise scale relative to the identity centres (unit normal both): sets the difficulty.
NOISE = 2.5


# ------------------------------------------------------------------------------ the worker


def make_data(nq: int, ng: int, dim: int, seed: int) -> tuple[np.ndarray, ...]:
    """Planted identities: features = centre[pid] + noise, float32, generated in chunks."""
    rng = np.random.default_rng(seed)
    n_ids = max(2, ng // 20)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    gp = rng.integers(0, n_ids, ng)
    qp = rng.integers(0, n_ids, nq)
    gc = rng.integers(0, 6, ng)
    qc = rng.integers(0, 6, nq)

    def feats(pids: np.ndarray) -> np.ndarray:
        out = np.empty((pids.size, dim), dtype=np.float32)
        for s in range(0, pids.size, 8192):
            noise = rng.standard_normal((min(8192, pids.size - s), dim), dtype=np.float32)
            out[s:s + 8192] = centres[pids[s:s + 8192]] + NOISE * noise
        return out

    return feats(qp), feats(gp), qp, gp, qc, gc


def naive_evaluate(qf: np.ndarray, gf: np.ndarray, qp: np.ndarray, gp: np.ndarray,
                   qc: np.ndarray, gc: np.ndarray, max_rank: int = 50) -> dict[str, float]:
    """Full-matrix Market evaluation (the torchreid eval_market1501 pattern), numpy only."""
    dist = (qf * qf).sum(1)[:, None] + (gf * gf).sum(1)[None, :] - 2.0 * (qf @ gf.T)  # (Q, G)
    np.maximum(dist, 0, out=dist)
    np.sqrt(dist, out=dist)
    order = np.argsort(dist, axis=1, kind="stable")  # (Q, G) int64
    matches = gp[order] == qp[:, None]  # (Q, G) bool
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(qf.shape[0]):
        keep = ~((gp[order[i]] == qp[i]) & (gc[order[i]] == qc[i]))
        raw = matches[i][keep]
        if not raw.any():
            continue
        cum = raw.cumsum()
        cmc = np.minimum(cum, 1)[:max_rank]
        cmc_sum += cmc
        hit_at = np.flatnonzero(raw)
        aps.append(float(np.mean(cum[hit_at] / (hit_at + 1.0))))
        inps.append(float(raw.sum() / (hit_at[-1] + 1.0)))
    n = len(aps)
    return {"rank1": float(cmc_sum[0] / n), "mAP": float(np.mean(aps)),
            "mINP": float(np.mean(inps)), "num_queries": n}


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_bytes() -> tuple[int, str]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"


def worker(method: str, nq: int, ng: int, dim: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    import torch

    from reidaug.eval.metrics import evaluate

    qf, gf, qp, gp, qc, gc = make_data(nq, ng, dim, seed)
    tmp = None
    if method == "disk":  # features to row files, out of memory before the measured call
        import gc as _gc
        import tempfile
        from pathlib import Path

        from reidaug.io.rowfile import RowFile, write_rows

        tmp = tempfile.TemporaryDirectory(prefix="reidaug-eval-")
        for name, a in (("q", qf), ("g", gf)):
            with write_rows(Path(tmp.name) / f"{name}.npy", a.shape) as w:
                w.append(a)
        qf, gf = RowFile.open(Path(tmp.name) / "q.npy"), RowFile.open(Path(tmp.name) / "g.npy")
        _gc.collect()
    reset = False
    try:  # reset the peak-RSS counter so it measures the evaluation call only
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        pass
    before = _rss_bytes()
    t0 = time.perf_counter()
    if method == "naive":
        res = naive_evaluate(qf, gf, qp, gp, qc, gc)
    else:
        m = evaluate(qf, gf, qp, gp, qc, gc, rerank=method == "rerank", device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        res = {"rank1": m.rank(1), "mAP": m.mAP, "mINP": m.mINP, "num_queries": m.num_queries}
    seconds = time.perf_counter() - t0
    peak, source = _peak_bytes()
    if tmp is not None:
        tmp.cleanup()
    return {"method": method, "num_query": nq, "num_gallery": ng, "dim": dim,
            "seconds": seconds, "rss_before_bytes": before, "peak_bytes": peak,
            "peak_delta_bytes": peak - before, "peak_source": source if reset else "ru_maxrss",
            "torch_threads": torch.get_num_threads(), "device": device if method != "naive" else "cpu",
            "metrics": res}


# ------------------------------------------------------------------------------ the driver


def run_one(method: str, nq: int, ng: int, dim: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", method, "--nq", str(nq), "--ng", str(ng),
           "--dim", str(dim), "--seed", str(seed), "--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"method": method, "num_query": nq, "num_gallery": ng, "failed": True,
                "returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[int, int]:
    q, g = text.lower().split("x")
    return int(q), int(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000x10000,5000x25000",
                    help="QxG sizes run with each of --methods (comma separated)")
    ap.add_argument("--big", default="20000x100000", help="QxG run blocked only ('none': skip)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "eval.json"))
    ap.add_argument("--rerank", default="none",
                    help="QxG run with k1=20, k2=6 re-ranking (e.g. 3368x15913, Market-sized)")
    ap.add_argument("--device", default="cpu", help="where evaluate() runs the blocked method: cpu | cuda")
    ap.add_argument("--methods", default="naive,blocked,disk", help="methods run at --sizes (comma separated)")
    ap.add_argument("--big-methods", default="blocked,disk", help="methods run at --big")
    ap.add_argument("--worker", choices=("naive", "blocked", "disk", "rerank"), help=argparse.SUPPRESS)
    ap.add_argument("--nq", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ng", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.nq, args.ng, args.dim, args.seed, args.device)))
        return

    runs = []
    plan = [(m, *parse_size(s)) for s in args.sizes.split(",") if s for m in args.methods.split(",")]
    if args.big.lower() != "none":
        plan += [(m, *parse_size(args.big)) for m in args.big_methods.split(",")]
    if args.rerank.lower() != "none":
        plan.append(("rerank", *parse_size(args.rerank)))
    load_start = load_average()
    for method, nq, ng in plan:
        print(f"running {method} {nq}x{ng} ...", file=sys.stderr, flush=True)
        runs.append(run_one(method, nq, ng, args.dim, args.seed, args.device))
    load_end = load_average()

    gib = 2.0**30
    print(f"\n{'method':<8} {'Q x G':>14} {'time s':>8} {'peak delta GiB':>15} {'peak GiB':>9} "
          f"{'rank1':>7} {'mAP':>7} {'mINP':>7}")
    for r in runs:
        size = f"{r['num_query']}x{r['num_gallery']}"
        if r.get("failed"):
            print(f"{r['method']:<8} {size:>14}   FAILED (rc {r['returncode']})")
            continue
        m = r["metrics"]
        print(f"{r['method']:<8} {size:>14} {r['seconds']:>8.1f} "
              f"{r['peak_delta_bytes'] / gib:>15.2f} {r['peak_bytes'] / gib:>9.2f} {m['rank1']:>7.4f} {m['mAP']:>7.4f} "
              f"{m['mINP']:>7.4f}")

    import torch

    write_result(args.out, {
        "benchmark": "eval",
        "date": now_utc(),
        "command": "python bench/eval.py " + " ".join(sys.argv[1:]),
        "machine": machine(numpy=np.__version__, torch=torch.__version__, load_average_at_start=load_start,
                           load_average_at_end=load_end, note="shared 2-core VM; other jobs may run at the same time"),
        "data": {"dim": args.dim, "dtype": "float32", "seed": args.seed,
                 "images_per_identity": 20, "cameras": 6, "protocol": "market"},
        "memory_measure": "peak RSS (VmHWM, reset via /proc/self/clear_refs) during the call "
                          "minus RSS just before it, one subprocess per run",
        "runs": runs,
    })


if __name__ == "__main__":
    main()
