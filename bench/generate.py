"""generate-camstyle and generate-poseguided against their references' batch-1 test loops, side by side in one run.

Every arm uses the same generator file: a randomly initialised CycleGAN (speed does not depend
on the weights) written the way ``train-camstyle`` writes it (``generator_state`` plus its
``checksum``, :func:`reidaug.gen.common.save_checkpoint`) into a temp models folder. Inputs: the
first ``--images`` crops of CUHK01's manifest (``../shared/data/cuhk01``, read in place, both
cameras), or the synthetic dataset when that folder is absent (or ``--data synthetic``).

CPU (always):
- **A, reference loop**: per image, as CycleGAN's ``test.py`` (batch 1, no loader workers):
  PIL ``open().convert("RGB")``, ``Resize((H, W), BICUBIC)``, ``ToTensor``,
  ``Normalize(0.5, 0.5)``, forward under ``no_grad``, ``util.tensor2im``
  (``(x + 1) / 2 * 255`` truncated to uint8), PIL save as PNG into a temp folder (the fake
  only; ``test.py`` also saves the real image).
- **B, reidaug**: the ``generate-camstyle`` stage through the pipeline runner (dask threads,
  1 worker) on an ``ingest`` of the same images (format ``folder`` with a CSV manifest written
  outside the dataset folder). A stage input must be an upstream stage's output, so a
  precomputed models folder cannot be bound directly: a bench-only source stage
  (``bench-generators``, passed in the runner's registry) publishes the generator file as its
  ``models`` output. ``batch_size`` is not in the stage's key, so every batch size after the
  first is a forced re-run of the same key. Reported: the whole stage (plan with its weight
  load, the chunk, finalize, commit) and the overlapped decode / model / encode loop inside the
  chunk (the chunk's own ``seconds.wall``). The fakes of every batch size are compared with
  those of the first.
- **C, model only**: ``CamStyleTranslator.translate_tensor`` (what the stage's model step
  calls) on input tensors made beforehand, the same batches as the stage; no decode, encode or
  write. Overlap efficiency = C's seconds / B's seconds for the same images and batch size
  (1.0: loading, encoding and writing fully hidden behind the model), in wall time and in CPU
  time; the stage's own "model busy" (model seconds / loop wall) is reported too.
- FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` on the generator at H x W
  (convolutions, 2 FLOPs per multiply-add). Achieved GFLOP/s = FLOPs x img/s, against the FP32
  ceiling of this CPU: ``n x n`` ``torch.matmul`` with torch's threads, measured before the
  arms, after each round and at the end (the machine is shared: all are kept, their median is
  used).
- Extra model-only rows at one batch size, clearly not the stage's path: channels_last, bf16
  autocast (changes the outputs: the uint8 difference to fp32 is reported), oneDNN off.
- Where the time goes: one serial pass over the images (CPU: the first ``--breakdown-images``)
  at the largest batch size, each step timed alone: read + decode + resize, to tensor
  (+ host-to-device on CUDA), model, device-to-host, PNG encode, HDF5 write; and the most the
  overlapped stage could reach given its slowest thread.

Order: ``--rounds`` rounds; each runs A, every C and every B once, in a fresh random order (the
machine is shared, so drift hits all arms alike). Reported per arm: median and min-max img/s over
rounds, and the per-round ratio to A. Beside wall time, every arm and the ceiling record the
process's CPU seconds (all threads): CPU-seconds per image, GFLOP per CPU-second and their
ratios move much less than wall time when other jobs take the cores, and on a compute-bound
CPU they are what a dedicated machine's throughput follows. A batch holds one (source, target) pair, so with two
cameras a batch size above ``--images / 2`` is not reached (a warning says so).

GPU (when ``torch.cuda.is_available()``, unless ``--no-gpu``): A, B, C and the breakdown again
on ``cuda`` (the stage's bf16 autocast + channels_last; A stays fp32 at batch 1 as ``test.py``),
CUDA events for device time, achieved TFLOP/s against the bf16 ``torch.matmul`` ceiling.

Pose-guided generators (``--generator pg2 | deformable``; issue 7): the same design for
``generate-poseguided``. The generator file is a random-init PG2 (Ma et al., NeurIPS 2017) or
Deformable GAN (Siarohin et al., CVPR 2018) written as ``train-posegan`` writes it
(``build_model``, ``generator_state`` with the score threshold 0.3, ``checksum``). Keypoints come
from ``extract-pose`` in a setup run of the same pipeline (``--poses``: ``movenet`` with the
shared ``.tflite`` on CUHK01, ``mediapipe``, or the synthetic dataset's ground truth through the
``openpose-csv`` backend; the JSON says which). Targets: ``targets: list`` with the
``--target-poses`` K images of most confident keypoints, each image rendered in each of those
poses but its own (K x N - K fakes, ``min_target_keypoints: 0`` so nothing is dropped); every arm
makes exactly the stage's (condition, target) pairs in its order. Rates are fakes per second.
- **A, reference loop**: as pose-gan's ``test.py`` (``PoseHMDataset`` with batch size 1 over its
  pairs file): per pair, PIL read + bicubic resize + ``Normalize(0.5, 0.5)``, keypoints (loaded
  once, as the reference reads its annotation CSV) into the model frame, the model's own pose
  maps (Deformable GAN: part affines and masks too) and generator at batch 1 in fp32 under
  ``no_grad``, ``tensor2im``, PIL PNG save.
- **B**: ``generate-poseguided`` through the runner at each batch size (forced re-runs of one key).
- **C, model only**: ``PoseGuidedGenerator.generate_tensor`` (the stage's model step: keypoint
  cleaning, pose maps, generator, uint8) on tensors made beforehand, the stage's batches.
FLOPs per fake: ``FlopCounterMode`` over that model step at batch 1 (convolutions and matmuls;
pose maps and ``grid_sample`` are not counted). Same interleaved rounds, CPU seconds, matmul
ceiling and GPU section (bf16 autocast + channels_last for B and C, as the stage) as CamStyle; no
breakdown or variant rows. JSON entry ``<model>-ngf<N>-<H>x<W>``.

Prints tables and writes JSON (default ``bench/results/generate.json``; one entry per generator
configuration, so runs of other configurations are kept).

    .venv/bin/python bench/generate.py --images 64 --rounds 1
    .venv/bin/python bench/generate.py --images 128 --rounds 3 --height 128 --width 64 --ngf 32 --n-blocks 6
    .venv/bin/python bench/generate.py --generator pg2 --images 64 --rounds 2
    .venv/bin/python bench/generate.py --generator deformable --images 64 --rounds 2
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import logging
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from reidaug.io.atomic import atomic_path
from reidaug.pipeline.context import StageContext, read_h5_chunk, write_h5_chunk
from reidaug.pipeline.stage import FileParam, Params, StageSpec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cuhk01"
MODEL_JOB = ("cyclegan", (0, 1))  # one CycleGAN between camera 0 and camera 1


# --------------------------------------------------------------------------------------------
# Inputs: images, the generator file, the bench-only stage that publishes it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenConfig:
    ngf: int
    n_blocks: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"ngf{self.ngf}-b{self.n_blocks}-{self.height}x{self.width}"


@dataclass(frozen=True)
class Crop:
    rel: str  # relative to the data root
    pid: int
    cam: int  # 0-based


def select_images(data: str, n: int, tmp: Path) -> tuple[Path, list[Crop], str]:
    """The first ``n`` CUHK01 crops of the manifest (N/4 identities, 2 per camera), else synthetic."""
    root = Path(data)
    if data != "synthetic" and (root / "manifest.csv").is_file():
        with open(root / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))[:n]
        images = [Crop(r["path"], int(r["pid"]), int(r["camid"]) - 1) for r in rows]
        return root, images, f"CUHK01 ({root}): the first {len(images)} crops of manifest.csv, read in place"
    from reidaug.data.synthetic import SyntheticSpec, write_dataset

    why = "asked for" if data == "synthetic" else f"{root} has no manifest.csv"
    out = tmp / "synthetic"
    # 8 images per identity (2 cameras x 4); identities of every split are used
    write_dataset(out, SyntheticSpec(num_ids=max(2, -(-n // 8)), num_cams=2, images_per_id_per_cam=4,
                                     height=128, width=64, seed=0))
    found = []
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        for p in (out / split).glob("*.jpg"):
            m = re.match(r"(\d+)_c(\d+)", p.name)
            if m:
                found.append(Crop(f"{split}/{p.name}", int(m[1]), int(m[2]) - 1))
    found.sort(key=lambda im: (im.pid, im.cam, im.rel))
    images = found[:n]
    return out, images, f"synthetic (reidaug.data.synthetic, 128x64 JPEG; {why}): {len(images)} crops"


def write_manifest(path: Path, images: list[Crop]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "pid", "camid", "split"])
        for im in images:
            w.writerow([im.rel, im.pid, im.cam + 1, "train"])  # 1-based, camera_base 1
    return path


def write_generator(models_dir: Path, cfg: GenConfig, seed: int) -> tuple[Path, str]:
    """A random-init CycleGAN's generators in train-camstyle's file format; returns (path, checksum)."""
    from reidaug.gen.camstyle import ModelJob, generator_state
    from reidaug.gen.common import save_checkpoint, state_checksum
    from reidaug.models.cyclegan import CycleGAN, CycleGANConfig

    # Only the generators are saved; the discriminators just have to fit tiny test sizes.
    n_layers_d = 3 if min(cfg.height, cfg.width) >= 24 else 1
    model = CycleGAN(CycleGANConfig(ngf=cfg.ngf, n_blocks=cfg.n_blocks, image_height=cfg.height,
                                    image_width=cfg.width, n_layers_d=n_layers_d, seed=seed))
    job = ModelJob(*MODEL_JOB)
    state = generator_state(model, job)
    state["checksum"] = state_checksum(state["weights"])  # as train_model does
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{job.name}.pt"
    save_checkpoint(path, state)
    return path, state["checksum"]


class PublishParams(Params):
    generator: FileParam


def _publish_chunk(ctx: StageContext, index: int) -> None:
    src = Path(ctx.params.generator.path)
    dst = ctx.work_dir / "models" / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    ctx.write_chunk(index, {"name": [src.name]})


#: Bench-only source stage: publishes a generator file as a ``models`` output (what
#: train-camstyle's output looks like to generate-camstyle). Keyed by the file's sha256.
PUBLISH = StageSpec(
    name="bench-generators", version=1, description="bench only: a generator file as a models output",
    params=PublishParams, run_chunk=_publish_chunk, outputs={"models": "models", "chunks": "chunks"},
)


def pipeline_yaml(folder: Path, root: Path, manifest: Path, n: int, generator: Path, device: str) -> Path:
    q = json.dumps  # JSON strings are YAML double-quoted scalars
    text = (
        "name: bench-generate\n"
        "execution: {scheduler: threads, workers: 1}\n"
        "stages:\n"
        "  ingest:\n"
        "    params:\n"
        f"      format: folder\n      root: {q(str(root))}\n"
        f"      options: {{manifest: {q(str(manifest))}, camera_base: 1}}\n"
        f"      chunk_size: {max(n, 1)}\n"
        "  bench-generators:\n"
        f"    params: {{generator: {q(str(generator))}}}\n"
        "  generate-camstyle:\n"
        f"    params: {{batch_size: 1, device: {device}, amp: true}}\n"
        "    inputs: {dataset: ingest.dataset, models: bench-generators.models}\n"
    )
    path = folder / f"pipeline-{device}.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------
def cpu_time() -> float:
    """CPU seconds this process has used (all threads, user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def device_timer(device: torch.device, out: dict[str, float], name: str) -> Iterator[None]:
    """Adds the step's seconds to ``out[name]``: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        end.synchronize()
        out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        yield
        out[name] = out.get(name, 0.0) + time.perf_counter() - t0


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> dict[str, Any]:
    """GFLOP/s of an ``n x n`` matmul (2 n^3 FLOPs), ``reps`` timed calls after 2 warm-ups."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    for _ in range(2):
        a @ b
    sync(device)
    rates, per_cpu_s = [], []
    for _ in range(reps):
        t: dict[str, float] = {}
        c0 = cpu_time()
        with device_timer(device, t, "mm"):
            a @ b
        rates.append(2 * n ** 3 / t["mm"] / 1e9)
        per_cpu_s.append(2 * n ** 3 / max(cpu_time() - c0, 1e-9) / 1e9)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "reps": reps, "threads": torch.get_num_threads(),
            "gflops_median": statistics.median(rates), "gflops_max": max(rates),
            "gflop_per_cpu_s_median": statistics.median(per_cpu_s), "load_average": list(os.getloadavg())}


def flops_per_image(cfg: GenConfig) -> dict[str, Any]:
    """Forward FLOPs of one generator at batch 1 (on the meta device: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from reidaug.models.cyclegan import ResnetGenerator

    with torch.device("meta"):
        net = ResnetGenerator(3, 3, cfg.ngf, cfg.n_blocks)
        x = torch.zeros(1, 3, cfg.height, cfg.width)
    with FlopCounterMode(display=False) as fc:
        net(x)
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(fc.get_total_flops()), "by_op": by_op,
            "params": sum(p.numel() for p in net.parameters()),
            "note": "FlopCounterMode: convolutions and transposed convolutions, 2 FLOPs per multiply-add; "
                    "instance norm, ReLU, padding and tanh not counted"}


# --------------------------------------------------------------------------------------------
# The arms
# --------------------------------------------------------------------------------------------
def stage_batches(cams: list[int], batch_size: int) -> list[tuple[int, int, list[int]]]:
    """(source, target, rows) batches as generate-camstyle forms them for two cameras: jobs
    sorted by (source, target, row), cut every ``batch_size`` and where the pair changes."""
    jobs = sorted((c, 1 - c, i) for i, c in enumerate(cams))
    out: list[tuple[int, int, list[int]]] = []
    for start in range(0, len(jobs), batch_size):
        cur: list[tuple[int, int, int]] = []
        for job in jobs[start:start + batch_size]:
            if cur and cur[0][:2] != job[:2]:  # split where the pair changes
                out.append((cur[0][0], cur[0][1], [j[2] for j in cur]))
                cur = []
            cur.append(job)
        out.append((cur[0][0], cur[0][1], [j[2] for j in cur]))
    return out


def load_reference_nets(gen_file: Path, device: torch.device) -> dict[int, torch.nn.Module]:
    """The reference's ``load_networks``: a generator per direction, weights from the file."""
    from reidaug.gen.common import load_checkpoint
    from reidaug.models.cyclegan import ResnetGenerator

    state = load_checkpoint(gen_file, "bench")
    cfg = state["config"]
    nets = {}
    for cam, name in ((0, "G_AB"), (1, "G_BA")):  # camera 0 -> 1 is G_AB
        net = ResnetGenerator(3, 3, cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["padding"])
        net.load_state_dict({k[len(name) + 1:]: v for k, v in state["weights"].items() if k.startswith(name + ".")})
        nets[cam] = net.to(device).eval()
    return nets


def tensor2im(image_tensor: torch.Tensor) -> np.ndarray:
    """CycleGAN's ``util.tensor2im``: first image, ``(x + 1) / 2 * 255``, truncated to uint8."""
    image_numpy = image_tensor[0].cpu().float().numpy()
    if image_numpy.shape[0] == 1:
        image_numpy = np.tile(image_numpy, (3, 1, 1))
    image_numpy = (np.transpose(image_numpy, (1, 2, 0)) + 1) / 2.0 * 255.0
    return image_numpy.astype(np.uint8)


def arm_reference(root: Path, images: list[Crop], gen_file: Path, cfg: GenConfig, device: torch.device,
                  out_dir: Path) -> dict[str, Any]:
    """Arm A: CycleGAN's test loop, one image at a time, PIL in and out."""
    from PIL import Image as PILImage
    from torchvision import transforms as T

    nets = load_reference_nets(gen_file, device)
    transform = T.Compose([T.Resize((cfg.height, cfg.width), interpolation=T.InterpolationMode.BICUBIC),
                           T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():  # warm-up, one image per direction
        for net in nets.values():
            net(torch.zeros(1, 3, cfg.height, cfg.width, device=device))
    sync(device)
    steps: dict[str, float] = {}
    t0, c0 = time.perf_counter(), cpu_time()
    for im in images:
        t1 = time.perf_counter()
        img = PILImage.open(root / im.rel).convert("RGB")
        x = transform(img).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]
        t2 = time.perf_counter()
        with torch.no_grad():
            y = nets[im.cam](x)
        sync(device)
        t3 = time.perf_counter()
        PILImage.fromarray(tensor2im(y)).save(out_dir / f"{Path(im.rel).stem}_fake_B.png")
        t4 = time.perf_counter()
        for k, v in (("load_transform", t2 - t1), ("model", t3 - t2), ("tensor2im_save", t4 - t3)):
            steps[k] = steps.get(k, 0.0) + v
    seconds, cpu_s = time.perf_counter() - t0, cpu_time() - c0
    return {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds, "cpu_seconds": cpu_s,
            "steps_s": steps, "load_average": list(os.getloadavg())}


def decode_resized(root: Path, images: list[Crop], cfg: GenConfig) -> list[np.ndarray]:
    """The pixels the stage feeds its model: stored bytes decoded, cv2 bilinear resize."""
    import cv2

    from reidaug.data.images import decode_stored

    return [cv2.resize(decode_stored((root / im.rel).read_bytes()), (cfg.width, cfg.height),
                       interpolation=cv2.INTER_LINEAR) for im in images]


def arm_model_only(translator, pixels: list[np.ndarray], cams: list[int], batch_size: int,
                   device: torch.device) -> dict[str, Any]:
    """Arm C: the translator's model step on tensors made beforehand, the stage's batches."""
    batches = [(s, t, translator.to_tensor(np.stack([pixels[i] for i in rows])))
               for s, t, rows in stage_batches(cams, batch_size)]
    warm = {(s, t): x for s, t, x in batches}  # each direction once; the whole batch on a GPU
    for (s, t), x in warm.items():
        translator.translate_tensor(x if device.type == "cuda" else x[:1], s, t)
    sync(device)
    timing: dict[str, float] = {}
    c0 = cpu_time()
    with device_timer(device, timing, "model"):
        for s, t, x in batches:
            translator.translate_tensor(x, s, t)
    n = len(cams)
    return {"batch_size": batch_size, "images": n, "batches": len(batches), "seconds": timing["model"],
            "images_per_s": n / timing["model"], "cpu_seconds": cpu_time() - c0,
            "load_average": list(os.getloadavg())}


def arm_stage(pipe: Path, ws: Path, registry: dict[str, StageSpec], batch_size: int, first: bool,
              stage: str = "generate-camstyle") -> dict[str, Any]:
    """Arm B: a generation stage (generate-camstyle, generate-poseguided) through the pipeline
    runner at ``batch_size``."""
    from reidaug.data.images import decode_stored
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.pipeline.runner import RunOptions, run_pipeline

    graph = build_graph(load_pipeline(pipe, overrides=[f"stages.{stage}.params.batch_size={batch_size}"]), registry)
    force = frozenset() if first else frozenset({stage})  # batch_size is not in the key
    opts = RunOptions(scheduler="threads", workers=1, progress=False, force=force)
    t0, c0 = time.perf_counter(), cpu_time()
    report = run_pipeline(graph, ws, [stage], opts, registry=registry)
    total, cpu_s = time.perf_counter() - t0, cpu_time() - c0
    res = next(r for r in report.results if r.name == stage)
    meta = json.loads((res.entry / "meta.json").read_text())
    loop = {"wall": 0.0, "prepare": 0.0, "compute": 0.0, "finish": 0.0}
    fakes: list[np.ndarray] = []
    for i in range(int(meta["num_chunks"])):
        arrays, attrs = read_h5_chunk(res.entry / "chunks" / f"{i:05d}.h5")
        for k in loop:
            loop[k] += float(attrs["seconds"][k])
        fakes += [decode_stored(b) for b in arrays.get("image", [])]
    n = len(fakes)
    return {"batch_size": batch_size, "images": n, "key": res.key, "action": res.action,
            "stage_seconds": res.seconds, "run_pipeline_seconds": total, "cpu_seconds": cpu_s,
            "images_per_s": n / res.seconds, "loop_seconds": loop, "loop_images_per_s": n / loop["wall"],
            "model_busy": meta["summary"].get("model_busy"), "timings": meta["timings"],
            "load_average": list(os.getloadavg()), "_fakes": fakes}


def compare_fakes(ref: list[np.ndarray], other: list[np.ndarray]) -> dict[str, Any]:
    if len(ref) != len(other):
        return {"same_count": False}
    diffs = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(ref, other)]
    return {"same_count": True, "identical_images": sum(d == 0 for d in diffs), "images": len(diffs),
            "max_abs_diff": max(diffs, default=0)}


@contextlib.contextmanager
def _mkldnn_off() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "TF32 acceleration on top of oneDNN ... Intel GPUs"
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def arm_variants(translator, pixels: list[np.ndarray], cams: list[int], batch_size: int, rounds: int
                 ) -> list[dict[str, Any]]:
    """CPU model-only variants at one batch size, interleaved over ``rounds``; not the stage's path."""
    variants: list[tuple[str, dict[str, bool]]] = [
        ("fp32 (the stage's CPU path)", {}),
        ("fp32 channels_last", {"cl": True}),
        ("bf16 autocast", {"bf16": True}),
        ("bf16 autocast + channels_last", {"bf16": True, "cl": True}),
        ("fp32, oneDNN (mkldnn) off", {"no_mkldnn": True}),
    ]
    batches = [(s, t, translator.to_tensor(np.stack([pixels[i] for i in rows])))
               for s, t, rows in stage_batches(cams, batch_size)]

    cpu_by: dict[str, list[float]] = {name: [] for name, _ in variants}

    def run(opt: dict[str, bool], cpu_s: list[float]) -> tuple[float, list[np.ndarray]]:
        outs = []
        fmt = torch.channels_last if opt.get("cl") else torch.contiguous_format
        mk = _mkldnn_off() if opt.get("no_mkldnn") else contextlib.nullcontext()
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if opt.get("bf16") else contextlib.nullcontext()
        nets = {k: v[0] for k, v in translator.routes.items()}
        for net in nets.values():
            net.to(memory_format=fmt)
        xs = [(s, t, x.contiguous(memory_format=fmt)) for s, t, x in batches]
        try:
            with torch.inference_mode(), mk, amp:
                nets[xs[0][:2]](xs[0][2][:1])  # warm-up at batch 1 (format / dtype switch)
                t0, c0 = time.perf_counter(), cpu_time()
                for s, t, x in xs:
                    y = nets[(s, t)](x)
                    outs.append(y.float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8))
                seconds = time.perf_counter() - t0
                cpu_s.append(cpu_time() - c0)
        finally:
            for net in nets.values():
                net.to(memory_format=torch.contiguous_format)
        return seconds, [o.permute(0, 2, 3, 1).numpy() for o in outs]

    secs: dict[str, list[float]] = {name: [] for name, _ in variants}
    outputs: dict[str, list[np.ndarray]] = {}
    for _ in range(rounds):
        for name, opt in variants:
            s, outs = run(opt, cpu_by[name])
            secs[name].append(s)
            outputs.setdefault(name, outs)
    ref = np.concatenate(outputs[variants[0][0]])
    rows = []
    for name, _ in variants:
        diff = np.abs(np.concatenate(outputs[name]).astype(np.int16) - ref.astype(np.int16))
        med = statistics.median(secs[name])
        rows.append({"variant": name, "batch_size": batch_size, "images": len(cams), "rounds": rounds,
                     "seconds_median": med, "seconds_all": secs[name], "images_per_s": len(cams) / med,
                     "vs_fp32": statistics.median(secs[variants[0][0]]) / med,
                     "cpu_seconds_per_image": statistics.median(cpu_by[name]) / len(cams),
                     "vs_fp32_cpu": statistics.median(cpu_by[variants[0][0]]) / statistics.median(cpu_by[name]),
                     "uint8_diff_to_fp32": {"max": int(diff.max()), "mean": float(diff.mean())}})
    return rows


def arm_breakdown(translator, root: Path, images: list[Crop], batch_size: int, device: torch.device,
                  tmp: Path) -> dict[str, Any]:
    """One serial pass, the stage's steps each timed alone (nothing overlaps)."""
    import cv2

    from reidaug.data.images import decode_stored, encode_png

    h, w = translator.size
    cams = [im.cam for im in images]
    steps: dict[str, float] = {}
    encoded: list[bytes] = []
    for s, t, rows in stage_batches(cams, batch_size):
        t0 = time.perf_counter()
        pixels = [cv2.resize(decode_stored((root / images[i].rel).read_bytes()), (w, h),
                             interpolation=cv2.INTER_LINEAR) for i in rows]
        steps["read_decode_resize"] = steps.get("read_decode_resize", 0.0) + time.perf_counter() - t0
        with device_timer(device, steps, "to_tensor_h2d"):
            x = translator.to_tensor(np.stack(pixels))
        with device_timer(device, steps, "model"):
            y = translator.translate_tensor(x, s, t)
        with device_timer(device, steps, "d2h"):
            y = y.cpu() if y.device.type != "cpu" else y
        t0 = time.perf_counter()
        encoded += [encode_png(img) for img in y.numpy()]
        steps["png_encode"] = steps.get("png_encode", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    write_h5_chunk(tmp / f"breakdown-{device.type}.h5", {"image": encoded, "path": [im.rel for im in images]})
    steps["hdf5_write"] = time.perf_counter() - t0
    total = sum(steps.values())
    n = len(images)
    ms = {k: 1000 * v / n for k, v in steps.items()}
    # The stage runs these on three threads (prepare | model | encode), then writes the chunk:
    # with perfect overlap an image costs its slowest thread's share plus the write.
    threads = {"prepare (read, decode, resize, to tensor)": ms["read_decode_resize"] + ms["to_tensor_h2d"],
               "model (+ device-to-host)": ms["model"] + ms["d2h"], "finish (PNG encode)": ms["png_encode"]}
    limit = max(threads, key=threads.__getitem__)
    return {"batch_size": batch_size, "images": n, "seconds": steps, "ms_per_image": ms,
            "share": {k: v / total for k, v in steps.items()},
            "bytes_per_fake": sum(map(len, encoded)) / max(n, 1),
            "overlapped_bound": {"ms_per_image_by_thread": threads, "limiting_thread": limit,
                                 "images_per_s": 1000 / (threads[limit] + ms["hdf5_write"]),
                                 "note": "1000 / (slowest thread's ms per image + HDF5 write), from this "
                                         "serial pass; threads competing for cores are not modelled"}}


def summarise_arms(units: list[tuple[str, int]], rounds: list[dict[tuple[str, int], dict[str, Any]]],
                   names: dict[str, str], flops: int, ceiling: float, ceiling_cpu: float,
                   fakes: dict[int, list[np.ndarray]], first_bs: int) -> list[dict[str, Any]]:
    """Per arm: medians and min-max over rounds, per-round ratios to A (wall and CPU time),
    GFLOP/s against the ceiling; for B (a stage) the overlap efficiencies against C at the same
    batch size and its fakes against those of the first batch size."""
    med = statistics.median
    arms = []
    for kind, bs in units:
        rows = [res[(kind, bs)] for res in rounds]
        rates = [row["images_per_s"] for row in rows]
        vs_ref = [row["images_per_s"] / res[("A", 1)]["images_per_s"] for row, res in zip(rows, rounds)]
        # CPU seconds per image: much less sensitive than wall time to other jobs on a shared machine
        cpu_img = [row["cpu_seconds"] / row["images"] for row in rows]
        vs_ref_cpu = [res[("A", 1)]["cpu_seconds"] / res[("A", 1)]["images"] / c for c, res in zip(cpu_img, rounds)]
        arm: dict[str, Any] = {
            "arm": kind, "name": names[kind], "batch_size": bs, "images": rows[0]["images"],
            "images_per_s_median": med(rates), "images_per_s_min": min(rates), "images_per_s_max": max(rates),
            "vs_reference_median": med(vs_ref), "vs_reference_min": min(vs_ref), "vs_reference_max": max(vs_ref),
            "gflops": flops * med(rates) / 1e9, "percent_of_ceiling": 100 * flops * med(rates) / 1e9 / ceiling,
            "cpu_seconds_per_image_median": med(cpu_img), "vs_reference_cpu_median": med(vs_ref_cpu),
            "gflop_per_cpu_s": flops / med(cpu_img) / 1e9,
            "percent_of_ceiling_cpu": 100 * flops / med(cpu_img) / 1e9 / ceiling_cpu,
            "rounds": rows,
        }
        if kind == "B":
            # same images, same batches: 1.0 = decode, encode and write fully hidden behind the model
            stage_eff = [res[("C", bs)]["seconds"] / res[(kind, bs)]["stage_seconds"] for res in rounds]
            loop_eff = [res[("C", bs)]["seconds"] / res[(kind, bs)]["loop_seconds"]["wall"] for res in rounds]
            cpu_eff = [res[("C", bs)]["cpu_seconds"] / res[(kind, bs)]["cpu_seconds"] for res in rounds]
            arm.update({
                "overlap_efficiency_stage_median": med(stage_eff), "overlap_efficiency_stage_all": stage_eff,
                "overlap_efficiency_loop_median": med(loop_eff), "overlap_efficiency_loop_all": loop_eff,
                "cpu_seconds_vs_model_only_median": med(cpu_eff),
                "loop_images_per_s_median": med(row["loop_images_per_s"] for row in rows),
                "model_busy_median": med(row["model_busy"] or 0.0 for row in rows),
                "fakes_vs_first_batch_size": compare_fakes(fakes[first_bs], fakes[bs]),
            })
        arms.append(arm)
    return arms


# --------------------------------------------------------------------------------------------
# One device's section
# --------------------------------------------------------------------------------------------
def run_section(device: torch.device, args: argparse.Namespace, cfg: GenConfig, root: Path, images: list[Crop],
                gen_file: Path, flops: int, tmp: Path) -> dict[str, Any]:
    from reidaug.gen.camstyle import CamStyleTranslator
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.pipeline.runner import RunOptions, run_pipeline
    from reidaug.stages import STAGES

    cuda = device.type == "cuda"
    batch_sizes = args.gpu_batch_sizes if cuda else args.batch_sizes
    ceiling_dtype = torch.bfloat16 if cuda else torch.float32
    mm_n = args.gpu_matmul_n if cuda else args.matmul_n
    print(f"\n== {device.type.upper()}: {len(images)} images, {cfg.label}, batch sizes {batch_sizes}", flush=True)
    per_pair = max(Counter(im.cam for im in images).values(), default=0)
    if max(batch_sizes) > per_pair:
        print(f"warning: a batch holds one camera pair, at most {per_pair} images here; batch sizes above that "
              f"run as {per_pair}. Use --images >= {2 * max(batch_sizes)}.", flush=True)
    ceiling_before = matmul_ceiling(device, ceiling_dtype, mm_n, args.matmul_reps)
    print(f"matmul ceiling ({ceiling_before['dtype']}, n={mm_n}): {ceiling_before['gflops_median']:.0f} GFLOP/s",
          flush=True)

    work = tmp / device.type
    work.mkdir()
    manifest = write_manifest(work / f"manifest-{len(images)}.csv", images)
    pipe = pipeline_yaml(work, root, manifest, len(images), gen_file, "cuda" if cuda else "cpu")
    registry = {**STAGES, PUBLISH.name: PUBLISH}
    ws = work / "ws"
    run_pipeline(build_graph(load_pipeline(pipe), registry), ws, ["ingest", "bench-generators"],
                 RunOptions(scheduler="threads", workers=1, progress=False), registry=registry)

    translator = CamStyleTranslator(gen_file.parent, device, amp=True)
    cams = [im.cam for im in images]
    pixels = decode_resized(root, images, cfg)

    units = [("A", 1)] + [("C", bs) for bs in batch_sizes] + [("B", bs) for bs in batch_sizes]
    rng = np.random.default_rng(args.seed)
    rounds: list[dict[tuple[str, int], dict[str, Any]]] = []
    ceilings = [ceiling_before]
    fakes: dict[int, list[np.ndarray]] = {}
    stage_ran = False
    for r in range(args.rounds):
        res: dict[tuple[str, int], dict[str, Any]] = {}
        for j in rng.permutation(len(units)):  # a fresh order each round: drift on a shared machine hits all arms
            kind, bs = units[j]
            if kind == "A":
                row = arm_reference(root, images, gen_file, cfg, device, work / "reference_out")
            elif kind == "C":
                row = arm_model_only(translator, pixels, cams, bs, device)
            else:
                row = arm_stage(pipe, ws, registry, bs, first=not stage_ran)
                stage_ran = True
                out = row.pop("_fakes")
                if r == 0:
                    fakes[bs] = out
            res[(kind, bs)] = row
        ceilings.append(matmul_ceiling(device, ceiling_dtype, mm_n, args.matmul_reps))
        rounds.append(res)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k}{bs} {res[(k, bs)]['images_per_s']:.2f}" for k, bs in units) + " img/s", flush=True)

    best_bs = max(batch_sizes)
    bd_images = images[:args.breakdown_images] if args.breakdown_images and not cuda else images
    print(f"breakdown: {len(bd_images)} images at batch {best_bs} ...", flush=True)
    breakdown = arm_breakdown(translator, root, bd_images, best_bs, device, work)
    variants: list[dict[str, Any]] = []
    if not cuda and args.variant_images:
        vi = images[:args.variant_images]
        print(f"variants: {len(vi)} images at batch {args.variant_batch}, {args.variant_rounds} round(s) ...",
              flush=True)
        variants = arm_variants(translator, pixels[:len(vi)], [im.cam for im in vi], args.variant_batch,
                                args.variant_rounds)
    ceilings.append(matmul_ceiling(device, ceiling_dtype, mm_n, args.matmul_reps))
    ceiling = statistics.median(c["gflops_median"] for c in ceilings)
    ceiling_cpu = statistics.median(c["gflop_per_cpu_s_median"] for c in ceilings)

    names = {"A": "reference loop (test.py, batch 1)", "B": "generate-camstyle stage (runner)",
             "C": "model only (translate_tensor)"}
    arms = summarise_arms(units, rounds, names, flops, ceiling, ceiling_cpu, fakes, batch_sizes[0])
    for v in variants:
        v["gflops"] = flops * v["images_per_s"] / 1e9
        v["percent_of_ceiling"] = 100 * v["gflops"] / ceiling
        v["gflop_per_cpu_s"] = flops / v["cpu_seconds_per_image"] / 1e9
        v["percent_of_ceiling_cpu"] = 100 * v["gflop_per_cpu_s"] / ceiling_cpu
    keys = {row["key"] for res in rounds for (k, _), row in res.items() if k == "B"}
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "images": len(images), "batch_sizes": batch_sizes,
        "ceiling": {"measurements": ceilings, "gflops_used": ceiling, "gflop_per_cpu_s_used": ceiling_cpu,
                    "what": f"torch.matmul {mm_n}x{mm_n} {ceiling_before['dtype']}, {torch.get_num_threads()} "
                            f"threads; median of {args.matmul_reps} calls, measured before, after each round "
                            "and at the end; the median of those is used"},
        "rounds": args.rounds, "order": "a fresh random order of all arms in each round",
        "arms": arms, "stage_key_same_for_all_batch_sizes": len(keys) == 1,
        "breakdown": breakdown, "variants": variants,
        "settings": {"stage": "generate-camstyle via run_pipeline (dask threads, 1 worker), ingest format folder "
                              "with a CSV manifest, models from the bench-only stage bench-generators",
                     "amp": "bf16 autocast + channels_last on CUDA (the stage's default); no-op on the CPU",
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None},
    }


# --------------------------------------------------------------------------------------------
# Pose-guided generators (--generator pg2 | deformable): PG2, Deformable GAN
# --------------------------------------------------------------------------------------------
POSE_SCORE_THRESHOLD = 0.3  # train-posegan's default score_threshold, written into the file as it does
MOVENET = ROOT.parent / "shared" / "models" / "movenet_singlepose_lightning_int8.tflite"


@dataclass(frozen=True)
class PoseGenConfig:
    model: str  # pg2 | deformable
    ngf: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"{self.model}-ngf{self.ngf}-{self.height}x{self.width}"

    @property
    def d_layers(self) -> int | None:
        """Only the discriminator (built, never saved) depends on it: PG2's default fits every
        size it accepts; Deformable GAN's PatchGAN is made shallow enough for tiny test sizes."""
        if self.model == "pg2":
            return None
        return min(3, max(1, (min(self.height, self.width) // 3).bit_length() - 1))


def write_pose_generator(models_dir: Path, cfg: PoseGenConfig, seed: int) -> tuple[Path, str, int]:
    """A random-init PG2 / Deformable GAN in train-posegan's file format (``build_model``,
    ``generator_state`` with its score threshold, ``checksum``); returns (path, checksum, parameters)."""
    from reidaug.gen.common import save_checkpoint, state_checksum
    from reidaug.gen.poseguided import build_model, generator_state

    hp = {"image_height": cfg.height, "image_width": cfg.width, "ngf": cfg.ngf, "d_layers": cfg.d_layers}
    model = build_model(cfg.model, hp, seed)
    state = generator_state(model, cfg.model, POSE_SCORE_THRESHOLD)
    state["checksum"] = state_checksum(state["weights"])  # as train_model does
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{cfg.model}.pt"
    save_checkpoint(path, state)
    return path, state["checksum"], sum(int(v.numel()) for v in state["weights"].values())


def pose_source(choice: str, root: Path, images: list[Crop], synthetic: bool, tmp: Path) -> tuple[str, str]:
    """extract-pose's params (YAML flow mapping) for ``--poses`` and a sentence saying what they are."""
    q = json.dumps
    if choice == "auto":
        choice = "synthetic-gt" if synthetic else ("movenet" if MOVENET.is_file() else "mediapipe")
    if choice == "synthetic-gt":
        if not synthetic:
            raise SystemExit("--poses synthetic-gt needs the synthetic data (--data synthetic): CUHK01 has no "
                             "ground-truth keypoints. Fix: --poses movenet or mediapipe.")
        from reidaug.pose.openpose import write_openpose_csv

        truth = json.loads((root / "keypoints.json").read_text())["images"]
        csv_path = tmp / "synthetic-poses.csv"
        write_openpose_csv(csv_path, {Path(im.rel).name: np.asarray(truth[im.rel], np.float32) for im in images})
        return (f"{{backend: openpose-csv, annotations: {q(str(csv_path))}}}",
                "synthetic ground truth (keypoints.json) as an OpenPose-18 CSV through extract-pose's openpose-csv "
                "backend")
    if choice == "movenet":
        if not MOVENET.is_file():
            raise SystemExit(f"--poses movenet needs {MOVENET}. Fix: --poses mediapipe.")
        return (f"{{backend: movenet, model_path: {q(str(MOVENET))}, batch_size: 32}}",
                f"extract-pose backend movenet ({MOVENET.name}) on the crops")
    return ("{backend: mediapipe, upscale_height: 256, batch_size: 32}",
            "extract-pose backend mediapipe (BlazePose, crops upscaled to 256 px high, as configs/demo.yaml)")


def pose_pipeline_yaml(folder: Path, root: Path, manifest: Path, n: int, pose_params: str, generator: Path,
                       device: str, pose_list: list[str] | None) -> Path:
    """ingest → extract-pose, bench-generators → generate-poseguided (``targets: list``); without
    ``pose_list`` the generation stage is left out (the setup run that finds the poses)."""
    q = json.dumps
    text = (
        "name: bench-generate-pose\n"
        "execution: {scheduler: threads, workers: 1}\n"
        "stages:\n"
        "  ingest:\n"
        "    params:\n"
        f"      format: folder\n      root: {q(str(root))}\n"
        f"      options: {{manifest: {q(str(manifest))}, camera_base: 1}}\n"
        f"      chunk_size: {max(n, 1)}\n"
        f"  extract-pose: {{params: {pose_params}, inputs: {{dataset: ingest.dataset}}}}\n"
        "  bench-generators:\n"
        f"    params: {{generator: {q(str(generator))}}}\n"
    )
    if pose_list is not None:
        text += (
            "  generate-poseguided:\n"
            f"    params: {{targets: list, pose_list: {q(pose_list)}, min_target_keypoints: 0, batch_size: 1, "
            f"device: {device}, amp: true}}\n"
            "    inputs: {dataset: ingest.dataset, keypoints: extract-pose.keypoints,\n"
            "             models: bench-generators.models}\n"
        )
    path = folder / f"pipeline-pose-{device}{'' if pose_list is not None else '-setup'}.yaml"
    path.write_text(text)
    return path


@dataclass
class PoseJobs:
    """The (condition row, target row) pairs generate-poseguided forms with ``targets: list``, in
    its order (rows: extract-pose's, i.e. ingest's order), and the poses of every row."""

    paths: list[str]  # per row, relative to the data root
    keypoints: np.ndarray  # (N, 17, 3) in each image's own pixels
    hw: np.ndarray  # (N, 2) image sizes
    targets: list[int]  # rows whose poses are the targets (pose_list)
    jobs: list[tuple[int, int]]

    def batches(self, batch_size: int) -> list[list[tuple[int, int]]]:
        return [self.jobs[s:s + batch_size] for s in range(0, len(self.jobs), batch_size)]


def pose_jobs(entry: Path, k: int, threshold: float) -> PoseJobs:
    """From extract-pose's output: the ``k`` rows with the most confident keypoints become the target
    poses (ties: the first), and every row is rendered in each of them but its own (as the stage)."""
    from reidaug.gen.poseguided import count_confident

    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    parts = [a for a in parts if len(a.get("path", []))]
    paths = [str(x) for a in parts for x in a["path"]]
    kp = np.concatenate([a["keypoints"] for a in parts]).astype(np.float32)
    hw = np.stack([np.concatenate([a["height"] for a in parts]), np.concatenate([a["width"] for a in parts])], 1)
    conf = count_confident(kp, threshold)
    targets = sorted(sorted(range(len(paths)), key=lambda i: (-int(conf[i]), i))[:k])
    jobs = [(r, t) for r in range(len(paths)) for t in targets if r != t]
    return PoseJobs(paths, kp, hw.astype(np.int64), targets, jobs)


def pose_inputs(gen, root: Path, pj: PoseJobs) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """What the stage's prepare step makes: each row decoded and resized (cv2 bilinear) to the
    model's size, and per job the condition and target keypoints in that frame."""
    import cv2

    from reidaug.data.images import decode_stored
    from reidaug.gen.poseguided import rescale_keypoints

    h, w = gen.size
    pixels = []
    for rel in pj.paths:
        img = decode_stored((root / rel).read_bytes())
        pixels.append(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
    ckp = np.stack([rescale_keypoints(pj.keypoints[r], pj.hw[r], (h, w))[0] for r, _ in pj.jobs])
    tkp = np.stack([rescale_keypoints(pj.keypoints[t], pj.hw[t], (h, w))[0] for _, t in pj.jobs])
    return pixels, ckp, tkp


def load_reference_pose_model(gen_file: Path, device: torch.device):
    """The reference's loader: the model class from the saved config, the generator weights
    loaded, fp32, default memory format, eval mode; returns (model, model name, threshold)."""
    from reidaug.gen.common import load_checkpoint

    state = load_checkpoint(gen_file, "bench")
    cfg = dict(state["config"])
    if state["model"] == "pg2":
        from reidaug.models.pg2 import PG2, PG2Config

        model = PG2(PG2Config(**cfg))
    else:
        from reidaug.models.deformable import DeformableGAN, DeformableGANConfig

        cfg["nn_features"] = "pixels"
        model = DeformableGAN(DeformableGANConfig(**cfg))
    del model.nets["D"]
    model.nets.load_state_dict(state["weights"], strict=False)
    model.to(device)
    model.eval()
    return model, state["model"], float(state.get("score_threshold", 0.0))


def arm_pose_reference(root: Path, pj: PoseJobs, gen_file: Path, cfg: PoseGenConfig, device: torch.device,
                       out_dir: Path) -> dict[str, Any]:
    """Arm A: pose-gan's ``test.py`` loop (``PoseHMDataset`` with batch size 1 over the pairs file):
    per (condition, target) pair, read the condition image, build its pose inputs, run the
    generator, write the fake as a PNG. Images through PIL + torchvision (bicubic resize, as
    CycleGAN's loader; CUHK01's 160 x 60 crops need one), keypoints from the annotations loaded
    once, as the reference reads its CSV before the loop."""
    from PIL import Image as PILImage
    from torchvision import transforms as T

    from reidaug.gen.poseguided import clean_keypoints, rescale_keypoints

    model, name, thr = load_reference_pose_model(gen_file, device)
    h, w = cfg.height, cfg.width
    transform = T.Compose([T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC),
                           T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    out_dir.mkdir(parents=True, exist_ok=True)

    def forward(x: torch.Tensor, ckp: np.ndarray, tkp: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            if name == "pg2":
                hm, _ = model.pose_maps(tkp)  # (1, 17, H, W) on the device
                return model.generate(x, hm)[1]  # G2's output
            return model.generate(x, ckp, tkp)

    def frame(row: int) -> np.ndarray:  # (1, 17, 3): a row's keypoints in the model frame, cleaned
        return clean_keypoints(rescale_keypoints(pj.keypoints[row], pj.hw[row], (h, w)), thr)

    forward(torch.zeros(1, 3, h, w, device=device), frame(pj.jobs[0][0]), frame(pj.jobs[0][1]))  # warm-up
    sync(device)
    steps: dict[str, float] = {}
    t0, c0 = time.perf_counter(), cpu_time()
    for r, t in pj.jobs:
        t1 = time.perf_counter()
        img = PILImage.open(root / pj.paths[r]).convert("RGB")
        x = transform(img).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]
        ckp = clean_keypoints(rescale_keypoints(pj.keypoints[r], (img.height, img.width), (h, w)), thr)
        tkp = clean_keypoints(rescale_keypoints(pj.keypoints[t], pj.hw[t], (h, w)), thr)
        t2 = time.perf_counter()
        y = forward(x, ckp, tkp)
        sync(device)
        t3 = time.perf_counter()
        PILImage.fromarray(tensor2im(y)).save(out_dir / f"{Path(pj.paths[r]).stem}_to_{t}.png")
        t4 = time.perf_counter()
        for k, v in (("load_transform", t2 - t1), ("pose_maps_model", t3 - t2), ("tensor2im_save", t4 - t3)):
            steps[k] = steps.get(k, 0.0) + v
    seconds, cpu_s = time.perf_counter() - t0, cpu_time() - c0
    n = len(pj.jobs)
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "cpu_seconds": cpu_s, "steps_s": steps,
            "load_average": list(os.getloadavg())}


def arm_pose_model_only(gen, pj: PoseJobs, pixels: list[np.ndarray], ckp: np.ndarray, tkp: np.ndarray,
                        batch_size: int, device: torch.device) -> dict[str, Any]:
    """Arm C: the stage's model step (``PoseGuidedGenerator.generate_tensor``: keypoint cleaning,
    pose maps (Deformable GAN: part affines too), the generator, uint8) on tensors made beforehand,
    the stage's batches; no decode, encode or write."""
    batches, start = [], 0
    for chunk in pj.batches(batch_size):
        sl = slice(start, start + len(chunk))
        batches.append((gen.to_tensor(np.stack([pixels[r] for r, _ in chunk])), ckp[sl], tkp[sl]))
        start += len(chunk)
    x, c, t = batches[0]
    gen.generate_tensor(x if device.type == "cuda" else x[:1], c if device.type == "cuda" else c[:1],
                        t if device.type == "cuda" else t[:1])  # warm-up
    sync(device)
    timing: dict[str, float] = {}
    outs = []  # kept on the device until the clock stops
    c0 = cpu_time()
    with device_timer(device, timing, "model"):
        for x, c, t in batches:
            outs.append(gen.generate_tensor(x, c, t))
    cpu_s = cpu_time() - c0
    n = len(pj.jobs)
    return {"batch_size": batch_size, "images": n, "batches": len(batches), "seconds": timing["model"],
            "images_per_s": n / timing["model"], "cpu_seconds": cpu_s, "load_average": list(os.getloadavg()),
            "_fakes": [img for y in outs for img in y.cpu().numpy()]}


def pose_flops_per_image(gen_file: Path, cfg: PoseGenConfig) -> dict[str, Any]:
    """Forward FLOPs of one fake at batch 1 (the stage's model step on the CPU, fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    from reidaug.gen.poseguided import PoseGuidedGenerator

    gen = PoseGuidedGenerator(gen_file, torch.device("cpu"), amp=False, where="bench")
    x = torch.zeros(1, 3, cfg.height, cfg.width)
    kp = np.zeros((1, 17, 3), np.float32)  # the convolutions' FLOPs do not depend on the pose
    with FlopCounterMode(display=False) as fc:
        gen.generate_tensor(x, kp, kp)
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    what = "G1 + G2" if cfg.model == "pg2" else "G (both encoder streams, decoder)"
    return {"flops": int(fc.get_total_flops()), "by_op": by_op,
            "note": f"FlopCounterMode over {what}: convolutions, transposed convolutions and matmuls (PG2's FC "
                    "bottleneck; affine_grid), 2 FLOPs per multiply-add; pose maps, grid_sample (Deformable GAN's "
                    "warps), norms and activations not counted"}


def run_pose_section(device: torch.device, args: argparse.Namespace, cfg: PoseGenConfig, root: Path,
                     images: list[Crop], synthetic: bool, gen_file: Path, flops: int, tmp: Path) -> dict[str, Any]:
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.pipeline.runner import RunOptions, run_pipeline
    from reidaug.stages import STAGES

    cuda = device.type == "cuda"
    batch_sizes = args.gpu_batch_sizes if cuda else args.batch_sizes
    ceiling_dtype = torch.bfloat16 if cuda else torch.float32
    mm_n = args.gpu_matmul_n if cuda else args.matmul_n
    print(f"\n== {device.type.upper()}: {len(images)} images, {cfg.label}, batch sizes {batch_sizes}", flush=True)
    ceiling_before = matmul_ceiling(device, ceiling_dtype, mm_n, args.matmul_reps)
    print(f"matmul ceiling ({ceiling_before['dtype']}, n={mm_n}): {ceiling_before['gflops_median']:.0f} GFLOP/s",
          flush=True)

    work = tmp / f"pose-{device.type}"
    work.mkdir()
    manifest = write_manifest(work / f"manifest-{len(images)}.csv", images)
    pose_params, pose_note = pose_source(args.poses, root, images, synthetic, work)
    registry = {**STAGES, PUBLISH.name: PUBLISH}
    ws = work / "ws"
    setup = pose_pipeline_yaml(work, root, manifest, len(images), pose_params, gen_file,
                               "cuda" if cuda else "cpu", None)
    t0 = time.perf_counter()
    report = run_pipeline(build_graph(load_pipeline(setup), registry), ws,
                          ["ingest", "extract-pose", "bench-generators"],
                          RunOptions(scheduler="threads", workers=1, progress=False), registry=registry)
    pose_seconds = time.perf_counter() - t0
    entry = next(r.entry for r in report.results if r.name == "extract-pose")
    pj = pose_jobs(entry, args.target_poses, POSE_SCORE_THRESHOLD)
    if not pj.jobs:
        raise SystemExit(f"no (condition, target) pairs from {len(pj.paths)} images. Fix: --images >= 2.")
    conf = [int(x) for x in (pj.keypoints[..., 2] > POSE_SCORE_THRESHOLD).sum(-1)]
    print(f"poses: {pose_note}; {sum(c >= 8 for c in conf)}/{len(conf)} images with >= 8 keypoints above "
          f"{POSE_SCORE_THRESHOLD}; targets {[pj.paths[t] for t in pj.targets]}; {len(pj.jobs)} fakes per arm",
          flush=True)
    pipe = pose_pipeline_yaml(work, root, manifest, len(images), pose_params, gen_file, "cuda" if cuda else "cpu",
                              [pj.paths[t] for t in pj.targets])

    gen = PoseGuidedGenerator(gen_file, device, amp=True, where="bench")  # as the stage loads it
    pixels, ckp, tkp = pose_inputs(gen, root, pj)

    units = [("A", 1)] + [("C", bs) for bs in batch_sizes] + [("B", bs) for bs in batch_sizes]
    rng = np.random.default_rng(args.seed)
    rounds: list[dict[tuple[str, int], dict[str, Any]]] = []
    ceilings = [ceiling_before]
    fakes: dict[int, list[np.ndarray]] = {}
    model_fakes: dict[int, list[np.ndarray]] = {}
    stage_ran = False
    for r in range(args.rounds):
        res: dict[tuple[str, int], dict[str, Any]] = {}
        for j in rng.permutation(len(units)):  # a fresh order each round: drift on a shared machine hits all arms
            kind, bs = units[j]
            if kind == "A":
                row = arm_pose_reference(root, pj, gen_file, cfg, device, work / "reference_out")
            elif kind == "C":
                row = arm_pose_model_only(gen, pj, pixels, ckp, tkp, bs, device)
                out = row.pop("_fakes")
                if r == 0:
                    model_fakes[bs] = out
            else:
                row = arm_stage(pipe, ws, registry, bs, first=not stage_ran, stage="generate-poseguided")
                stage_ran = True
                out = row.pop("_fakes")
                if r == 0:
                    fakes[bs] = out
            res[(kind, bs)] = row
        ceilings.append(matmul_ceiling(device, ceiling_dtype, mm_n, args.matmul_reps))
        rounds.append(res)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k}{bs} {res[(k, bs)]['images_per_s']:.2f}" for k, bs in units) + " img/s", flush=True)
    ceiling = statistics.median(c["gflops_median"] for c in ceilings)
    ceiling_cpu = statistics.median(c["gflop_per_cpu_s_median"] for c in ceilings)
    names = {"A": "reference loop (pose-gan test.py)", "B": "generate-poseguided stage (runner)",
             "C": "model only (generate_tensor)"}
    arms = summarise_arms(units, rounds, names, flops, ceiling, ceiling_cpu, fakes, batch_sizes[0])
    keys = {row["key"] for res in rounds for (k, _), row in res.items() if k == "B"}
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "images": len(images), "fakes": len(pj.jobs), "batch_sizes": batch_sizes,
        "poses": {"source": pose_note, "extract_pose_seconds": pose_seconds,
                  "images_with_8_confident": sum(c >= 8 for c in conf), "score_threshold": POSE_SCORE_THRESHOLD,
                  "target_images": [pj.paths[t] for t in pj.targets],
                  "targets": f"generate-poseguided targets: list with the {len(pj.targets)} images of most confident "
                             "keypoints; every image rendered in each of those poses but its own "
                             "(min_target_keypoints 0: nothing dropped)"},
        "ceiling": {"measurements": ceilings, "gflops_used": ceiling, "gflop_per_cpu_s_used": ceiling_cpu,
                    "what": f"torch.matmul {mm_n}x{mm_n} {ceiling_before['dtype']}, {torch.get_num_threads()} "
                            f"threads; median of {args.matmul_reps} calls, measured before, after each round "
                            "and at the end; the median of those is used"},
        "rounds": args.rounds, "order": "a fresh random order of all arms in each round",
        "arms": arms, "stage_key_same_for_all_batch_sizes": len(keys) == 1,
        # the same pairs in the same order: B's PNG fakes against C's model outputs, per batch size
        "stage_fakes_vs_model_only": {str(bs): compare_fakes(model_fakes[bs], fakes[bs]) for bs in batch_sizes},
        "breakdown": None, "variants": [],
        "settings": {"stage": "generate-poseguided via run_pipeline (dask threads, 1 worker) on ingest (format "
                              "folder, CSV manifest) and extract-pose, models from the bench-only stage "
                              "bench-generators",
                     "reference": "A: per pair at batch 1, fp32, PIL read + bicubic resize, the model's own pose "
                                  "maps (and part affines) at batch 1, PNG written by PIL; fakes per second",
                     "amp": "B and C: bf16 autocast + channels_last on CUDA (the stage's default); no-op on the "
                            "CPU. A stays fp32 at batch 1",
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None},
    }


def main_poseguided(args: argparse.Namespace) -> int:
    """``--generator pg2 | deformable``: the pose-guided section(s) and their JSON entry."""
    cfg = PoseGenConfig(args.generator, args.ngf, args.height, args.width)
    load_before = list(os.getloadavg())
    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="reidaug-bench-generate-"))
    sections: dict[str, Any] = {}
    try:
        n_wanted = max(args.images, args.gpu_images if torch.cuda.is_available() and not args.no_gpu else 0)
        root, all_images, data_note = select_images(args.data, n_wanted, tmp)
        synthetic = root == tmp / "synthetic"
        if len(all_images) < args.images:
            print(f"note: only {len(all_images)} images available (asked for {args.images})")
        print(f"data: {data_note}")
        gen_file, checksum, n_params = write_pose_generator(tmp / "models", cfg, args.seed)
        fl = pose_flops_per_image(gen_file, cfg)
        fl["params"] = n_params
        print(f"generator {cfg.label}: {n_params / 1e6:.2f} M parameters, {fl['flops'] / 1e9:.2f} GFLOP/image "
              "(random init, written as train-posegan writes it)")
        if not args.no_cpu:
            sections["cpu"] = run_pose_section(torch.device("cpu"), args, cfg, root, all_images[:args.images], synthetic,
                                               gen_file, fl["flops"], tmp)
        if args.no_gpu:
            gpu_note = "skipped: --no-gpu"
        elif not torch.cuda.is_available():
            gpu_note = f"skipped: torch.cuda.is_available() is False (torch {torch.__version__})"
        else:
            gpu_note = "ran"
            sections["gpu"] = run_pose_section(torch.device("cuda"), args, cfg, root, all_images[:args.gpu_images],
                                               synthetic, gen_file, fl["flops"], tmp)
        print(f"GPU section: {gpu_note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for sec in sections.values():
        print_section(sec, fl["flops"])
    entry = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(load_before),
        "generator": {"model": cfg.model, "config": cfg.__dict__,
                      "weights": f"random init (train-posegan's build_model, seed {args.seed}); speed does not "
                                 "depend on the weights",
                      "score_threshold": POSE_SCORE_THRESHOLD, "checksum": checksum, "flops_per_image": fl},
        "data": data_note,
        "poses": next(iter(sections.values()))["poses"]["source"],
        "gpu": gpu_note,
        "sections": sections,
    }
    write_entry(Path(args.out), cfg.label, entry)
    return 0


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_section(sec: dict[str, Any], flops: int) -> None:
    unit, scale = ("TFLOP/s", 1e3) if sec["device"].startswith("cuda") else ("GFLOP/s", 1.0)
    c = sec["ceiling"]
    fakes = f" ({sec['fakes']} fakes)" if "fakes" in sec else ""
    print(f"\n{sec['device']} ({sec['device_name']}): {sec['images']} images{fakes}, {flops / 1e9:.2f} GFLOP/image; "
          f"ceiling {c['gflops_used'] / scale:.1f} {unit}, {c['gflop_per_cpu_s_used']:.1f} GFLOP per CPU-second "
          f"({c['what']}); {sec['rounds']} round(s): medians (min-max)")
    hdr = (f"{'arm':36s} {'batch':>5s} {'img/s':>19s} {'vs A':>6s} {unit:>7s} {'%ceil':>5s} | "
           f"{'CPU-s/img':>9s} {'vs A':>6s} {'%ceil':>5s} | {'overlap wall':>12s} {'cpu':>5s} {'busy':>5s}")
    print(hdr)
    print("-" * len(hdr))
    for a in sec["arms"]:
        rate = f"{a['images_per_s_median']:.2f} ({a['images_per_s_min']:.2f}-{a['images_per_s_max']:.2f})"
        extra = ""
        if a["arm"] == "B":
            extra = (f"{a['overlap_efficiency_stage_median']:12.2f} {a['cpu_seconds_vs_model_only_median']:5.2f} "
                     f"{a['model_busy_median']:5.2f}")
        print(f"{a['arm'] + ' ' + a['name']:36s} {a['batch_size']:5d} {rate:>19s} {a['vs_reference_median']:5.2f}x "
              f"{a['gflops'] / scale:7.1f} {a['percent_of_ceiling']:4.0f}% | {a['cpu_seconds_per_image_median']:9.3f} "
              f"{a['vs_reference_cpu_median']:5.2f}x {a['percent_of_ceiling_cpu']:4.0f}% | {extra}")
    for v in sec["variants"]:
        d = v["uint8_diff_to_fp32"]
        print(f"{'  ' + v['variant']:36s} {v['batch_size']:5d} {v['images_per_s']:19.2f} {'':6s} "
              f"{v['gflops'] / scale:7.1f} {v['percent_of_ceiling']:4.0f}% | {v['cpu_seconds_per_image']:9.3f} "
              f"{v['vs_fp32_cpu']:5.2f}x {v['percent_of_ceiling_cpu']:4.0f}% | vs fp32 (CPU-s); uint8 diff "
              f"max {d['max']} mean {d['mean']:.3f}")
    bd = sec["breakdown"]
    if bd:
        print(f"where the time goes (serial, batch {bd['batch_size']}, {bd['images']} images), ms/image: "
              + ", ".join(f"{k} {v:.2f}" for k, v in bd["ms_per_image"].items()))
        ob = bd["overlapped_bound"]
        print(f"  overlapped, the stage could reach at most {ob['images_per_s']:.1f} img/s "
              f"(limited by {ob['limiting_thread']})")
    print("B fakes vs the first batch size: " + "; ".join(
        f"bs {a['batch_size']}: {a['fakes_vs_first_batch_size'].get('identical_images')}/"
        f"{a['fakes_vs_first_batch_size'].get('images')} identical" for a in sec["arms"] if a["arm"] == "B"))
    if "stage_fakes_vs_model_only" in sec:
        print("B fakes vs C's outputs (same pairs): " + "; ".join(
            f"bs {bs}: {c.get('identical_images')}/{c.get('images')} identical, max diff {c.get('max_abs_diff')}"
            for bs, c in sec["stage_fakes_vs_model_only"].items()))


def machine_info(load_before: list[float]) -> dict[str, Any]:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "cuda": torch.cuda.is_available(),
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "note": "shared machine: other jobs (a CycleGAN training run, test suites) ran at the same "
                    "time; arms are interleaved by batch size and ratios are taken within one run"}


def write_entry(out: Path, label: str, entry: dict[str, Any]) -> None:
    """Adds (or replaces) run ``label`` in the results file; every other run is kept."""
    out.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"benchmark": "generate", "runs": {}}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(out.read_text())
        if isinstance(old.get("runs"), dict):
            doc["runs"] = old["runs"]
    doc["runs"][label] = entry
    with atomic_path(out) as tmp_out:
        tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out} (entry {label})")


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected a comma list of batch sizes >= 1, found {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generator", choices=("camstyle", "pg2", "deformable"), default="camstyle",
                    help="camstyle: generate-camstyle (CycleGAN); pg2 / deformable: generate-poseguided")
    ap.add_argument("--images", type=int, default=64, help="how many crops (CUHK01: the first N of the manifest)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="CUHK01 folder, or 'synthetic'")
    ap.add_argument("--ngf", type=int, default=None, help="default camstyle 64, pg2 128, deformable 64 (the papers')")
    ap.add_argument("--n-blocks", type=int, default=9, help="camstyle only: ResNet blocks")
    ap.add_argument("--height", type=int, default=None, help="default camstyle 256, pg2 / deformable 128")
    ap.add_argument("--width", type=int, default=None, help="default camstyle 128, pg2 / deformable 64")
    ap.add_argument("--poses", choices=("auto", "movenet", "mediapipe", "synthetic-gt"), default="auto",
                    help="pg2 / deformable: keypoints through extract-pose (auto: synthetic ground truth on the "
                         "synthetic data, else movenet when its .tflite is there, else mediapipe)")
    ap.add_argument("--target-poses", type=int, default=2,
                    help="pg2 / deformable: target poses (generate-poseguided targets: list); fakes = images x K - K")
    ap.add_argument("--seed", type=int, default=0, help="generator weights")
    ap.add_argument("--rounds", type=int, default=2, help="every arm once per round, in a fresh random order")
    ap.add_argument("--batch-sizes", type=parse_sizes, default=None, help="CPU (default 1,8,16,32)")
    ap.add_argument("--gpu-batch-sizes", type=parse_sizes, default=None, help="GPU (default 1,8,16,32,64,128)")
    ap.add_argument("--gpu-images", type=int, default=1024, help="images for the GPU section")
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--gpu-matmul-n", type=int, default=8192)
    ap.add_argument("--matmul-reps", type=int, default=10)
    ap.add_argument("--variant-batch", type=int, default=8)
    ap.add_argument("--variant-images", type=int, default=8, help="0: no CPU variant rows")
    ap.add_argument("--variant-rounds", type=int, default=2)
    ap.add_argument("--breakdown-images", type=int, default=16, help="CPU; 0: all (the GPU section uses all)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section even with CUDA")
    ap.add_argument("--no-cpu", action="store_true",
                    help="skip the CPU section (a lent GPU machine: the CPU rows come from the CPU machine)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny ceiling, batch sizes 1,2, 1 round")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "generate.json"))
    args = ap.parse_args(argv)
    if args.no_cpu and (args.no_gpu or not torch.cuda.is_available()):
        ap.error("--no-cpu leaves nothing to run: " + ("--no-gpu is set too" if args.no_gpu else
                 f"torch.cuda.is_available() is False (torch {torch.__version__})"))
    if args.quick:
        args.matmul_n, args.gpu_matmul_n, args.matmul_reps = 256, 1024, 3
        args.variant_rounds, args.variant_batch, args.rounds = 1, 2, 1
        args.variant_images = min(args.variant_images, 4)
        args.breakdown_images = min(args.breakdown_images or 4, 4)
        args.gpu_images = min(args.gpu_images, 16)
        args.batch_sizes = args.batch_sizes or [1, 2]
        args.gpu_batch_sizes = args.gpu_batch_sizes or [1, 2]
    args.batch_sizes = args.batch_sizes or [1, 8, 16, 32]
    args.gpu_batch_sizes = args.gpu_batch_sizes or [1, 8, 16, 32, 64, 128]
    camstyle = args.generator == "camstyle"
    if args.ngf is None:
        args.ngf = {"camstyle": 64, "pg2": 128, "deformable": 64}[args.generator]
    if args.height is None:
        args.height = 256 if camstyle else 128
    if args.width is None:
        args.width = 128 if camstyle else 64
    if camstyle and (args.height % 4 or args.width % 4):
        ap.error(f"--height and --width must be multiples of 4, found {args.height} x {args.width}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not camstyle:
        from reidaug.gen.poseguided import size_problem

        problem = size_problem(args.generator, args.height, args.width,
                               PoseGenConfig(args.generator, args.ngf, args.height, args.width).d_layers)
        if problem:
            ap.error(f"--height x --width = {args.height} x {args.width} does not fit {args.generator}: {problem}")
        if args.target_poses < 1:
            ap.error(f"--target-poses must be >= 1, found {args.target_poses}")
        return main_poseguided(args)

    cfg = GenConfig(args.ngf, args.n_blocks, args.height, args.width)
    load_before = list(os.getloadavg())
    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="reidaug-bench-generate-"))
    sections: dict[str, Any] = {}
    try:
        n_wanted = max(args.images, args.gpu_images if torch.cuda.is_available() and not args.no_gpu else 0)
        root, all_images, data_note = select_images(args.data, n_wanted, tmp)
        if len(all_images) < args.images:
            print(f"note: only {len(all_images)} images available (asked for {args.images})")
        print(f"data: {data_note}")
        gen_file, checksum = write_generator(tmp / "models", cfg, args.seed)
        fl = flops_per_image(cfg)
        print(f"generator {cfg.label}: {fl['params'] / 1e6:.2f} M parameters, {fl['flops'] / 1e9:.2f} GFLOP/image "
              "(random init, written as train-camstyle writes it)")
        if not args.no_cpu:
            sections["cpu"] = run_section(torch.device("cpu"), args, cfg, root, all_images[:args.images], gen_file,
                                          fl["flops"], tmp)
        if args.no_gpu:
            gpu_note = "skipped: --no-gpu"
        elif not torch.cuda.is_available():
            gpu_note = f"skipped: torch.cuda.is_available() is False (torch {torch.__version__})"
        else:
            gpu_note = "ran"
            sections["gpu"] = run_section(torch.device("cuda"), args, cfg, root, all_images[:args.gpu_images],
                                          gen_file, fl["flops"], tmp)
        print(f"GPU section: {gpu_note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for sec in sections.values():
        print_section(sec, fl["flops"])
    entry = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(load_before),
        "generator": {"config": cfg.__dict__, "weights": "random init (CycleGAN init_weights, seed "
                                                         f"{args.seed}); speed does not depend on the weights",
                      "checksum": checksum, "flops_per_image": fl},
        "data": data_note,
        "gpu": gpu_note,
        "sections": sections,
    }
    write_entry(Path(args.out), cfg.label, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
