"""Loader benchmark: reidaug HDF5 reader vs loose image files, side by side in one run.

On CUHK01 (3,884 PNG crops, 60x160), compares DataLoader throughput (samples/s, one epoch per
fresh iterator so worker start-up counts, as in training) of
- ``loose (PIL)``: torchreid's way, ``Image.open(path).convert("RGB")`` + torchvision PIL
  transforms, default collate (the baseline);
- ``h5-<enc> per-sample``: :class:`reidaug.data.torchdata.ReidH5Dataset` read one item at a
  time (the DataLoader's fallback without ``__getitems__``), torchvision v2 tensor transforms,
  default collate: the reader as it was before batched reads;
- ``h5-<enc> batched``: ``ReidH5Dataset.__getitems__`` (a whole batch read in file order,
  :class:`ReidTransforms` on the batch, built in shared memory) + ``collate_fn=reid_collate``;
  ``... default-collate`` is the same without ``reid_collate`` (what a user who forgets it gets);
- ``... uint8+consumer-norm``: transforms with ``normalize=False``; the training loop calls
  ``normalize_batch`` (1 CPU thread here; on a GPU in training) and that time is counted.
Same transforms everywhere: resize to 256x128 (raw files store 256x128 already), random
horizontal flip (per sample), ImageNet normalise to float32.

Rounds: after one warm-up round (reported, not in the medians), every round runs one epoch of
each loader in a fresh random order, so a busy neighbour on a shared machine slows all loaders
alike. Reported per loader: median and min-max samples/s over rounds, and the speed-up as the
median (min-max) of per-round ratios to the loose loader of the same round. Also file sizes,
write times and a single-process profile (read/decode, transforms, collation, us per image).
Prints a table and writes JSON (default bench/results/loader.json).

    .venv/bin/python bench/loader.py --rounds 8 --workers 2 --batch-size 64
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from common import RESULTS, SHARED, command_line, load_average, machine, now_utc, write_result
from reidaug.data.h5format import H5Writer
from reidaug.data.torchdata import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ReidH5Dataset,
    build_transforms,
    normalize_batch,
    reid_collate,
)

H, W = 256, 128
ENCODINGS = {"raw": ("raw", "none"), "raw-lzf": ("raw", "lzf"), "raw-gzip-4": ("raw", "gzip-4"),
             "jpeg": ("jpeg", "none"), "png": ("png", "none")}


class LooseFiles(Dataset):
    """torchreid's ImageDataset: open each file with PIL, convert to RGB, PIL transforms."""

    def __init__(self, paths: list[str], labels: list[int], transform: Callable) -> None:
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = Image.open(self.paths[i]).convert("RGB")
        return {"img": self.transform(img), "target": self.labels[i], "index": i}


class PerSample(Dataset):
    """Hides ``__getitems__``: the DataLoader then calls ``__getitem__`` once per sample."""

    def __init__(self, ds: ReidH5Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[i]


def pil_transforms() -> Callable:
    import torchvision.transforms as T

    return T.Compose([T.Resize((H, W)), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def v2_transforms(normalize: bool = True) -> Callable:
    """The per-sample tensor transforms the reader used before ReidTransforms (torchvision v2)."""
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


@dataclass
class Loader:
    name: str
    dataset: Dataset
    collate: Callable | None  # None: DataLoader's default_collate
    consumer_norm: bool  # the training loop normalises the uint8 batch
    path: str  # "loose", "per-sample" or "batched"
    bytes: int
    profile: dict[str, float] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)


def make_loader(ld: Loader, workers: int, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    kw: dict[str, Any] = {} if ld.collate is None else {"collate_fn": ld.collate}
    return DataLoader(ld.dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      generator=g, persistent_workers=False, drop_last=False, **kw)


def run_epoch(loader: DataLoader, consumer_norm: bool) -> float:
    """samples/s of one epoch (a fresh iterator, so worker start-up is included, as in training)."""
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        img = batch["img"]
        if consumer_norm:
            img = normalize_batch(img)
        if img.dtype != torch.float32 or img.shape[1:] != (3, H, W):
            raise RuntimeError(f"loader gave {img.dtype} {tuple(img.shape)}, not float32 (B, 3, {H}, {W})")
        n += img.shape[0]
    return n / (time.perf_counter() - t0)


def profile_per_sample(get_raw: Callable[[int], Any], transform: Callable, size: int, n: int,
                       batch: int) -> dict[str, float]:
    """Single-process microseconds per image: read+decode, transforms, collation."""
    idx = np.random.default_rng(0).permutation(size)[:n]
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


def profile_batched(ds: ReidH5Dataset, n: int, batch: int) -> dict[str, float]:
    """Single-process microseconds per image of the batched path (collation: none needed)."""
    idx = np.random.default_rng(0).permutation(len(ds))[:n]
    f = ds._h5()
    t_read = t_tr = 0.0
    for s in range(0, n, batch):
        rows = ds.indices[idx[s : s + batch]]
        t0 = time.perf_counter()
        images = ds._read_images(f, rows)
        t1 = time.perf_counter()
        ds._transform_batch(images)
        t_read += t1 - t0
        t_tr += time.perf_counter() - t1
    return {"read_decode_us": t_read / n * 1e6, "transforms_us": t_tr / n * 1e6, "collate_us": 0.0}


def close_in_parent(ds: ReidH5Dataset) -> None:
    """Drop the handle the profile opened, so no h5py handle crosses the workers' fork."""
    if ds._file is not None:
        ds._file.close()
    ds._file = None
    ds._pid = None


def build_loaders(args: argparse.Namespace, records: list[tuple[str, int, int]],
                  files: dict[str, dict[str, Any]], loose_bytes: int) -> list[Loader]:
    labels = {p: i for i, p in enumerate(sorted({pid for _, pid, _ in records}))}
    n, bs = args.profile_images, args.batch_size
    pil_t = pil_transforms()
    loose = LooseFiles([p for p, _, _ in records], [labels[pid] for _, pid, _ in records], pil_t)
    out = [Loader("loose (PIL)", loose, None, False, "loose", loose_bytes,
                  profile_per_sample(lambda i: Image.open(records[i][0]).convert("RGB"), pil_t, len(loose), n, bs))]
    for enc, info in files.items():
        path, size = info["path"], info["bytes"]
        t = v2_transforms()
        ds = ReidH5Dataset(path, "train", transform=t)
        prof = profile_per_sample(lambda i, ds=ds: torch.from_numpy(ds._h5().read_image("train", i)).permute(2, 0, 1),
                                  t, len(ds), n, bs)
        close_in_parent(ds)
        out.append(Loader(f"h5-{enc} per-sample", PerSample(ds), None, False, "per-sample", size, prof))
        # The transforms of the loose baseline: resize, flip, normalise (no pad/crop).
        ds = ReidH5Dataset(path, "train", transform=build_transforms(H, W, train=True, pad=0))
        prof = profile_batched(ds, n, bs)
        close_in_parent(ds)
        out.append(Loader(f"h5-{enc} batched", ds, reid_collate, False, "batched", size, prof))
        if enc == "raw":
            out.append(Loader(f"h5-{enc} batched default-collate", ds, None, False, "batched", size))
            ds_u8 = ReidH5Dataset(path, "train", transform=build_transforms(H, W, train=True, pad=0, normalize=False))
            prof = profile_batched(ds_u8, n, bs)
            close_in_parent(ds_u8)
            out.append(Loader(f"h5-{enc} batched uint8+consumer-norm", ds_u8, reid_collate, True, "batched", size,
                              prof))
            old_u8 = ReidH5Dataset(path, "train", transform=v2_transforms(normalize=False))
            out.append(Loader(f"h5-{enc} per-sample uint8+consumer-norm", PerSample(old_u8), None, True,
                              "per-sample", size))
    return out


def summarise(loaders: list[Loader], warmup: list[float]) -> list[dict[str, Any]]:
    base = np.array(loaders[0].rates)
    results = []
    for ld, w in zip(loaders, warmup):
        r = np.array(ld.rates)
        ratio = r / base  # paired with the loose loader of the same round
        results.append({
            "loader": ld.name, "path": ld.path, "collate_fn": "reid_collate" if ld.collate else "default_collate",
            "normalise": "consumer (normalize_batch in the loop)" if ld.consumer_norm else "worker",
            "bytes": ld.bytes,
            "samples_per_s_median": float(np.median(r)), "samples_per_s_min": float(r.min()),
            "samples_per_s_max": float(r.max()), "samples_per_s_rounds": r.tolist(),
            "warmup_samples_per_s": w,
            "speedup_vs_loose_median": float(np.median(ratio)), "speedup_vs_loose_min": float(ratio.min()),
            "speedup_vs_loose_max": float(ratio.max()),
            "profile_us_per_image": ld.profile,
        })
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cuhk01"))
    ap.add_argument("--rounds", type=int, default=8, help="measured rounds (after one warm-up round)")
    ap.add_argument("--encodings", default="raw,jpeg", help=f"comma list of {', '.join(ENCODINGS)}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile-images", type=int, default=512)
    ap.add_argument("--workdir", default=None, help="where to write the HDF5 files (default: a temp dir, removed)")
    ap.add_argument("--out", default=str(RESULTS / "loader.json"))
    args = ap.parse_args(argv)
    encodings = [e.strip() for e in args.encodings.split(",") if e.strip()]
    unknown = [e for e in encodings if e not in ENCODINGS]
    if unknown or "raw" not in encodings:
        ap.error(f"--encodings: unknown {unknown} (known: {list(ENCODINGS)}); raw is required")

    data = Path(args.data)
    with open(data / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = [(str(data / r["path"]), int(r["pid"]), int(r["camid"]) - 1) for r in rows]
    loose_bytes = sum((data / r["path"]).stat().st_size for r in rows)
    torch.set_num_threads(1)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="reidaug-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    try:
        for name in encodings:
            enc, comp = ENCODINGS[name]
            path = work / f"cuhk01-{name}.h5"
            secs = write_h5(path, records, enc, comp)
            files[name] = {"path": path, "bytes": path.stat().st_size, "write_s": secs}
            print(f"wrote {name}: {path.stat().st_size / 1e6:.1f} MB in {secs:.1f} s", flush=True)

        loaders = build_loaders(args, records, files, loose_bytes)
        dls = [make_loader(ld, args.workers, args.batch_size, args.seed) for ld in loaders]
        order_rng = np.random.default_rng(args.seed)
        warmup: list[float] = [0.0] * len(loaders)
        for rnd in range(args.rounds + 1):
            for j in order_rng.permutation(len(loaders)):
                rate = run_epoch(dls[j], loaders[j].consumer_norm)
                if rnd == 0:
                    warmup[j] = rate
                else:
                    loaders[j].rates.append(rate)
            tag = "warm-up" if rnd == 0 else f"round {rnd}"
            vals = warmup if rnd == 0 else [ld.rates[-1] for ld in loaders]
            print(f"{tag}: " + ", ".join(f"{ld.name} {v:.0f}" for ld, v in zip(loaders, vals)), flush=True)
        results = summarise(loaders, warmup)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    hdr = (f"{'loader':40s} {'MB':>6s} {'img/s median (min-max)':>24s} {'speedup median (min-max)':>25s}"
           "   read  transf collate (us/img, 1 proc)")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        p = r["profile_us_per_image"]
        prof_s = f"{p['read_decode_us']:6.0f} {p['transforms_us']:7.0f} {p['collate_us']:7.0f}" if p else ""
        rate = f"{r['samples_per_s_median']:.0f} ({r['samples_per_s_min']:.0f}-{r['samples_per_s_max']:.0f})"
        sp = (f"{r['speedup_vs_loose_median']:.2f}x ({r['speedup_vs_loose_min']:.2f}-"
              f"{r['speedup_vs_loose_max']:.2f})")
        print(f"{r['loader']:40s} {r['bytes'] / 1e6:6.1f} {rate:>24s} {sp:>25s}   {prof_s}")
    write_result(args.out, {
        "benchmark": "loader",
        "date": now_utc(),
        "command": command_line(),
        "machine": machine(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                           load_average_at_end=load_average(),
                           note="shared 2-core VM; other processes (test suites) ran at the same time"),
        "data": {"name": "CUHK01", "images": len(records), "native_hw": [160, 60],
                 "loose_bytes": loose_bytes},
        "settings": {"rounds": args.rounds, "workers": args.workers, "batch_size": args.batch_size,
                     "transforms": "resize 256x128 (raw files are stored at 256x128), random horizontal "
                                   "flip per sample, ImageNet normalise to float32",
                     "order": "one warm-up round, then each round runs one epoch of every loader in a "
                              "fresh random order; an epoch is a fresh iterator (worker start-up included)",
                     "speedup": "per-round ratio to the loose loader of the same round; median and min-max",
                     "note": "page cache warm (files were just written / read in the warm-up round)"},
        "files": {k: {"bytes": v["bytes"], "write_s": v["write_s"]} for k, v in files.items()},
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
