"""CPU thread budget on a real stage: chunks at once x torch threads per chunk (issue 16).

The stage: ``generate-camstyle-id`` of the CUHK01 campaign (``configs/ablations/cuhk01_campaign.yaml``:
the trained identity-preserving 128x64 CycleGAN renders the 1,940 train images in the other camera's style, 8 chunks),
run by the pipeline's own runner (threads scheduler) in a scratch workspace that hard-links the
campaign's cached ``ingest`` and ``train-camstyle-id`` entries, so only the measured stage runs.

Rows (chunks at once x torch threads per chunk; ``threads`` is part of the key, so rows with other
thread counts are other cache entries, each recomputed with ``--force``):
- ``1x2``: one chunk at a time on 2 threads;
- ``2x1``: two chunks at a time on 1 thread each;
- ``2x2 (runner)``: ``--workers 2`` with ``threads: 2``, as a user would ask: the runner's cap
  (``pipeline.runner.concurrent_chunks``: at most cores // threads torch chunks at once) runs one;
- ``2x2 uncapped``: the same with the cap switched off in this process (the oversubscription the
  cap prevents: 4 OpenMP threads on 2 cores).
Every round runs each row once, in a rotated order, so a busy neighbour slows all rows alike.
Reported: the median seconds per row and its ratio to ``1x2``.

    OMP_NUM_THREADS=2 .venv/bin/python bench/threads.py --workspace ../runs/cuhk01/workspace/cuhk01-campaign
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, add_run, command_line, cpu_model, load_average, machine

STAGE = "generate-camstyle-id"
ROWS = [("1x2", 1, 2, True), ("2x1", 2, 1, True), ("2x2 (runner)", 2, 2, True), ("2x2 uncapped", 2, 2, False)]


def scratch_workspace(campaign: Path, graph, into: Path) -> None:
    """Hard-link the cache entries of the measured stage's upstream into ``into`` (nothing is copied)."""
    for name in graph.closure([STAGE]):
        if name == STAGE:
            continue
        key, kind = graph.keys[name], graph.nodes[name].spec.name  # the cache is by stage kind, then key
        src = campaign / "cache" / kind / key[:2] / key
        if not (src / "meta.json").is_file():
            raise SystemExit(f"{name} ({key[:12]}) is not cached in {campaign}: run the campaign's {name} first "
                             f"(reidaug stage {name} -c {graph.loaded.path} -w {campaign})")
        dst = into / "cache" / kind / key[:2] / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, copy_function=os.link)


def run_row(config: Path, ws: Path, workers: int, threads: int, cap: bool) -> float:
    from reidaug.pipeline import runner
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    graph = build_graph(load_pipeline(config, overrides=[f"stages.{STAGE}.params.threads={threads}"]), STAGES)
    capped = runner.concurrent_chunks
    if not cap:
        runner.concurrent_chunks = lambda workers, ctx: workers  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        runner.run_pipeline(graph, ws, targets=[STAGE],
                            options=runner.RunOptions(workers=workers, force=frozenset({STAGE}), progress=False))
        return time.perf_counter() - t0
    finally:
        runner.concurrent_chunks = capped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "ablations" / "cuhk01_campaign.yaml"))
    ap.add_argument("--workspace", required=True, help="the campaign's workspace (its ingest and train-camstyle)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "threads.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    config = Path(args.config).resolve()
    graph = build_graph(load_pipeline(config), STAGES)
    load_before = load_average()
    times: dict[str, list[float]] = {r[0]: [] for r in ROWS}
    with tempfile.TemporaryDirectory(prefix="reidaug-threads-") as tmp:
        ws = Path(tmp)
        scratch_workspace(Path(args.workspace).resolve(), graph, ws)
        for rnd in range(args.rounds):
            order = ROWS[rnd % len(ROWS):] + ROWS[:rnd % len(ROWS)]
            for name, workers, threads, cap in order:
                s = run_row(config, ws, workers, threads, cap)
                times[name].append(round(s, 2))
                print(f"round {rnd}: {name:<14} {s:7.1f} s", flush=True)
    base = statistics.median(times["1x2"])
    rows = {name: {"seconds": t, "median_s": statistics.median(t), "vs_1x2": round(statistics.median(t) / base, 2)}
            for name, t in times.items()}
    for name, r in rows.items():
        print(f"{name:<14} median {r['median_s']:7.1f} s   {r['vs_1x2']:5.2f}x the time of 1x2")
    add_run(args.out, "threads", time.strftime("%Y-%m-%d"), {
        "stage": STAGE, "config": str(config.relative_to(ROOT)), "rows": rows, "rounds": args.rounds,
        "command": command_line(), "machine": machine(cpu=cpu_model()), "load_before": load_before,
        "load_after": load_average(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
