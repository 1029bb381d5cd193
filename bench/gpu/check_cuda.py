"""CUDA check of the generator stack after the issue-13 redesign (one lent-GPU call).

What the CPU suite cannot see: the GAN base and the training loop on CUDA (channels_last,
bf16 autocast, optimiser state moved with ``to()``, checkpoints of CUDA tensors), a run killed
mid-training on CUDA and resumed, and generation on CUDA against the same generator on the CPU.

Steps, on the synthetic dataset (no pose model needed: its ground-truth keypoints go through
extract-pose's ``openpose-csv`` backend):
1. one pipeline: CycleGAN and StarGAN CamStyle (train + generate), PG2 and Deformable GAN
   (train + canonical-pose fakes), LSRO's DCGAN (train + samples), DG-Net (train + swaps), labels,
   HDF5 export, and a short train-reid, all ``device: cuda``;
   the run is SIGKILLed at each generator training's first checkpoint and resumed, until a run goes
   to the end (every generator is killed and resumed once);
2. each generator file re-run on the CPU and on CUDA (fp32 and bf16) on the same inputs: the
   largest pixel difference;
3. the same pipeline uninterrupted in a second workspace: are the resumed generators' checksums
   equal to the uninterrupted ones (cuDNN may pick non-deterministic kernels: reported, not
   required).
Writes ``$OUT/check_cuda.json`` and prints a summary.

    python bench/gpu/check_cuda.py --out $OUT            # on the GPU machine (bench/gpu/run_all.sh)
    python bench/gpu/check_cuda.py --out /tmp/c --device cpu --steps 20   # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PIPELINE = """\
name: gpu-check
execution: {{scheduler: threads, workers: 1}}
stages:
  ingest:
    params: {{format: market1501, root: {data}, chunk_size: 64}}
  extract-pose:
    params: {{backend: openpose-csv, annotations: {csv}}}
  cluster-poses:
    params: {{k: 4, min_confident: 10}}
  train-camstyle:
    params: {{image_height: 64, image_width: 32, ngf: 16, ndf: 32, n_blocks: 3, iterations: {steps},
             checkpoint_every: {ckpt}, sample_every: {steps}, device: {device}}}
  train-stargan:
    uses: train-camstyle
    params: {{model: stargan, image_height: 64, image_width: 32, iterations: {steps},
             checkpoint_every: {ckpt}, sample_every: {steps}, device: {device}}}
  generate-camstyle:
    params: {{device: {device}}}
  generate-stargan:
    uses: generate-camstyle
    params: {{device: {device}}}
    inputs: {{models: train-stargan.models}}
  train-posegan:
    params: {{model: pg2, image_height: 64, image_width: 32, ngf: 16, ndf: 16, z_dim: 32, lr: 0.0002,
             iterations: {steps}, train_batch: 8, checkpoint_every: {ckpt}, sample_every: {steps},
             device: {device}}}
  train-deformable:
    uses: train-posegan
    params: {{model: deformable, image_height: 64, image_width: 32, ngf: 16, ndf: 16,
             iterations: {steps}, train_batch: 8, checkpoint_every: {ckpt}, sample_every: {steps},
             device: {device}}}
  generate-poseguided:
    params: {{targets: canonical, device: {device}}}
  generate-deformable:
    uses: generate-poseguided
    params: {{targets: canonical, device: {device}}}
    inputs: {{models: train-deformable.models}}
  train-dcgan:
    params: {{image_height: 64, image_width: 32, nz: 32, ngf: 16, ndf: 16, iterations: {steps}, train_batch: 16,
             checkpoint_every: {ckpt}, sample_every: {steps}, device: {device}}}
  generate-unconditional:
    params: {{num_images: 64, chunk_size: 32, seed: 0, device: {device}}}
  train-dgnet:
    params: {{image_height: 64, image_width: 32, app_backbone: tiny, app_pretrained: none, app_dim: 32, struct_dim: 8,
             n_res: 2, mlp_dim: 64, ndf: 16, d_res: 1, iterations: {steps}, train_batch: 4,
             checkpoint_every: {ckpt}, sample_every: {steps}, device: {device}}}
  generate-dgnet:
    params: {{pairs: cross-camera, per_image: 1, seed: 0, device: {device}}}
  assign-labels:
    params: {{schemes: {{real: onehot, camstyle: lsr, poseguided: lsr, unconditional: lsro, dgnet: lsr}}}}
    inputs: {{camstyle: generate-camstyle.fakes, poseguided: generate-poseguided.fakes,
             unconditional: generate-unconditional.fakes, dgnet: generate-dgnet.fakes}}
  export-hdf5:
    params: {{encoding: raw, image_height: 128, image_width: 64}}
    inputs: {{keypoints: extract-pose.keypoints, camstyle: generate-camstyle.fakes,
             poseguided: generate-poseguided.fakes, unconditional: generate-unconditional.fakes,
             dgnet: generate-dgnet.fakes, labels: assign-labels.labels}}
  train-reid:
    params: {{backbone: efficientnet_lite0, height: 128, width: 64, p: 6, k: 4, epochs: 2, lr: 0.001,
             warmup_epochs: 1, milestones: [1], num_workers: 0, evaluate: true, device: {device}}}
"""


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=400, help="iterations of each GAN")
    ap.add_argument("--reidaug", default=os.environ.get("REIDAUG", "reidaug"), help="the CLI to run")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    result: dict = {"device": args.device, "steps": args.steps}
    import torch

    result["torch"] = torch.__version__
    result["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None

    # -- data: the synthetic dataset and its true keypoints as an OpenPose CSV ------------------
    data = work / "synthetic"
    r = sh([args.reidaug, "demo-data", str(data), "--num-ids", "24", "--images-per-id-per-cam", "4"])
    if r.returncode:
        sys.exit(f"demo-data failed:\n{r.stderr}")
    from reidaug.pose.openpose import write_openpose_csv

    truth = json.loads((data / "keypoints.json").read_text())["images"]
    csv = work / "poses.csv"
    write_openpose_csv(csv, {Path(rel).name: np.asarray(kp, np.float32) for rel, kp in truth.items()})
    pipe = work / "pipeline.yaml"
    pipe.write_text(PIPELINE.format(data=data, csv=csv, steps=args.steps, ckpt=max(args.steps // 4, 1),
                                    device=args.device))

    # -- 1. killed once in each generator's training (at its first checkpoint), resumed each time ---------
    ws = work / "ws-killed"
    t0 = time.time()
    kills: list[dict] = []
    while True:
        proc = subprocess.Popen([args.reidaug, "run", str(pipe), "-w", str(ws)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        killed = None
        while proc.poll() is None and time.time() - t0 < 900:
            done = {k["training"] for k in kills}
            fresh = [c for c in (ws / "cache").glob("train-*/*/*.partial/**/checkpoint.pt")
                     if training_of(c, ws) not in done] if ws.exists() else []
            if fresh:  # checkpoints are written atomically: one that exists is whole; kill before the next step
                os.killpg(proc.pid, signal.SIGKILL)
                killed = training_of(fresh[0], ws)
                break
            time.sleep(0.05)
        output = proc.communicate()[0]
        if killed is None:  # this run went to the end without a new training to kill: the last resume
            break
        kills.append({"training": killed, "after_s": round(time.time() - t0, 1)})
    if not kills:
        sys.exit(f"the pipeline ended (rc {proc.returncode}) before any training checkpoint:\n{output[-4000:]}")
    result["killed"] = kills
    trainings = {training_of(m, ws) for m in (ws / "cache").glob("train-*/*/*/meta.json")}
    result["finished_before_a_kill"] = sorted(trainings - {k["training"] for k in kills})  # too fast to catch
    result["resumed"] = {"rc": proc.returncode, "seconds": round(time.time() - t0, 1),
                         "resume_lines": [ln for ln in output.splitlines() if "resum" in ln][:20],
                         "tail": output.splitlines()[-25:]}
    save(out, result)
    print(output[-4000:], flush=True)

    # -- 2. each generator on the CPU vs the device -----------------------------------------
    result["generators"] = compare_generators(ws, args.device)

    save(out, result)

    # -- 3. uninterrupted run: same generator checksums? --------------------------------------
    ws2 = work / "ws-straight"
    t2 = time.time()
    r2 = sh([args.reidaug, "run", str(pipe), "-w", str(ws2)])
    result["straight"] = {"rc": r2.returncode, "seconds": round(time.time() - t2, 1)}
    a, b = checksums(ws), checksums(ws2)
    result["resume_equals_straight"] = {k: a.get(k) == b.get(k) for k in sorted(set(a) | set(b))}
    metrics = sorted(ws.glob("cache/train-reid/*/*/run/metrics.json"))
    result["reid_metrics"] = json.loads(metrics[0].read_text()) if metrics else None
    save(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "resumed"}, indent=1, default=str))


def save(out: Path, result: dict) -> None:
    """check_cuda.json as far as the check got (a step that runs out of time keeps the ones before)."""
    (out / "check_cuda.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")


def training_of(checkpoint: Path, ws: Path) -> str:
    """``train-posegan/9b23f7df`` of ``cache/train-posegan/9b/9b23f7df….partial/train/pg2/checkpoint.pt``."""
    parts = checkpoint.relative_to(ws / "cache").parts
    return f"{parts[0]}/{parts[2][:8]}"


def checksums(ws: Path) -> dict[str, str]:
    """Generator checksum of every ``models/*.pt`` in a workspace, by stage and file name."""
    from reidaug.io.checkpoint import load_torch

    out = {}
    for f in sorted(ws.glob("cache/train-*/*/*/models/*.pt")):
        out[f"{f.parts[-5]}/{f.parts[-3][:8]}/{f.name}"] = load_torch(f, "check").get("checksum")
    return out


def compare_generators(ws: Path, device: str) -> dict[str, dict]:
    """Each generator on the same seeded inputs: CPU fp32 vs device fp32 vs device bf16."""
    import torch

    from reidaug.gen.camstyle import CamStyleTranslator
    from reidaug.gen.dgnet import DGNetGenerator
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.gen.unconditional import UnconditionalGenerator

    rng = np.random.default_rng(0)
    report: dict[str, dict] = {}
    for folder in sorted(ws.glob("cache/train-*/*/*/models")):
        kind, stage = folder.parts[-4], f"{folder.parts[-4]}/{folder.parts[-2][:8]}"
        runs = {}
        for dev, amp in (("cpu", False), (device, False), (device, True)):
            torch.manual_seed(0)
            if kind == "train-posegan":
                gen = PoseGuidedGenerator(next(folder.glob("*.pt")), torch.device(dev), amp=amp)
                h, w = gen.size
                img = rng.integers(0, 255, (4, h, w, 3), dtype=np.uint8)
                kp = standing_pose(h, w, 4)
                runs[f"{dev}{'-bf16' if amp else ''}"] = gen.generate(img, kp, kp[::-1].copy())
            elif kind == "train-dcgan":
                runs[f"{dev}{'-bf16' if amp else ''}"] = UnconditionalGenerator.from_folder(
                    folder, torch.device(dev), amp=amp).generate(0, range(4))
            elif kind == "train-dgnet":
                gen = DGNetGenerator.from_folder(folder, torch.device(dev), amp=amp)
                h, w = gen.size
                img = rng.integers(0, 255, (8, h, w, 3), dtype=np.uint8)
                runs[f"{dev}{'-bf16' if amp else ''}"] = gen.swap(img[:4], img[4:])
            else:
                tr = CamStyleTranslator(folder, torch.device(dev), amp=amp)
                img = rng.integers(0, 255, (4, 64, 32, 3), dtype=np.uint8)
                runs[f"{dev}{'-bf16' if amp else ''}"] = tr.translate(img, 0, 1)
            rng = np.random.default_rng(0)  # same inputs for every device
        base = runs["cpu"].astype(np.int16)
        report[stage] = {k: int(np.abs(v.astype(np.int16) - base).max()) for k, v in runs.items() if k != "cpu"}
    return report


def standing_pose(h: int, w: int, n: int) -> np.ndarray:
    """``(n, 17, 3)`` COCO-17 keypoints of a person standing in an ``h x w`` frame."""
    xs = np.array([.5, .45, .55, .4, .6, .35, .65, .3, .7, .28, .72, .4, .6, .4, .6, .4, .6]) * w
    ys = np.array([.1, .08, .08, .1, .1, .25, .25, .4, .4, .55, .55, .55, .55, .75, .75, .95, .95]) * h
    kp = np.stack([xs, ys, np.ones(17)], -1).astype(np.float32)
    return np.repeat(kp[None], n, 0)


if __name__ == "__main__":
    main()
