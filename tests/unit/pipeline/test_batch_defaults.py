"""The generation batch size when a stage leaves ``batch_size`` unset: large on CUDA, and on the CPU
the measured best for the model's input size (BENCHMARKS.md, "CPU batch size")."""
from __future__ import annotations

import torch

from reidaug.pipeline.stage import CPU_BATCH, CUDA_BATCH, BatchedGPUParams, cpu_batch_size


def test_the_cpu_default_shrinks_as_the_image_grows():
    assert cpu_batch_size((256, 128)) == 2  # CamStyle's size: batch 8 lost 8% and 16 lost 17% to batch 2
    assert cpu_batch_size((128, 64)) == CPU_BATCH == 4  # CycleGAN and PG2 at 128 x 64: best at 4, PG2 lost 7% at 8
    assert cpu_batch_size((1024, 1024)) == 1  # never 0
    assert cpu_batch_size((8, 8)) == CPU_BATCH  # never above the cap
    assert cpu_batch_size(None) == CPU_BATCH  # a stage that does not say its size


def test_an_explicit_batch_size_wins_and_cuda_gets_large_batches():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert BatchedGPUParams().batch_size_on(cpu, (256, 128)) == 2
    assert BatchedGPUParams().batch_size_on(cuda, (256, 128)) == CUDA_BATCH
    assert BatchedGPUParams(batch_size=5).batch_size_on(cpu, (256, 128)) == 5
    assert BatchedGPUParams(batch_size=5).batch_size_on(cuda) == 5
