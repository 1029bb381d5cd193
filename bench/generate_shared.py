"""The shared tail of ``bench/generate.py``: what its CamStyle and pose-guided halves both use.

Not a script (``bench/generate.py`` imports it). In order of use:
- inputs: the crops (:func:`select_images`), the manifest ingest reads, the bench-only stage
  ``bench-generators`` that publishes a generator file as a ``models`` output, the pipeline YAML
  head, the generator file itself (:func:`save_generator`, as the training stages write it);
- timing: CPU seconds, CUDA events, the ``torch.matmul`` ceiling, FLOPs of a forward;
- arms common to both families: the reference loop's skeleton (A), the model-only loop (C), the
  stage through the runner (B), fakes compared;
- :class:`DeviceSection`: one device's interleaved rounds, ceilings and summary;
- :func:`run_benchmark`: data, generator file, CPU / GPU sections, tables and the JSON entry.
A family (``generate_camstyle.FAMILY``, ``generate_poseguided.FAMILY``) supplies the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import resource
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from common import SHARED, add_run, command_line, cpu_model, load_average, machine, now_utc
from reidaug.io.atomic import atomic_path
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import StageContext, read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, RunReport, run_pipeline
from reidaug.pipeline.stage import FileParam, Params, StageSpec

DEFAULT_DATA = SHARED / "data" / "cuhk01"
Units = list[tuple[str, int]]  # (arm, batch size)
Row = dict[str, Any]  # one arm's measurements in one round


# --------------------------------------------------------------------------------------------
# Inputs: images, the generator file, the bench-only stage that publishes it
# --------------------------------------------------------------------------------------------
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


def save_generator(models_dir: Path, name: str, state: dict[str, Any]) -> tuple[Path, str]:
    """``state`` with its ``checksum`` (as the training stages add it) saved as ``NAME.pt``;
    returns (path, checksum)."""
    from reidaug.io.checkpoint import state_checksum
    from reidaug.io.checkpoint import save_torch

    state["checksum"] = state_checksum(state["weights"])
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.pt"
    save_torch(path, state)
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


#: Bench-only source stage: publishes a generator file as a ``models`` output (what a training
#: stage's output looks like to its generation stage). Keyed by the file's sha256.
PUBLISH = StageSpec(
    name="bench-generators", version=1, description="bench only: a generator file as a models output",
    params=PublishParams, run_chunk=_publish_chunk, outputs={"models": "models", "chunks": "chunks"},
)


def pipeline_yaml(path: Path, name: str, root: Path, manifest: Path, n: int, generator: Path,
                  middle: str = "", tail: str = "") -> Path:
    """``ingest`` of the manifest, ``middle`` (more stages), ``bench-generators`` with the
    generator file, then ``tail`` (the generation stage); written to ``path``."""
    q = json.dumps  # JSON strings are YAML double-quoted scalars
    path.write_text(
        f"name: {name}\n"
        "execution: {scheduler: threads, workers: 1}\n"
        "stages:\n"
        "  ingest:\n"
        "    params:\n"
        f"      format: folder\n      root: {q(str(root))}\n"
        f"      options: {{manifest: {q(str(manifest))}, camera_base: 1}}\n"
        f"      chunk_size: {max(n, 1)}\n"
        f"{middle}"
        "  bench-generators:\n"
        f"    params: {{generator: {q(str(generator))}}}\n"
        f"{tail}"
    )
    return path


def decode_resized(root: Path, rels: Iterable[str], h: int, w: int) -> list[np.ndarray]:
    """The pixels a generation stage feeds its model: stored bytes decoded, cv2 bilinear resize."""
    import cv2

    from reidaug.data.images import decode_stored

    return [cv2.resize(decode_stored((root / rel).read_bytes()), (w, h), interpolation=cv2.INTER_LINEAR)
            for rel in rels]


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
            "gflop_per_cpu_s_median": statistics.median(per_cpu_s), "load_average": load_average()}


def count_flops(forward: Callable[[], Any], note: str) -> dict[str, Any]:
    """FLOPs of one call of ``forward`` (``FlopCounterMode``: total and by operator)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        forward()
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return {"flops": int(fc.get_total_flops()), "by_op": by_op, "note": note}


# --------------------------------------------------------------------------------------------
# Arms both families share
# --------------------------------------------------------------------------------------------
def tensor2im(image_tensor: torch.Tensor) -> np.ndarray:
    """CycleGAN's ``util.tensor2im``: first image, ``(x + 1) / 2 * 255``, truncated to uint8."""
    image_numpy = image_tensor[0].cpu().float().numpy()
    if image_numpy.shape[0] == 1:
        image_numpy = np.tile(image_numpy, (3, 1, 1))
    image_numpy = (np.transpose(image_numpy, (1, 2, 0)) + 1) / 2.0 * 255.0
    return image_numpy.astype(np.uint8)


def reference_transform(h: int, w: int) -> Callable:
    """The references' loader: PIL bicubic resize to ``h x w``, ``ToTensor``, ``Normalize(0.5, 0.5)``."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC),
                      T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def reference_loop(items: list[Any], load: Callable[[Any], Any], forward: Callable[[Any], torch.Tensor],
                   save_as: Callable[[Any], Path], device: torch.device, model_step: str) -> Row:
    """Arm A's timed loop, one item at a time as a reference ``test.py``: ``load`` (read and make
    the inputs), ``forward`` under ``no_grad``, ``tensor2im`` and a PIL PNG save to ``save_as``;
    the three steps' seconds are summed separately (the model's as ``model_step``)."""
    from PIL import Image as PILImage

    steps: dict[str, float] = {}
    t0, c0 = time.perf_counter(), cpu_time()
    for item in items:
        t1 = time.perf_counter()
        inputs = load(item)
        t2 = time.perf_counter()
        with torch.no_grad():
            y = forward(inputs)
        sync(device)
        t3 = time.perf_counter()
        PILImage.fromarray(tensor2im(y)).save(save_as(item))
        t4 = time.perf_counter()
        for k, v in (("load_transform", t2 - t1), (model_step, t3 - t2), ("tensor2im_save", t4 - t3)):
            steps[k] = steps.get(k, 0.0) + v
    seconds, cpu_s = time.perf_counter() - t0, cpu_time() - c0
    n = len(items)
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "cpu_seconds": cpu_s, "steps_s": steps,
            "load_average": load_average()}


def model_only(step: Callable[..., torch.Tensor], batches: list[tuple], warm_up: list[tuple], n: int,
               batch_size: int, device: torch.device, keep: bool) -> Row:
    """Arm C's timed loop: ``step(*batch)`` over the stage's batches (tensors made beforehand),
    after ``step(*args)`` for each ``warm_up``; with ``keep`` the outputs, held on the device
    until the clock stops, come back as ``_fakes`` (uint8 ``(H, W, 3)`` each)."""
    for args in warm_up:
        step(*args)
    sync(device)
    timing: dict[str, float] = {}
    outs = []
    c0 = cpu_time()
    with device_timer(device, timing, "model"):
        for batch in batches:
            y = step(*batch)
            if keep:
                outs.append(y)
    row = {"batch_size": batch_size, "images": n, "batches": len(batches), "seconds": timing["model"],
           "images_per_s": n / timing["model"], "cpu_seconds": cpu_time() - c0, "load_average": load_average()}
    if keep:
        row["_fakes"] = [img for y in outs for img in y.cpu().numpy()]
    return row


def compare_fakes(ref: list[np.ndarray], other: list[np.ndarray]) -> dict[str, Any]:
    if len(ref) != len(other):
        return {"same_count": False}
    diffs = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(ref, other)]
    return {"same_count": True, "identical_images": sum(d == 0 for d in diffs), "images": len(diffs),
            "max_abs_diff": max(diffs, default=0)}


def summarise_arms(units: Units, rounds: list[dict[tuple[str, int], Row]], names: dict[str, str], flops: int,
                   ceiling: float, ceiling_cpu: float, fakes: dict[int, list[np.ndarray]], first_bs: int
                   ) -> list[dict[str, Any]]:
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
class DeviceSection:
    """One device's interleaved rounds of arms A (reference, batch 1), C and B (each batch size),
    the matmul ceilings around them, and the summary; a family runs its own arms through it."""

    def __init__(self, device: torch.device, args: argparse.Namespace, label: str, images: list[Crop],
                 work: Path) -> None:
        from reidaug.stages import STAGES

        self.device, self.args, self.images = device, args, images
        self.cuda = device.type == "cuda"
        self.batch_sizes: list[int] = args.gpu_batch_sizes if self.cuda else args.batch_sizes
        self.mm_dtype = torch.bfloat16 if self.cuda else torch.float32
        self.mm_n: int = args.gpu_matmul_n if self.cuda else args.matmul_n
        print(f"\n== {device.type.upper()}: {len(images)} images, {label}, batch sizes {self.batch_sizes}",
              flush=True)
        self.ceilings: list[dict[str, Any]] = []
        first = self.measure_ceiling()
        print(f"matmul ceiling ({first['dtype']}, n={self.mm_n}): {first['gflops_median']:.0f} GFLOP/s", flush=True)
        self.work = work
        work.mkdir()
        self.manifest = write_manifest(work / f"manifest-{len(images)}.csv", images)
        self.registry = {**STAGES, PUBLISH.name: PUBLISH}
        self.ws = work / "ws"
        self.units: Units = [("A", 1)] + [("C", bs) for bs in self.batch_sizes] + [("B", bs) for bs in self.batch_sizes]
        self.rounds: list[dict[tuple[str, int], Row]] = []
        self.fakes: dict[tuple[str, int], list[np.ndarray]] = {}  # (arm, batch size) -> round 1's outputs
        self.stage_ran = False

    def measure_ceiling(self) -> dict[str, Any]:
        c = matmul_ceiling(self.device, self.mm_dtype, self.mm_n, self.args.matmul_reps)
        self.ceilings.append(c)
        return c

    def run_stages(self, pipe: Path, targets: list[str]) -> RunReport:
        """A plain run of ``targets`` of ``pipe`` (the setup: ingest, the generator file, ...)."""
        return run_pipeline(build_graph(load_pipeline(pipe), self.registry), self.ws, targets,
                            RunOptions(scheduler="threads", workers=1, progress=False))

    def stage_arm(self, pipe: Path, stage: str, batch_size: int) -> Row:
        """Arm B: generation stage ``stage`` through the pipeline runner at ``batch_size``;
        ``batch_size`` is not in the stage's key, so every run after the first is forced."""
        from reidaug.data.images import decode_stored

        graph = build_graph(load_pipeline(pipe, overrides=[f"stages.{stage}.params.batch_size={batch_size}"]),
                            self.registry)
        force = frozenset({stage}) if self.stage_ran else frozenset()
        self.stage_ran = True
        opts = RunOptions(scheduler="threads", workers=1, progress=False, force=force)
        t0, c0 = time.perf_counter(), cpu_time()
        report = run_pipeline(graph, self.ws, [stage], opts)
        total, cpu_s = time.perf_counter() - t0, cpu_time() - c0
        res = next(r for r in report.results if r.name == stage)
        meta = json.loads((res.entry / "meta.json").read_text())
        loop = {"wall": 0.0, "prepare": 0.0, "compute": 0.0, "finish": 0.0}
        fakes: list[np.ndarray] = []
        for i in range(int(meta["num_chunks"])):
            arrays, _ = read_h5_chunk(res.entry / "chunks" / f"{i:05d}.h5")
            for k in loop:  # each chunk's timings: its run record in meta.json, not the chunk file
                loop[k] += float(meta["chunk_stats"][i]["seconds"][k])
            fakes += [decode_stored(b) for b in arrays.get("image", [])]
        n = len(fakes)
        return {"batch_size": batch_size, "images": n, "key": res.key, "action": res.action,
                "stage_seconds": res.seconds, "run_pipeline_seconds": total, "cpu_seconds": cpu_s,
                "images_per_s": n / res.seconds, "loop_seconds": loop, "loop_images_per_s": n / loop["wall"],
                "model_busy": meta["summary"].get("model_busy"), "timings": meta["timings"],
                "load_average": load_average(), "_fakes": fakes}

    def run_rounds(self, arm: Callable[[str, int], Row]) -> None:
        """``--rounds`` rounds, each every unit once in a fresh random order (drift on a shared
        machine hits all arms alike), a ceiling after each; round 1's ``_fakes`` are kept."""
        rng = np.random.default_rng(self.args.seed)
        for r in range(self.args.rounds):
            res: dict[tuple[str, int], Row] = {}
            for j in rng.permutation(len(self.units)):
                kind, bs = self.units[j]
                row = arm(kind, bs)
                out = row.pop("_fakes", None)
                if r == 0 and out is not None:
                    self.fakes[(kind, bs)] = out
                res[(kind, bs)] = row
            self.measure_ceiling()
            self.rounds.append(res)
            print(f"round {r + 1}/{self.args.rounds}: " + ", ".join(
                f"{k}{bs} {res[(k, bs)]['images_per_s']:.2f}" for k, bs in self.units) + " img/s", flush=True)

    def summary(self, names: dict[str, str], flops: int, settings: dict[str, Any],
                breakdown: dict[str, Any] | None = None, variants: list[dict[str, Any]] | None = None,
                **extra: Any) -> dict[str, Any]:
        """The section's JSON: a last ceiling, then the arms (and CPU variants) against the
        median of all ceilings; ``extra`` keys are the family's own."""
        self.measure_ceiling()
        ceiling = statistics.median(c["gflops_median"] for c in self.ceilings)
        ceiling_cpu = statistics.median(c["gflop_per_cpu_s_median"] for c in self.ceilings)
        stage_fakes = {bs: out for (kind, bs), out in self.fakes.items() if kind == "B"}
        arms = summarise_arms(self.units, self.rounds, names, flops, ceiling, ceiling_cpu, stage_fakes,
                              self.batch_sizes[0])
        for v in variants or []:
            v["gflops"] = flops * v["images_per_s"] / 1e9
            v["percent_of_ceiling"] = 100 * v["gflops"] / ceiling
            v["gflop_per_cpu_s"] = flops / v["cpu_seconds_per_image"] / 1e9
            v["percent_of_ceiling_cpu"] = 100 * v["gflop_per_cpu_s"] / ceiling_cpu
        keys = {row["key"] for res in self.rounds for (k, _), row in res.items() if k == "B"}
        first = self.ceilings[0]
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.cuda else cpu_model(),
            "images": len(self.images), "batch_sizes": self.batch_sizes,
            "ceiling": {"measurements": self.ceilings, "gflops_used": ceiling, "gflop_per_cpu_s_used": ceiling_cpu,
                        "what": f"torch.matmul {self.mm_n}x{self.mm_n} {first['dtype']}, {torch.get_num_threads()} "
                                f"threads; median of {self.args.matmul_reps} calls, measured before, after each "
                                "round and at the end; the median of those is used"},
            "rounds": self.args.rounds, "order": "a fresh random order of all arms in each round",
            "arms": arms, "stage_key_same_for_all_batch_sizes": len(keys) == 1,
            "breakdown": breakdown, "variants": variants or [],
            "settings": settings | {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if self.cuda else None},
            **extra,
        }


# --------------------------------------------------------------------------------------------
# The run: data, generator, sections, report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """What a generator family adds to the shared run (one per ``--generator`` kind)."""

    trainer: str  # the training stage whose file format the generator file follows
    #: the generator's configuration from the arguments (a frozen dataclass with a ``label``)
    config: Callable[[argparse.Namespace], Any]
    #: (models folder, config, seed) -> (generator file, checksum, FLOPs per image with "params")
    prepare: Callable[[Path, Any, int], tuple[Path, str, dict[str, Any]]]
    #: (device, args, config, data root, images, synthetic?, generator file, FLOPs, temp folder) -> section
    run_section: Callable[..., dict[str, Any]]
    #: (config, seed, checksum, FLOPs) -> the entry's "generator"
    describe: Callable[[Any, int, str, dict[str, Any]], dict[str, Any]]
    #: sections -> extra keys of the entry
    entry_extra: Callable[[dict[str, Any]], dict[str, Any]] = lambda sections: {}


def run_benchmark(args: argparse.Namespace, family: Family) -> int:
    """Both sections of one generator configuration, their tables and its JSON entry."""
    cfg = family.config(args)
    load_before = load_average()
    started = now_utc()
    tmp = Path(tempfile.mkdtemp(prefix="reidaug-bench-generate-"))
    sections: dict[str, Any] = {}
    try:
        n_wanted = max(args.images, args.gpu_images if torch.cuda.is_available() and not args.no_gpu else 0)
        root, all_images, data_note = select_images(args.data, n_wanted, tmp)
        synthetic = root == tmp / "synthetic"
        if len(all_images) < args.images:
            print(f"note: only {len(all_images)} images available (asked for {args.images})")
        print(f"data: {data_note}")
        gen_file, checksum, fl = family.prepare(tmp / "models", cfg, args.seed)
        print(f"generator {cfg.label}: {fl['params'] / 1e6:.2f} M parameters, {fl['flops'] / 1e9:.2f} GFLOP/image "
              f"(random init, written as {family.trainer} writes it)")
        if not args.no_cpu:
            sections["cpu"] = family.run_section(torch.device("cpu"), args, cfg, root, all_images[:args.images],
                                                 synthetic, gen_file, fl["flops"], tmp)
        if args.no_gpu:
            gpu_note = "skipped: --no-gpu"
        elif not torch.cuda.is_available():
            gpu_note = f"skipped: torch.cuda.is_available() is False (torch {torch.__version__})"
        else:
            gpu_note = "ran"
            sections["gpu"] = family.run_section(torch.device("cuda"), args, cfg, root,
                                                 all_images[:args.gpu_images], synthetic, gen_file, fl["flops"], tmp)
        print(f"GPU section: {gpu_note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for sec in sections.values():
        print_section(sec, fl["flops"])
    entry = {
        "date": started,
        "command": command_line(),
        "machine": machine(
            cpu=cpu_model(), torch=torch.__version__, torch_threads=torch.get_num_threads(),
            cuda=torch.cuda.is_available(), load_average_before=load_before, load_average_after=load_average(),
            note="shared machine: other jobs (a CycleGAN training run, test suites) ran at the same time; arms "
                 "are interleaved by batch size and ratios are taken within one run"),
        "generator": family.describe(cfg, args.seed, checksum, fl),
        "data": data_note,
        "gpu": gpu_note,
        "sections": sections,
        **family.entry_extra(sections),
    }
    add_run(args.out, "generate", cfg.label, entry)
    return 0


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
