"""Loader benchmark: reidaug HDF5 reader vs loose image files, side by side in one run.

On CUHK01 (3,884 PNG crops, 60x160), compares DataLoader throughput (samples/s) of
- ``loose``: torchreid's way, ``Image.open(path).convert("RGB")`` + torchvision PIL transforms;
- ``h5-<encoding>``: :class:`reidaug.data.torchdata.ReidH5Dataset` on files written by
  :class:`reidaug.data.h5format.H5Writer` in each encoding, same transforms on uint8 tensors;
- ``h5-raw+batchnorm``: raw HDF5, workers return uint8 and the batch is normalised in the
  training loop (as one does on the GPU); the normalisation time is counted.
Same transforms everywhere: resize to 256x128, random horizontal flip, ImageNet normalise.
Also records file sizes, write times and a single-process profile (read/decode, transforms,
collation) per loader. Prints a table and writes JSON (default bench/results/loader.json).

    .venv/bin/python bench/loader.py --epochs 3 --workers 2 --batch-size 64
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from reidaug.data.h5format import H5Writer
from reidaug.data.torchdata import IMAGENET_MEAN, IMAGENET_STD, ReidH5Dataset, normalize_batch

ROOT = Path(__file__).resolve().parents[1]
H, W = 256, 128


class LooseFiles(Dataset):
    """torchreid's ImageDataset: open each file with PIL, convert to RGB, PIL transforms."""

    def __init__(self, paths: list[str], labels: list[int], transform: Callable) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = Image.open(self.paths[i]).convert("RGB")
        return {"img": self.transform(img), "target": self.labels[i], "index": i}


def pil_transforms() -> Callable:
    import torchvision.transforms as T

    return T.Compose([T.Resize((H, W)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def tensor_transforms(normalize: bool = True) -> Callable:
    from torchvision.transforms import v2

    from reidaug.data.torchdata import Normalize255, ResizeIfNeeded

    steps: list[Any] = [ResizeIfNeeded((H, W)), v2.RandomHorizontalFlip()]
    if normalize:
        steps.append(Normalize255())
    return v2.Compose(steps)


def read_rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def write_h5(out: Path, records: list[tuple[str, int, int]], encoding: str, compression: str) -> float:
    """Write all CUHK01 images as the train split; returns seconds."""
    labels = {p: i for i, p in enumerate(sorted({pid for _, pid, _ in records}))}
    t0 = time.perf_counter()
    with H5Writer(out, encoding=encoding, compression=compression,
                  image_size=(H, W) if encoding == "raw" else None) as w:
        for s in range(0, len(records), 256):
            batch = records[s : s + 256]
            w.append("train", images=[read_rgb(p) for p, _, _ in batch],
                     pid=[pid for _, pid, _ in batch], camid=[c for _, _, c in batch],
                     label=[labels[pid] for _, pid, _ in batch],
                     path=[os.path.basename(p) for p, _, _ in batch])
    return time.perf_counter() - t0


def make_loader(ds: Dataset, workers: int, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      generator=g, persistent_workers=False, drop_last=False)


def run_epoch(loader: DataLoader, batch_norm: bool) -> float:
    """samples/s of one epoch (a fresh iterator, so worker start-up is included, as in training)."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        img = batch["img"]
        if batch_norm:
            img = normalize_batch(img)
        n += img.shape[0]
    return n / (time.perf_counter() - t0)


def profile(ds: Dataset, get_raw: Callable[[int], Any], transform: Callable, n: int, batch: int) -> dict[str, float]:
    """Single-process microseconds per image: read+decode, transforms, collation."""
    idx = np.random.default_rng(0).permutation(len(ds))[:n]
    t0 = time.perf_counter()
    raws = [get_raw(int(i)) for i in idx]
    t1 = time.perf_counter()
    outs = [transform(r) for r in raws]
    t2 = time.perf_counter()
    for s in range(0, n, batch):
        default_collate([{"img": o} for o in outs[s : s + batch]])
    t3 = time.perf_counter()
    return {"read_decode_us": (t1 - t0) / n * 1e6, "transforms_us": (t2 - t1) / n * 1e6,
            "collate_us": (t3 - t2) / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cuhk01"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile-images", type=int, default=500)
    ap.add_argument("--workdir", default=None, help="where to write the HDF5 files (default: a temp dir, removed)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    args = ap.parse_args(argv)

    data = Path(args.data)
    with open(data / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = [(str(data / r["path"]), int(r["pid"]), int(r["camid"]) - 1) for r in rows]
    loose_bytes = sum((data / r["path"]).stat().st_size for r in rows)
    labels = {p: i for i, p in enumerate(sorted({pid for _, pid, _ in records}))}
    torch.set_num_threads(1)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="reidaug-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    variants = [("raw", "none"), ("raw", "lzf"), ("raw", "gzip-4"), ("jpeg", "none"), ("png", "none")]
    files: dict[str, dict[str, Any]] = {}
    try:
        for enc, comp in variants:
            name = enc if comp == "none" else f"{enc}-{comp}"
            path = work / f"cuhk01-{name}.h5"
            secs = write_h5(path, records, enc, comp)
            files[name] = {"path": path, "bytes": path.stat().st_size, "write_s": secs}
            print(f"wrote {name}: {path.stat().st_size / 1e6:.1f} MB in {secs:.1f} s", flush=True)

        pil_t = pil_transforms()
        loaders: list[tuple[str, Dataset, bool, dict[str, float]]] = []
        loose = LooseFiles([p for p, _, _ in records], [labels[pid] for _, pid, _ in records], pil_t)
        prof = profile(loose, lambda i: Image.open(records[i][0]).convert("RGB"), pil_t,
                       args.profile_images, args.batch_size)
        loaders.append(("loose (PIL)", loose, False, prof))
        for name, info in files.items():
            t = tensor_transforms()
            ds = ReidH5Dataset(info["path"], "train", transform=t)
            ds._h5()  # open in this process for the profile; workers open their own
            prof = profile(ds, lambda i, ds=ds: torch.from_numpy(ds._h5().read_image("train", i)).permute(2, 0, 1),
                           t, args.profile_images, args.batch_size)
            ds._file.close()
            ds._file = None
            loaders.append((f"h5-{name}", ds, False, prof))
        ds = ReidH5Dataset(files["raw"]["path"], "train", transform=tensor_transforms(normalize=False))
        loaders.append(("h5-raw+batchnorm", ds, True, {}))

        # Round-robin: epoch e of every loader runs before epoch e+1 of any, so a busy neighbour
        # on a shared machine slows all loaders alike instead of one.
        dls = [make_loader(ds, args.workers, args.batch_size, args.seed) for _, ds, _, _ in loaders]
        rates: list[list[float]] = [[] for _ in loaders]
        for epoch in range(args.epochs):
            for j, (name, _, bn, _) in enumerate(loaders):
                rates[j].append(run_epoch(dls[j], bn))
            print(f"epoch {epoch}: " + ", ".join(f"{n} {r[-1]:.0f}" for (n, *_), r in zip(loaders, rates)), flush=True)
        results = []
        for (name, ds, bn, prof), r in zip(loaders, rates):
            size = loose_bytes if name.startswith("loose") else files[name[3:].split("+")[0]]["bytes"]
            later = r[1:] if len(r) > 1 else r
            results.append({"loader": name, "first_epoch_samples_per_s": r[0],
                            "later_epochs_samples_per_s": float(np.median(later)),
                            "epochs_samples_per_s": r, "bytes": size, "profile_us_per_image": prof})
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    base = results[0]["later_epochs_samples_per_s"]
    base_first = results[0]["first_epoch_samples_per_s"]
    hdr = f"{'loader':18s} {'size MB':>8s} {'epoch1 img/s':>13s} {'later img/s':>12s} {'speedup':>8s}  read/decode  transforms  collate (us/img, 1 process)"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        r["speedup_vs_loose"] = r["later_epochs_samples_per_s"] / base
        r["first_epoch_speedup_vs_loose"] = r["first_epoch_samples_per_s"] / base_first
        p = r["profile_us_per_image"]
        prof_s = (f"{p['read_decode_us']:11.0f} {p['transforms_us']:11.0f} {p['collate_us']:8.0f}" if p else "")
        print(f"{r['loader']:18s} {r['bytes'] / 1e6:8.1f} {r['first_epoch_samples_per_s']:13.0f} "
              f"{r['later_epochs_samples_per_s']:12.0f} {r['speedup_vs_loose']:7.2f}x  {prof_s}")
    out = {
        "benchmark": "loader",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "data": {"name": "CUHK01", "images": len(records), "native_hw": [160, 60],
                 "loose_bytes": loose_bytes},
        "settings": {"epochs": args.epochs, "workers": args.workers, "batch_size": args.batch_size,
                     "transforms": "resize 256x128, random horizontal flip, ImageNet normalise",
                     "later_epochs": "median of epochs 2..N", "order": "round-robin over loaders per epoch",
                     "note": "page cache not dropped: epoch 1 of each loader reads from a warm cache too "
                             "except for the very first reads"},
        "files": {k: {"bytes": v["bytes"], "write_s": v["write_s"]} for k, v in files.items()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_name(f".{Path(args.out).name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
