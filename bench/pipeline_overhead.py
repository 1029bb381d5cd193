"""Pipeline overhead, side by side in one run (issue: foundation).

(a) Wall time of re-running a fully cached 6-stage pipeline with 100 chunks per stage through
    the CLI, interpreter start included (goal <= 1.5 s), beside `reidaug --version` (the floor
    of any CLI call) and a `--dry-run` of the same pipeline.
(b) Runner overhead per chunk: the same 100 chunk computations through the runner (dask
    threads, 1 and 2 workers, progress off) against a plain loop calling the chunk function
    directly (goal <= 5 ms/chunk).

    python bench/pipeline_overhead.py [--repeat 5] [--out bench/results/pipeline_overhead.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import write_result
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import StageContext
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES, selftest

CHUNKS = 100


def six_stage_yaml(folder: Path) -> Path:
    maps = "".join(
        f"  map{i}:\n    uses: selftest-map\n    params: {{scale: {i}.0}}\n    inputs: {{source: {prev}.chunks}}\n"
        for i, prev in zip(range(1, 6), ["selftest-source", "map1", "map2", "map3", "map4"])
    )
    text = textwrap.dedent(f"""\
        name: overhead
        execution: {{scheduler: threads, workers: 2}}
        stages:
          selftest-source:
            params: {{num_items: {CHUNKS * 10}, chunk_size: 10}}
        """) + maps
    path = folder / "overhead.yaml"
    path.write_text(text)
    return path


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="bench/results/pipeline_overhead.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="reidaug-bench-"))
    try:
        pipe = six_stage_yaml(tmp)
        ws = tmp / "ws"
        cli = [sys.executable, "-m", "reidaug.cli"]
        cold = timed([*cli, "run", str(pipe), "-w", str(ws)], tmp)
        version = [timed([*cli, "--version"], tmp) for _ in range(args.repeat)]
        cached = [timed([*cli, "run", str(pipe), "-w", str(ws)], tmp) for _ in range(args.repeat)]
        dry = [timed([*cli, "run", str(pipe), "-w", str(ws), "--dry-run"], tmp) for _ in range(args.repeat)]

        # (b) per-chunk overhead on the source stage (100 chunks)
        graph = build_graph(load_pipeline(pipe), STAGES)
        node = graph.nodes["selftest-source"]
        direct = []
        for _ in range(args.repeat):
            work = tmp / f"direct-{len(direct)}"
            ctx = StageContext("selftest-source", "selftest-source", graph.keys["selftest-source"], node.params, {},
                               work, graph.base_dir, CHUNKS)
            t0 = time.perf_counter()
            for i in range(CHUNKS):
                selftest.source_chunk(ctx, i)
            direct.append(time.perf_counter() - t0)
        through = {}
        for workers in (1, 2):
            runs = []
            for r in range(args.repeat):
                wsr = tmp / f"runner-{workers}-{r}"
                t0 = time.perf_counter()
                run_pipeline(graph, wsr, ["selftest-source"], RunOptions(scheduler="threads", workers=workers,
                                                                         progress=False))
                runs.append(time.perf_counter() - t0)
            through[workers] = runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    per_chunk = {w: (med(t) - med(direct)) / CHUNKS * 1000 for w, t in through.items()}
    result = {
        "date": dt.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python bench/pipeline_overhead.py " + " ".join(sys.argv[1:]),
        "pipeline": f"6 stages x {CHUNKS} chunks (selftest-source + 5 selftest-map), dask threads",
        "cold_run_s": round(cold, 3),
        "cli_version_s_median": round(med(version), 3),
        "cached_rerun_s_median": round(med(cached), 3),
        "cached_rerun_s_all": [round(x, 3) for x in cached],
        "dry_run_s_median": round(med(dry), 3),
        "direct_loop_s_median": round(med(direct), 4),
        "runner_s_median": {f"{w}_workers": round(med(t), 4) for w, t in through.items()},
        "overhead_ms_per_chunk": {f"{w}_workers": round(v, 2) for w, v in per_chunk.items()},
        "goals": {"cached_rerun_s": 1.5, "overhead_ms_per_chunk": 5.0},
    }
    rows = [
        ("(a) cached 6x100 re-run via CLI", f"{result['cached_rerun_s_median']:.3f} s", "<= 1.5 s"),
        ("    `reidaug --version` (floor)", f"{result['cli_version_s_median']:.3f} s", ""),
        ("    --dry-run of the same", f"{result['dry_run_s_median']:.3f} s", ""),
        ("    first (cold) run, 600 chunks", f"{cold:.2f} s", ""),
        ("(b) 100 chunks, direct loop", f"{med(direct) * 1000:.1f} ms", ""),
        *[(f"    100 chunks, runner, {w} worker(s)", f"{med(t) * 1000:.1f} ms",
           f"{per_chunk[w]:+.2f} ms/chunk (<= 5)") for w, t in through.items()],
    ]
    width = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
