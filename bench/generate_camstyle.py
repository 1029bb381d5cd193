"""``bench/generate.py --generator camstyle``: generate-camstyle against CycleGAN's ``test.py``.

Not a script (``bench/generate.py`` runs it). The generator file is a randomly initialised
CycleGAN (speed does not depend on the weights) written the way ``train-camstyle`` writes it
(``generator_state`` plus its ``checksum``) into a temp models folder.

CPU (always):
- **A, reference loop**: per image, as CycleGAN's ``test.py`` (batch 1, no loader workers):
  PIL ``open().convert("RGB")``, ``Resize((H, W), BICUBIC)``, ``ToTensor``,
  ``Normalize(0.5, 0.5)``, forward under ``no_grad``, ``util.tensor2im``
  (``(x + 1) / 2 * 255`` truncated to uint8), PIL save as PNG into a temp folder (the fake
  only; ``test.py`` also saves the real image).
- **B, reidaug**: the ``generate-camstyle`` stage through the pipeline runner (dask threads,
  1 worker) on an ``ingest`` of the same images (format ``folder`` with a CSV manifest written
  outside the dataset folder), its models from the bench-only stage ``bench-generators``.
  Reported: the whole stage (plan with its weight load, the chunk, finalize, commit) and the
  overlapped decode / model / encode loop inside the chunk (the chunk's own ``seconds.wall``).
  The fakes of every batch size are compared with those of the first.
- **C, model only**: ``CamStyleTranslator.translate_tensor`` (what the stage's model step
  calls) on input tensors made beforehand, the same batches as the stage; no decode, encode or
  write. Overlap efficiency = C's seconds / B's seconds for the same images and batch size
  (1.0: loading, encoding and writing fully hidden behind the model), in wall time and in CPU
  time; the stage's own "model busy" (model seconds / loop wall) is reported too.
- FLOPs per image: ``FlopCounterMode`` on the generator at H x W (convolutions, 2 FLOPs per
  multiply-add).
- Extra model-only rows at one batch size, clearly not the stage's path: channels_last, bf16
  autocast (changes the outputs: the uint8 difference to fp32 is reported), oneDNN off.
- Where the time goes: one serial pass over the images (CPU: the first ``--breakdown-images``)
  at the largest batch size, each step timed alone: read + decode + resize, to tensor
  (+ host-to-device on CUDA), model, device-to-host, PNG encode, HDF5 write; and the most the
  overlapped stage could reach given its slowest thread.

A batch holds one (source, target) pair, so with two cameras a batch size above ``--images / 2``
is not reached (a warning says so). GPU: A, B, C and the breakdown again on ``cuda`` (the stage's
bf16 autocast + channels_last; A stays fp32 at batch 1 as ``test.py``). JSON entry
``ngf<N>-b<blocks>-<H>x<W>``.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

import generate_shared as shared
from reidaug.pipeline.context import write_h5_chunk

MODEL_JOB = ("cyclegan", (0, 1))  # one CycleGAN between camera 0 and camera 1


@dataclass(frozen=True)
class GenConfig:
    ngf: int
    n_blocks: int
    height: int
    width: int

    @property
    def label(self) -> str:
        return f"ngf{self.ngf}-b{self.n_blocks}-{self.height}x{self.width}"


def check_args(args: argparse.Namespace) -> str | None:
    """Why the sizes do not fit the ResNet generator (two stride-2 levels), or None."""
    if args.height % 4 or args.width % 4:
        return f"--height and --width must be multiples of 4, found {args.height} x {args.width}"
    return None


def prepare(models_dir: Path, cfg: GenConfig, seed: int) -> tuple[Path, str, dict[str, Any]]:
    """A random-init CycleGAN's generators in train-camstyle's file format, and the FLOPs of one
    generator at batch 1 (on the meta device: nothing is computed)."""
    from reidaug.gen.camstyle import ModelJob, generator_state
    from reidaug.models.cyclegan import CycleGAN, CycleGANConfig, ResnetGenerator

    # Only the generators are saved; the discriminators just have to fit tiny test sizes.
    n_layers_d = 3 if min(cfg.height, cfg.width) >= 24 else 1
    model = CycleGAN(CycleGANConfig(ngf=cfg.ngf, n_blocks=cfg.n_blocks, image_height=cfg.height,
                                    image_width=cfg.width, n_layers_d=n_layers_d, seed=seed))
    job = ModelJob(*MODEL_JOB)
    path, checksum = shared.save_generator(models_dir, job.name, generator_state(model, job))

    with torch.device("meta"):
        net = ResnetGenerator(3, 3, cfg.ngf, cfg.n_blocks)
        x = torch.zeros(1, 3, cfg.height, cfg.width)
    fl = shared.count_flops(lambda: net(x), "FlopCounterMode: convolutions and transposed convolutions, 2 FLOPs "
                                            "per multiply-add; instance norm, ReLU, padding and tanh not counted")
    fl["params"] = sum(p.numel() for p in net.parameters())
    return path, checksum, fl


def describe(cfg: GenConfig, seed: int, checksum: str, fl: dict[str, Any]) -> dict[str, Any]:
    return {"config": cfg.__dict__, "weights": f"random init (CycleGAN init_weights, seed {seed}); speed does not "
                                               "depend on the weights",
            "checksum": checksum, "flops_per_image": fl}


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
    from reidaug.io.checkpoint import load_torch
    from reidaug.models.cyclegan import ResnetGenerator

    state = load_torch(gen_file, "bench")
    cfg = state["config"]
    nets = {}
    for cam, name in ((0, "G_AB"), (1, "G_BA")):  # camera 0 -> 1 is G_AB
        net = ResnetGenerator(3, 3, cfg["ngf"], cfg["n_blocks"], cfg["norm"], cfg["padding"])
        net.load_state_dict({k[len(name) + 1:]: v for k, v in state["weights"].items() if k.startswith(name + ".")})
        nets[cam] = net.to(device).eval()
    return nets


def arm_reference(root: Path, images: list[shared.Crop], gen_file: Path, cfg: GenConfig, device: torch.device,
                  out_dir: Path) -> dict[str, Any]:
    """Arm A: CycleGAN's test loop, one image at a time, PIL in and out."""
    from PIL import Image as PILImage

    nets = load_reference_nets(gen_file, device)
    transform = shared.reference_transform(cfg.height, cfg.width)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():  # warm-up, one image per direction
        for net in nets.values():
            net(torch.zeros(1, 3, cfg.height, cfg.width, device=device))
    shared.sync(device)

    def load(im: shared.Crop) -> tuple[torch.nn.Module, torch.Tensor]:
        img = PILImage.open(root / im.rel).convert("RGB")
        return nets[im.cam], transform(img).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]

    return shared.reference_loop(images, load, lambda net_x: net_x[0](net_x[1]),
                                 lambda im: out_dir / f"{Path(im.rel).stem}_fake_B.png", device, "model")


def arm_model_only(translator, pixels: list[np.ndarray], cams: list[int], batch_size: int,
                   device: torch.device) -> dict[str, Any]:
    """Arm C: the translator's model step on tensors made beforehand, the stage's batches."""
    batches = [(translator.to_tensor(np.stack([pixels[i] for i in rows])), s, t)
               for s, t, rows in stage_batches(cams, batch_size)]
    warm = {(s, t): x for x, s, t in batches}  # each direction once; the whole batch on a GPU
    warm_up = [(x if device.type == "cuda" else x[:1], s, t) for (s, t), x in warm.items()]
    return shared.model_only(translator.translate_tensor, batches, warm_up, len(cams), batch_size, device, keep=False)


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
                t0, c0 = time.perf_counter(), shared.cpu_time()
                for s, t, x in xs:
                    y = nets[(s, t)](x)
                    outs.append(y.float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8))
                seconds = time.perf_counter() - t0
                cpu_s.append(shared.cpu_time() - c0)
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


def arm_breakdown(translator, root: Path, images: list[shared.Crop], batch_size: int, device: torch.device,
                  tmp: Path) -> dict[str, Any]:
    """One serial pass, the stage's steps each timed alone (nothing overlaps)."""
    from reidaug.data.images import encode_png

    h, w = translator.size
    cams = [im.cam for im in images]
    steps: dict[str, float] = {}
    encoded: list[bytes] = []
    for s, t, rows in stage_batches(cams, batch_size):
        t0 = time.perf_counter()
        pixels = shared.decode_resized(root, (images[i].rel for i in rows), h, w)
        steps["read_decode_resize"] = steps.get("read_decode_resize", 0.0) + time.perf_counter() - t0
        with shared.device_timer(device, steps, "to_tensor_h2d"):
            x = translator.to_tensor(np.stack(pixels))
        with shared.device_timer(device, steps, "model"):
            y = translator.translate_tensor(x, s, t)
        with shared.device_timer(device, steps, "d2h"):
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


# --------------------------------------------------------------------------------------------
# One device's section
# --------------------------------------------------------------------------------------------
def run_section(device: torch.device, args: argparse.Namespace, cfg: GenConfig, root: Path, images: list[shared.Crop],
                synthetic: bool, gen_file: Path, flops: int, tmp: Path) -> dict[str, Any]:
    from reidaug.gen.camstyle import CamStyleTranslator

    sec = shared.DeviceSection(device, args, cfg.label, images, tmp / device.type)
    per_pair = max(Counter(im.cam for im in images).values(), default=0)
    if max(sec.batch_sizes) > per_pair:
        print(f"warning: a batch holds one camera pair, at most {per_pair} images here; batch sizes above that "
              f"run as {per_pair}. Use --images >= {2 * max(sec.batch_sizes)}.", flush=True)
    tail = ("  generate-camstyle:\n"
            f"    params: {{batch_size: 1, device: {'cuda' if sec.cuda else 'cpu'}, amp: true}}\n"
            "    inputs: {dataset: ingest.dataset, models: bench-generators.models}\n")
    pipe = shared.pipeline_yaml(sec.work / f"pipeline-{device.type}.yaml", "bench-generate", root, sec.manifest,
                                len(images), gen_file, tail=tail)
    sec.run_stages(pipe, ["ingest", "bench-generators"])

    translator = CamStyleTranslator(gen_file.parent, device, amp=True)
    cams = [im.cam for im in images]
    pixels = shared.decode_resized(root, (im.rel for im in images), cfg.height, cfg.width)

    def arm(kind: str, bs: int) -> dict[str, Any]:
        if kind == "A":
            return arm_reference(root, images, gen_file, cfg, device, sec.work / "reference_out")
        if kind == "C":
            return arm_model_only(translator, pixels, cams, bs, device)
        return sec.stage_arm(pipe, "generate-camstyle", bs)

    sec.run_rounds(arm)
    best_bs = max(sec.batch_sizes)
    bd_images = images[:args.breakdown_images] if args.breakdown_images and not sec.cuda else images
    print(f"breakdown: {len(bd_images)} images at batch {best_bs} ...", flush=True)
    breakdown = arm_breakdown(translator, root, bd_images, best_bs, device, sec.work)
    variants: list[dict[str, Any]] = []
    if not sec.cuda and args.variant_images:
        vi = images[:args.variant_images]
        print(f"variants: {len(vi)} images at batch {args.variant_batch}, {args.variant_rounds} round(s) ...",
              flush=True)
        variants = arm_variants(translator, pixels[:len(vi)], [im.cam for im in vi], args.variant_batch,
                                args.variant_rounds)
    names = {"A": "reference loop (test.py, batch 1)", "B": "generate-camstyle stage (runner)",
             "C": "model only (translate_tensor)"}
    settings = {"stage": "generate-camstyle via run_pipeline (dask threads, 1 worker), ingest format folder "
                         "with a CSV manifest, models from the bench-only stage bench-generators",
                "amp": "bf16 autocast + channels_last on CUDA (the stage's default); no-op on the CPU"}
    return sec.summary(names, flops, settings, breakdown=breakdown, variants=variants)


FAMILY = shared.Family(trainer="train-camstyle", config=lambda a: GenConfig(a.ngf, a.n_blocks, a.height, a.width),
                       prepare=prepare, run_section=run_section, describe=describe)
