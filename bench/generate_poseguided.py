"""``bench/generate.py --generator pg2 | deformable``: generate-poseguided against pose-gan's ``test.py``.

Not a script (``bench/generate.py`` runs it; issue 7). The generator file is a random-init PG2
(Ma et al., NeurIPS 2017) or Deformable GAN (Siarohin et al., CVPR 2018) written as
``train-posegan`` writes it (``build_model``, ``generator_state`` with the score threshold 0.3,
``checksum``). Keypoints come from ``extract-pose`` in a setup run of the same pipeline
(``--poses``: ``movenet`` with the shared ``.tflite`` on CUHK01, ``mediapipe``, or the synthetic
dataset's ground truth through the ``openpose-csv`` backend; the JSON says which). Targets:
``targets: list`` with the ``--target-poses`` K images of most confident keypoints, each image
rendered in each of those poses but its own (K x N - K fakes, ``min_target_keypoints: 0`` so
nothing is dropped); every arm makes exactly the stage's (condition, target) pairs in its order.
Rates are fakes per second.
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
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
import generate_shared as shared
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pose.keypoints import confident_mask, rescale_keypoints

POSE_SCORE_THRESHOLD = 0.3  # train-posegan's default score_threshold, written into the file as it does
MOVENET = common.SHARED / "models" / "movenet_singlepose_lightning_int8.tflite"


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


def config(args: argparse.Namespace) -> PoseGenConfig:
    return PoseGenConfig(args.generator, args.ngf, args.height, args.width)


def check_args(args: argparse.Namespace) -> str | None:
    """Why the size does not fit the model, or ``--target-poses`` is not positive; or None."""
    from reidaug.gen.poseguided import size_problem

    problem = size_problem(args.generator, args.height, args.width, config(args).d_layers)
    if problem:
        return f"--height x --width = {args.height} x {args.width} does not fit {args.generator}: {problem}"
    if args.target_poses < 1:
        return f"--target-poses must be >= 1, found {args.target_poses}"
    return None


def prepare(models_dir: Path, cfg: PoseGenConfig, seed: int) -> tuple[Path, str, dict[str, Any]]:
    """A random-init PG2 / Deformable GAN in train-posegan's file format (``build_model``,
    ``generator_state`` with its score threshold, ``checksum``), and the FLOPs of one fake at
    batch 1 (the stage's model step on the CPU, fp32)."""
    from reidaug.gen.poseguided import PoseGuidedGenerator, build_model, generator_state

    hp = {"image_height": cfg.height, "image_width": cfg.width, "ngf": cfg.ngf, "d_layers": cfg.d_layers}
    state = generator_state(build_model(cfg.model, hp, seed), cfg.model, POSE_SCORE_THRESHOLD)
    n_params = sum(int(v.numel()) for v in state["weights"].values())
    path, checksum = shared.save_generator(models_dir, cfg.model, state)

    gen = PoseGuidedGenerator(path, torch.device("cpu"), amp=False, where="bench")
    x = torch.zeros(1, 3, cfg.height, cfg.width)
    kp = np.zeros((1, 17, 3), np.float32)  # the convolutions' FLOPs do not depend on the pose
    what = "G1 + G2" if cfg.model == "pg2" else "G (both encoder streams, decoder)"
    fl = shared.count_flops(lambda: gen.generate_tensor(x, kp, kp),
                            f"FlopCounterMode over {what}: convolutions, transposed convolutions and matmuls (PG2's "
                            "FC bottleneck; affine_grid), 2 FLOPs per multiply-add; pose maps, grid_sample "
                            "(Deformable GAN's warps), norms and activations not counted")
    fl["params"] = n_params
    return path, checksum, fl


def describe(cfg: PoseGenConfig, seed: int, checksum: str, fl: dict[str, Any]) -> dict[str, Any]:
    return {"model": cfg.model, "config": cfg.__dict__,
            "weights": f"random init (train-posegan's build_model, seed {seed}); speed does not depend on the "
                       "weights",
            "score_threshold": POSE_SCORE_THRESHOLD, "checksum": checksum, "flops_per_image": fl}


# --------------------------------------------------------------------------------------------
# Poses and pairs
# --------------------------------------------------------------------------------------------
def pose_source(choice: str, root: Path, images: list[shared.Crop], synthetic: bool, tmp: Path) -> tuple[str, str]:
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

    def frame(self, rows: list[int], hw: tuple[int, int]) -> np.ndarray:
        """``(len(rows), 17, 3)``: those rows' keypoints in pixels of an ``hw`` image."""
        return rescale_keypoints(self.keypoints[rows], self.hw[rows], hw)


def pose_jobs(entry: Path, k: int, threshold: float) -> PoseJobs:
    """From extract-pose's output: the ``k`` rows with the most confident keypoints become the target
    poses (ties: the first), and every row is rendered in each of them but its own (as the stage)."""
    parts = [read_h5_chunk(p)[0] for p in sorted((entry / "chunks").glob("*.h5"))]
    parts = [a for a in parts if len(a.get("path", []))]
    paths = [str(x) for a in parts for x in a["path"]]
    kp = np.concatenate([a["keypoints"] for a in parts]).astype(np.float32)
    hw = np.stack([np.concatenate([a["height"] for a in parts]), np.concatenate([a["width"] for a in parts])], 1)
    conf = confident_mask(kp, threshold).sum(-1)  # (N,) confident keypoints per pose
    targets = sorted(sorted(range(len(paths)), key=lambda i: (-int(conf[i]), i))[:k])
    jobs = [(r, t) for r in range(len(paths)) for t in targets if r != t]
    return PoseJobs(paths, kp, hw.astype(np.int64), targets, jobs)


# --------------------------------------------------------------------------------------------
# The arms
# --------------------------------------------------------------------------------------------
def load_reference_pose_model(gen_file: Path, device: torch.device):
    """The reference's loader: the model class from the saved config, the generator weights
    loaded, fp32, default memory format, eval mode; returns (model, model name, threshold)."""
    from reidaug.io.checkpoint import load_torch

    state = load_torch(gen_file, "bench")
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


def arm_reference(root: Path, pj: PoseJobs, gen_file: Path, cfg: PoseGenConfig, device: torch.device,
                  out_dir: Path) -> dict[str, Any]:
    """Arm A: pose-gan's ``test.py`` loop (``PoseHMDataset`` with batch size 1 over the pairs file):
    per (condition, target) pair, read the condition image, build its pose inputs, run the
    generator, write the fake as a PNG. Images through PIL + torchvision (bicubic resize, as
    CycleGAN's loader; CUHK01's 160 x 60 crops need one), keypoints from the annotations loaded
    once, as the reference reads its CSV before the loop."""
    from PIL import Image as PILImage

    from reidaug.gen.poseguided import clean_keypoints

    model, name, thr = load_reference_pose_model(gen_file, device)
    h, w = cfg.height, cfg.width
    transform = shared.reference_transform(h, w)
    out_dir.mkdir(parents=True, exist_ok=True)

    def forward(inputs: tuple[torch.Tensor, np.ndarray, np.ndarray]) -> torch.Tensor:
        x, ckp, tkp = inputs  # (1, 3, H, W), (1, 17, 3), (1, 17, 3)
        if name == "pg2":
            hm, _ = model.pose_maps(tkp)  # (1, 17, H, W) on the device
            return model.generate(x, hm)[1]  # G2's output
        return model.generate(x, ckp, tkp)

    def load(job: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        r, t = job
        img = PILImage.open(root / pj.paths[r]).convert("RGB")
        x = transform(img).unsqueeze(0).to(device)  # (1, 3, H, W) in [-1, 1]
        ckp = rescale_keypoints(pj.keypoints[r:r + 1], (img.height, img.width), (h, w))
        return x, clean_keypoints(ckp, thr), clean_keypoints(pj.frame([t], (h, w)), thr)

    r0, t0 = pj.jobs[0]
    with torch.no_grad():  # warm-up
        forward((torch.zeros(1, 3, h, w, device=device), clean_keypoints(pj.frame([r0], (h, w)), thr),
                 clean_keypoints(pj.frame([t0], (h, w)), thr)))
    shared.sync(device)
    return shared.reference_loop(pj.jobs, load, forward,
                                 lambda job: out_dir / f"{Path(pj.paths[job[0]]).stem}_to_{job[1]}.png", device,
                                 "pose_maps_model")


def arm_model_only(gen, pj: PoseJobs, pixels: list[np.ndarray], ckp: np.ndarray, tkp: np.ndarray,
                   batch_size: int, device: torch.device) -> dict[str, Any]:
    """Arm C: the stage's model step (``PoseGuidedGenerator.generate_tensor``: keypoint cleaning,
    pose maps (Deformable GAN: part affines too), the generator, uint8) on tensors made beforehand,
    the stage's batches; no decode, encode or write."""
    batches, start = [], 0
    for chunk in pj.batches(batch_size):
        sl = slice(start, start + len(chunk))
        batches.append((gen.to_tensor(np.stack([pixels[r] for r, _ in chunk])), ckp[sl], tkp[sl]))
        start += len(chunk)
    warm_up = batches[0] if device.type == "cuda" else tuple(a[:1] for a in batches[0])
    return shared.model_only(gen.generate_tensor, batches, [warm_up], len(pj.jobs), batch_size, device, keep=True)


# --------------------------------------------------------------------------------------------
# One device's section
# --------------------------------------------------------------------------------------------
def run_section(device: torch.device, args: argparse.Namespace, cfg: PoseGenConfig, root: Path,
                images: list[shared.Crop], synthetic: bool, gen_file: Path, flops: int, tmp: Path) -> dict[str, Any]:
    from reidaug.gen.poseguided import PoseGuidedGenerator

    sec = shared.DeviceSection(device, args, cfg.label, images, tmp / f"pose-{device.type}")
    pose_params, pose_note = pose_source(args.poses, root, images, synthetic, sec.work)
    middle = f"  extract-pose: {{params: {pose_params}, inputs: {{dataset: ingest.dataset}}}}\n"
    dev = "cuda" if sec.cuda else "cpu"

    def yaml(suffix: str, tail: str = "") -> Path:
        return shared.pipeline_yaml(sec.work / f"pipeline-pose-{dev}{suffix}.yaml", "bench-generate-pose", root,
                                    sec.manifest, len(images), gen_file, middle=middle, tail=tail)

    setup = yaml("-setup")
    t0 = time.perf_counter()
    report = sec.run_stages(setup, ["ingest", "extract-pose", "bench-generators"])
    pose_seconds = time.perf_counter() - t0
    entry = next(r.entry for r in report.results if r.name == "extract-pose")
    pj = pose_jobs(entry, args.target_poses, POSE_SCORE_THRESHOLD)
    if not pj.jobs:
        raise SystemExit(f"no (condition, target) pairs from {len(pj.paths)} images. Fix: --images >= 2.")
    conf = [int(x) for x in (pj.keypoints[..., 2] > POSE_SCORE_THRESHOLD).sum(-1)]
    target_paths = [pj.paths[t] for t in pj.targets]
    print(f"poses: {pose_note}; {sum(c >= 8 for c in conf)}/{len(conf)} images with >= 8 keypoints above "
          f"{POSE_SCORE_THRESHOLD}; targets {target_paths}; {len(pj.jobs)} fakes per arm", flush=True)
    tail = ("  generate-poseguided:\n"
            f"    params: {{targets: list, pose_list: {json.dumps(target_paths)}, min_target_keypoints: 0, "
            f"batch_size: 1, device: {dev}, amp: true}}\n"
            "    inputs: {dataset: ingest.dataset, keypoints: extract-pose.keypoints,\n"
            "             models: bench-generators.models}\n")
    pipe = yaml("", tail)

    gen = PoseGuidedGenerator(gen_file, device, amp=True, where="bench")  # as the stage loads it
    # what the stage's prepare step makes: each row decoded and resized (cv2 bilinear) to the
    # model's size, and per job the condition and target keypoints in that frame
    pixels = shared.decode_resized(root, pj.paths, *gen.size)
    ckp = pj.frame([r for r, _ in pj.jobs], gen.size)  # (jobs, 17, 3)
    tkp = pj.frame([t for _, t in pj.jobs], gen.size)

    def arm(kind: str, bs: int) -> dict[str, Any]:
        if kind == "A":
            return arm_reference(root, pj, gen_file, cfg, device, sec.work / "reference_out")
        if kind == "C":
            return arm_model_only(gen, pj, pixels, ckp, tkp, bs, device)
        return sec.stage_arm(pipe, "generate-poseguided", bs)

    sec.run_rounds(arm)
    names = {"A": "reference loop (pose-gan test.py)", "B": "generate-poseguided stage (runner)",
             "C": "model only (generate_tensor)"}
    settings = {"stage": "generate-poseguided via run_pipeline (dask threads, 1 worker) on ingest (format "
                         "folder, CSV manifest) and extract-pose, models from the bench-only stage bench-generators",
                "reference": "A: per pair at batch 1, fp32, PIL read + bicubic resize, the model's own pose maps "
                             "(and part affines) at batch 1, PNG written by PIL; fakes per second",
                "amp": "B and C: bf16 autocast + channels_last on CUDA (the stage's default); no-op on the CPU. "
                       "A stays fp32 at batch 1"}
    return sec.summary(
        names, flops, settings, fakes=len(pj.jobs),
        poses={"source": pose_note, "extract_pose_seconds": pose_seconds,
               "images_with_8_confident": sum(c >= 8 for c in conf), "score_threshold": POSE_SCORE_THRESHOLD,
               "target_images": target_paths,
               "targets": f"generate-poseguided targets: list with the {len(pj.targets)} images of most confident "
                          "keypoints; every image rendered in each of those poses but its own "
                          "(min_target_keypoints 0: nothing dropped)"},
        # the same pairs in the same order: B's PNG fakes against C's model outputs, per batch size
        stage_fakes_vs_model_only={str(bs): shared.compare_fakes(sec.fakes[("C", bs)], sec.fakes[("B", bs)])
                                   for bs in sec.batch_sizes})


FAMILY = shared.Family(trainer="train-posegan", config=config, prepare=prepare, run_section=run_section,
                       describe=describe, entry_extra=lambda sections: {
                    "poses": next(iter(sections.values()))["poses"]["source"]})
