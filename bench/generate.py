"""generate-camstyle and generate-poseguided against their references' batch-1 test loops, side by side in one run.

The CLI entry of the generation benchmark. ``--generator camstyle`` (default) times
``generate-camstyle`` on a random-init CycleGAN (``bench/generate_camstyle.py`` says how);
``--generator pg2 | deformable`` times ``generate-poseguided`` on a random-init PG2 or Deformable
GAN (``bench/generate_poseguided.py``). Both share ``bench/generate_shared.py``: inputs, timing
rounds, summary, GFLOP/s, the table and the JSON. Inputs: the first ``--images`` crops of
CUHK01's manifest (``../shared/data/cuhk01``, read in place, both cameras), or the synthetic
dataset when that folder is absent (or ``--data synthetic``). The generator file is written the
way the training stage writes it into a temp models folder; a bench-only source stage
(``bench-generators``, passed in the runner's registry) publishes it as the ``models`` output
the generation stage reads (a stage input must be an upstream stage's output).

Arms, per device: **A** the reference's own test loop at batch 1 (PIL in and out), **B** the
generation stage through the pipeline runner (dask threads, 1 worker) at each batch size
(``batch_size`` is not in the stage's key, so every batch size after the first is a forced
re-run of the same key), **C** the stage's model step alone on tensors made beforehand, the
stage's batches. Overlap efficiency = C's seconds / B's seconds (1.0: loading, encoding and
writing fully hidden behind the model).

Order: ``--rounds`` rounds; each runs A, every C and every B once, in a fresh random order (the
machine is shared, so drift hits all arms alike). Reported per arm: median and min-max img/s over
rounds, and the per-round ratio to A. Beside wall time, every arm and the ceiling record the
process's CPU seconds (all threads): CPU-seconds per image, GFLOP per CPU-second and their
ratios move much less than wall time when other jobs take the cores, and on a compute-bound
CPU they are what a dedicated machine's throughput follows. FLOPs per image:
``torch.utils.flop_counter.FlopCounterMode``; achieved GFLOP/s = FLOPs x img/s, against the FP32
ceiling of this CPU: ``n x n`` ``torch.matmul`` with torch's threads, measured before the arms,
after each round and at the end (the machine is shared: all are kept, their median is used).

GPU (when ``torch.cuda.is_available()``, unless ``--no-gpu``; ``--no-cpu`` leaves the CPU out):
the same arms on ``cuda`` (the stages' bf16 autocast + channels_last; A stays fp32 at batch 1),
CUDA events for device time, achieved TFLOP/s against the bf16 ``torch.matmul`` ceiling.

Prints tables and writes JSON (default ``bench/results/generate.json``; one entry per generator
configuration, so runs of other configurations are kept).

    .venv/bin/python bench/generate.py --images 64 --rounds 1
    .venv/bin/python bench/generate.py --images 128 --rounds 3 --height 128 --width 64 --ngf 32 --n-blocks 6
    .venv/bin/python bench/generate.py --generator pg2 --images 64 --rounds 2
    .venv/bin/python bench/generate.py --generator deformable --images 64 --rounds 2
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch

import generate_camstyle
import generate_poseguided
from common import RESULTS
from generate_shared import DEFAULT_DATA, run_benchmark


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
    ap.add_argument("--out", default=str(RESULTS / "generate.json"))
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
    if args.ngf is None:
        args.ngf = {"camstyle": 64, "pg2": 128, "deformable": 64}[args.generator]
    camstyle = args.generator == "camstyle"
    if args.height is None:
        args.height = 256 if camstyle else 128
    if args.width is None:
        args.width = 128 if camstyle else 64
    family = generate_camstyle if camstyle else generate_poseguided
    problem = family.check_args(args)
    if problem:
        ap.error(problem)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_benchmark(args, family.FAMILY)


if __name__ == "__main__":
    sys.exit(main())
