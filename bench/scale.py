"""Scale study: wall time and peak memory per stage at 1k, 10k and 100k images (issue 16).

The chain a real dataset goes through, on synthetic people (``reidaug demo-data``: 2 cameras,
10 images per identity per camera, 128x64, half the identities train):

    ingest (market1501 folder) -> extract-pose (MoveNet Lightning int8) -> assign-labels
    -> export-hdf5 (train / query / gallery, raw 128x64) -> loader (one epoch of the train split)
    -> evaluate (features of query + gallery with a fixed EfficientNet-Lite0, CMC / mAP)

Every step runs in its own subprocess (``reidaug stage NAME`` for the pipeline stages, so an
upstream stage is cached and only the named one runs), timed by wall clock, its peak resident
memory read from ``os.wait4``'s ``ru_maxrss`` (the child alone, so steps cannot hide in each
other). Data generation is timed too but is not part of the chain. Per stage, the log-log slope
between consecutive sizes says whether time grows linearly (slope 1) and the ratio of peak memory
at the largest to the smallest size whether memory stays flat (chunked everywhere).

The model for ``evaluate`` is trained once (one epoch on the 1k set): evaluation cost does not
depend on what the model learned. The same workspace is reused, so a rerun only re-measures
stages whose cache entry is removed: pass ``--fresh`` to measure everything again.

    OMP_NUM_THREADS=2 .venv/bin/python bench/scale.py --sizes 1000,10000,100000 --work /tmp/scale
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, SHARED, add_run, command_line, cpu_model, load_average, machine

STAGES = ["ingest", "extract-pose", "assign-labels", "export-hdf5"]
ALL_STEPS = [*STAGES, "loader", "evaluate"]
MOVENET = SHARED / "models" / "movenet_singlepose_lightning_int8.tflite"
CAMS, PER_CAM = 2, 10


def replicate(base: Path, copies: int, ids: int, out: Path) -> None:
    """``copies`` x the Market-layout set ``base`` (``ids`` identities) as hard links, copy k's
    identities renumbered by ``k * ids``: a set ``copies`` times larger in a second, whose per-image
    costs are those of new images (every stage decodes, detects and writes each one; nothing dedupes)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (tmp / sub).mkdir(parents=True)
        for f in (base / sub).iterdir():
            pid, rest = f.name.split("_", 1)
            for k in range(copies):
                os.link(f, tmp / sub / f"{int(pid) + k * ids:04d}_{rest}")
    (tmp / "REPLICATED").write_text(f"{copies} x {base.name}, identities renumbered by {ids}\n")
    tmp.rename(out)


def reidaug() -> str:
    return str(Path(sys.executable).with_name("reidaug"))


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd``; its wall seconds and peak RSS (MiB, the child's own ``ru_maxrss``)."""
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def prepare_data(work: Path, n: int, ids: int, base_size: int, log: Path) -> dict[str, Any]:
    """``work/data-N``: kept if there, the ``base_size`` render replicated for its multiples, else rendered."""
    data, base = work / f"data-{n}", work / f"data-{base_size}"
    if (data / "meta.json").is_file() or (data / "REPLICATED").is_file():
        return {"seconds": None, "peak_rss_mib": None, "cached": True}
    if n > base_size and n % base_size == 0 and (base / "meta.json").is_file():
        t0 = time.perf_counter()
        replicate(base, n // base_size, base_size // (CAMS * PER_CAM), data)
        return {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mib": None,
                "replicated": f"{n // base_size} x data-{base_size}"}
    shutil.rmtree(data, ignore_errors=True)  # a killed render's leftovers
    return run_measured([reidaug(), "demo-data", str(data), "--num-ids", str(ids), "--num-cams", str(CAMS),
                         "--images-per-id-per-cam", str(PER_CAM), "--seed", "0"], log)


def pipeline_yaml(data: Path, export: Path) -> str:
    return f"""\
name: scale
execution: {{scheduler: threads, workers: 2}}
stages:
  ingest:
    params: {{format: market1501, root: {data}, chunk_size: 512}}
  extract-pose:
    params: {{backend: movenet, model_path: {MOVENET}}}
    inputs: {{dataset: ingest.dataset}}
  assign-labels:
    params: {{schemes: {{real: onehot}}}}
    inputs: {{dataset: ingest.dataset}}
  export-hdf5:
    params: {{encoding: raw, image_height: 128, image_width: 64, output: {export}}}
    inputs: {{dataset: ingest.dataset, keypoints: extract-pose.keypoints, labels: assign-labels.labels}}
"""


def loader_epoch(h5: str) -> None:
    """One epoch of the train split through the trainer's reader (batched reads + reid_collate)."""
    import torch
    from torch.utils.data import DataLoader

    from reidaug.data.torchdata import ReidH5Dataset, build_transforms, normalize_batch, reid_collate

    ds = ReidH5Dataset(h5, "train", transform=build_transforms(128, 64, train=True, normalize=False))
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=0, collate_fn=reid_collate,
                        generator=torch.Generator().manual_seed(0))
    n = sum(int(normalize_batch(b["img"]).shape[0]) for b in loader)  # the trainer's uint8 path
    if n != len(ds):
        raise SystemExit(f"loader gave {n} images, the train split has {len(ds)}")
    print(f"loader: {n} images")


def stage_seconds(ws: Path, stage: str) -> float:
    """The stage's own time (plan + chunks + finalize, from its cache entry's meta.json): the process
    start-up (Python, torch imports: ~1.5 s) is in ``seconds`` but not here."""
    metas = list((ws / "cache" / stage).glob("*/*/meta.json"))
    if len(metas) != 1:
        raise SystemExit(f"expected one cache entry of {stage} in {ws}, found {len(metas)}")
    t = json.loads(metas[0].read_text()).get("timings", {})
    return round(sum(float(t.get(k, 0.0)) for k in ("plan_s", "chunks_wall_s", "finalize_s")), 2)


def slope(xs: list[int], ys: list[float]) -> list[float]:
    return [round(math.log(ys[i + 1] / ys[i]) / math.log(xs[i + 1] / xs[i]), 2)
            for i in range(len(xs) - 1) if ys[i] > 0 and ys[i + 1] > 0]


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["sizes"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for step, rows in result["steps"].items():
        if step == "generate-data":  # not part of the chain
            continue
        ax_t.loglog(sizes, [r["seconds"] for r in rows], "o-", label=step)
        ax_m.semilogx(sizes, [r["peak_rss_mib"] for r in rows], "o-", label=step)
    lo, hi = sizes[0], sizes[-1]
    ax_t.loglog([lo, hi], [1, hi / lo], "k--", lw=0.8, label="slope 1 (linear)")
    ax_t.set(xlabel="images", ylabel="wall seconds", title="time per step")
    ax_m.set(xlabel="images", ylabel="peak RSS (MiB)", title="peak memory per step")
    ax_m.set_ylim(bottom=0)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"reidaug scale study ({result['machine'].get('cpu', 'CPU')}, {result['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="total images per dataset (comma-separated)")
    ap.add_argument("--work", default="/tmp/reidaug-scale", help="data, workspaces and exports go here")
    ap.add_argument("--base", type=int, default=10000, help=(
        "larger sizes that are multiples of this are this set replicated (hard links, identities renumbered): "
        "rendering 100k synthetic people takes ~20 CPU minutes and measures nothing"))
    ap.add_argument("--keep", action="store_true", help="keep cached stages (default: measure every stage afresh)")
    ap.add_argument("--steps", default=",".join(ALL_STEPS), help=(
        "steps to measure (comma-separated, of " + ", ".join(ALL_STEPS) + "); loader and evaluate alone reuse "
        "the exports an earlier full run left in --work"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "images" / "scale.png"))
    ap.add_argument("--loader-epoch", help=argparse.SUPPRESS)  # internal: the loader step's subprocess
    args = ap.parse_args(argv)
    if args.loader_epoch:
        loader_epoch(args.loader_epoch)
        return 0
    if not MOVENET.is_file():
        raise SystemExit(f"MoveNet model not found at {MOVENET} (../shared/models, see ../shared/README.md)")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    load_avg = load_average()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "scale.log"
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(ALL_STEPS))
    if unknown:
        raise SystemExit(f"--steps: unknown {', '.join(unknown)}; known: {', '.join(ALL_STEPS)}")
    stages = [s for s in STAGES if s in wanted]
    steps: dict[str, list[dict[str, Any]]] = {s: [] for s in ["generate-data", *ALL_STEPS]
                                              if s in wanted or (s == "generate-data" and stages)}
    model = work / "model"
    for n in sizes:
        ids = max(2, n // (CAMS * PER_CAM))
        data, ws, export = work / f"data-{n}", work / f"ws-{n}", work / f"scale-{n}.h5"
        if not stages:  # loader / evaluate alone: on the export of an earlier full run
            if not export.is_file():
                raise SystemExit(f"{export} is missing: run the full chain first (without --steps)")
            shutil.rmtree(work / f"eval-{n}", ignore_errors=True)
        elif not args.keep:  # a cached stage would be measured as its cache lookup
            for p in (ws, export, work / f"eval-{n}"):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        if stages:
            steps["generate-data"].append({"images": ids * CAMS * PER_CAM,
                                           **prepare_data(work, n, ids, args.base, log)})
        cfg = work / f"scale-{n}.yaml"
        cfg.write_text(pipeline_yaml(data, export))
        for stage in stages:
            r = run_measured([reidaug(), "-q", "stage", stage, "-c", str(cfg), "-w", str(ws)], log)
            r["stage_seconds"] = stage_seconds(ws, stage)
            steps[stage].append(r)
            print(f"{n:>7} {stage:<14} {r['seconds']:>8.1f} s {r['peak_rss_mib']:>8.0f} MiB", flush=True)
        if "loader" in steps:
            r = run_measured([sys.executable, __file__, "--loader-epoch", str(export)], log)
            steps["loader"].append(r)
            print(f"{n:>7} {'loader':<14} {r['seconds']:>8.1f} s {r['peak_rss_mib']:>8.0f} MiB", flush=True)
        if "evaluate" not in steps:
            continue
        if not (model / "model.pt").is_file():  # the evaluated model: one epoch on the smallest set (not timed)
            run_measured([reidaug(), "train", str(export), "-o", str(model), "--height", "128", "--width", "64",
                          "--epochs", "1", "--set", "warmup_epochs=0"], log)
        r = run_measured([reidaug(), "evaluate", str(model), "--data", str(export), "-o", str(work / f"eval-{n}"),
                          "--device", "cpu"], log)
        steps["evaluate"].append(r)
        print(f"{n:>7} {'evaluate':<14} {r['seconds']:>8.1f} s {r['peak_rss_mib']:>8.0f} MiB", flush=True)
    result = {
        "benchmark": "scale", "sizes": sizes, "steps": steps, "machine": machine(cpu=cpu_model()),
        "command": command_line(), "load_before": load_avg, "load_after": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "time_slope": {s: slope(sizes, [r["seconds"] for r in rows]) for s, rows in steps.items()
                       if s != "generate-data"},
        "stage_time_slope": {s: slope(sizes, [r["stage_seconds"] for r in rows]) for s, rows in steps.items()
                             if rows and "stage_seconds" in rows[0]},
        "memory_ratio_largest_to_smallest": {s: round(rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 2)
                                             for s, rows in steps.items()
                                             if rows and rows[0]["peak_rss_mib"] and rows[-1]["peak_rss_mib"]},
    }
    label = f"{'/'.join(str(s) for s in sizes)} images" + ("" if wanted == ALL_STEPS else f", {'+'.join(wanted)}")
    add_run(args.out, "scale", label, result)
    if wanted != ALL_STEPS:  # the plot shows the whole chain: the full run of these sizes, these steps replaced
        full = json.loads(Path(args.out).read_text())["runs"].get(f"{'/'.join(str(s) for s in sizes)} images")
        if full is not None:
            plot({**result, "steps": {**full["steps"], **steps}}, Path(args.plot))
    else:
        plot(result, Path(args.plot))
    print("time slope (log-log, per size step):", result["time_slope"])
    print("stage's own time slope:", result["stage_time_slope"])
    print("peak memory, largest / smallest size:", result["memory_ratio_largest_to_smallest"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
