"""Re-ID trainer throughput: training images per second of the campaign's recipe on a device (issue 16).

The recipe of the efficacy campaign (EfficientNet-Lite0, BN-neck, LSR 0.1, random erasing, flip + pad-crop,
random batches of 64, Adam), on a rendered file of synthetic people (``reidaug.data.synthetic``: images do
not change the cost of a step, and CUHK01 does not travel to a lent GPU) at 128x64 (the CPU campaign) and
256x128 (the papers'). Random initialisation (``pretrained: none``): the weights' values do not change a
step's cost and no weights file has to travel. Each size trains ``--epochs`` epochs; the first epoch is
the warm-up (cuDNN autotuning, allocator, DataLoader start) and the rate is taken over the rest, from the
per-step ``images_per_s`` of ``train_log.jsonl`` (``log_every`` 1).

    OMP_NUM_THREADS=2 .venv/bin/python bench/train_speed.py --device cpu --sizes 128x64
    python3 bench/train_speed.py --device cuda --sizes 128x64,256x128 --amp   # bench/gpu/run_all.sh
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import ROOT, add_run, command_line, cpu_model, load_average, machine


def write_data(path: Path, height: int, width: int, num_ids: int, per_cam: int) -> int:
    """A train split of rendered people (2 cameras) and a one-image query/gallery; returns the image count."""
    from reidaug.data import synthetic as S
    from reidaug.data.h5format import H5Writer

    imgs, pids, cams = [], [], []
    for pid in range(num_ids):
        app = S.identity_appearance(pid, 0)
        for cam in range(2):
            style = S.camera_style(cam, 0)
            for i in range(per_cam):
                pose = S.sample_pose(S.pose_rng(0, pid, cam, i), height, width)
                img, _ = S.render(app, pose, style, height, width, S.image_rng(0, pid, cam, i, cam))
                imgs.append(img)
                pids.append(pid)
                cams.append(cam)
    x, p, c = np.stack(imgs), np.array(pids), np.array(cams)
    with H5Writer(path, image_size=(height, width), attrs={"pipeline_key": "bench-train-speed"}) as w:
        w.append("train", images=x, pid=p, camid=c, label=p)
        w.append("query", images=x[:1], pid=p[:1], camid=c[:1])
        w.append("gallery", images=x[1:2], pid=p[1:2], camid=c[1:2])
    return len(x)


def measure(data: Path, run: Path, height: int, width: int, device: str, epochs: int, workers: int,
            amp: bool) -> dict[str, Any]:
    from reidaug.train.config import TrainConfig
    from reidaug.train.trainer import train

    cfg = TrainConfig(backbone="efficientnet_lite0", pretrained="none", head="bnneck", loss="ide", height=height,
                      width=width, train_batch_size=64, epochs=epochs, warmup_epochs=0, device=device, amp=amp,
                      num_workers=workers, log_every=1, checkpoint_every=10**6, seed=0)
    t0 = time.perf_counter()
    result = train(cfg, data, run)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    steps_per_epoch = result.steps // epochs
    rates = [r["images_per_s"] for r in rows if r.get("images_per_s") and r["step"] > steps_per_epoch]
    return {"size": f"{height}x{width}", "device": result.device, "amp": amp, "steps": result.steps,
            "steps_per_epoch": steps_per_epoch, "batch": 64, "wall_s": round(wall, 2),
            "images_per_s_median": round(statistics.median(rates), 1) if rates else None,
            "steps_per_s_median": round(statistics.median(rates) / 64, 3) if rates else None,
            "images_per_s_whole_run": round(result.images_per_s, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--sizes", default="128x64", help="HxW, comma-separated")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per size; the first is the warm-up")
    ap.add_argument("--ids", type=int, default=64, help="identities (x 2 cameras x --per-cam images)")
    ap.add_argument("--per-cam", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed.json"))
    args = ap.parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch is the warm-up, the rate is the rest")
    rows = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="reidaug-train-speed-") as tmp:
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.lower().split("x"))
            data = Path(tmp) / f"data-{h}x{w}.h5"
            n = write_data(data, h, w, args.ids, args.per_cam)
            r = measure(data, Path(tmp) / f"run-{h}x{w}", h, w, args.device, args.epochs, args.workers, args.amp)
            r["train_images"] = n
            rows.append(r)
            print(f"{r['size']:>8} {r['device']:<5} amp={int(args.amp)}  {r['images_per_s_median']} images/s "
                  f"({r['steps_per_s_median']} steps/s of 64; whole run {r['images_per_s_whole_run']})", flush=True)
    result = {"benchmark": "train_speed", "rows": rows, "command": command_line(),
              "machine": machine(cpu=cpu_model()), "load_before": load_before, "load_after": load_average(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    add_run(args.out, "train_speed", f"{args.device}{' amp' if args.amp else ''} {args.sizes}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
