"""LSRO's unconditional generator: train a DCGAN on the real train images, then draw seeded samples.

:func:`collect_train_images` reads the train split of an ingest output at the model's size;
:func:`train_model` trains :class:`reidaug.models.dcgan.DCGAN` on it with the one resumable loop
(:func:`reidaug.gen.loop.train_loop`: step-seeded batches, atomic checkpoints, loss log, sample grids)
and writes the generator file; :class:`UnconditionalGenerator` loads that file and turns fake
indices into images, fake ``index`` of ``seed`` always from the same noise
(:func:`reidaug.models.dcgan.noise_for`), so a chunk recomputed after a kill gives the same bytes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from reidaug.data.images import image_grid
from reidaug.errors import DataError
from reidaug.gen.common import autocast, images_to_device, inference_autocast, to_uint8_images
from reidaug.gen.loop import (generator_file, generator_weights, load_generator, read_generator_file, save_generator,
                              train_loop)

MODEL = "dcgan"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    iterations: int
    train_batch: int = 64  # DCGAN's batch size
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 50
    num_samples: int = 16  # fixed noise vectors drawn in every sample grid


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    steps: int
    resumed_from: int | None
    seconds: float
    images_per_s: float
    last_losses: dict[str, float]
    checksum: str


def collect_train_images(chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]], size: tuple[int, int]
                         ) -> np.ndarray:
    """The train split's images of an ingest output, resized to ``size`` (H, W): ``(N, H, W, 3)`` uint8."""
    import cv2

    from reidaug.data.images import decode_stored

    h, w = size
    out = []
    for arrays, _ in chunks:
        for i, split in enumerate(arrays["split"]):
            if split == "train":
                img = decode_stored(arrays["image"][i])
                out.append(img if img.shape[:2] == (h, w) else
                           cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
    if not out:
        raise DataError("no train images in the input dataset; DCGAN trains on the real train split. "
                        "Fix: bind dataset to an ingest output whose format has a train split.")
    return np.stack(out)


def size_problem(height: int, width: int) -> str | None:
    """Why a DCGAN cannot train at ``height x width`` (torch-free, for the stage's params), or None: the
    generator starts at 4 x 2 and doubles, so a 2:1 crop whose height is 4 x a power of two (>= 8)."""
    q = height // 4
    if height == 2 * width and height >= 8 and height % 4 == 0 and q & (q - 1) == 0:
        return None
    return (f"image_height x image_width = {height} x {width}; expected a 2:1 re-ID crop whose height is 4 x a "
            "power of two (the generator starts at 4 x 2 and doubles). Fix: 128 x 64 (LSRO's re-ID setting), "
            "64 x 32 or 256 x 128.")


def build_config(hp: Mapping[str, Any], seed: int):
    from reidaug.models.dcgan import DCGANConfig

    return DCGANConfig(**{k: v for k, v in hp.items() if v is not None}, seed=seed)


def train_model(images: np.ndarray, hp: Mapping[str, Any], settings: TrainSettings, run_dir: Path,
                generator_file: Path, device: "torch.device", amp: bool = False,  # noqa: F821
                should_stop: Callable[[int], bool] | None = None) -> TrainOutcome:
    """Train a DCGAN on ``images`` (``(N, H, W, 3)`` uint8 at the model's size) for ``settings.iterations``
    steps in ``run_dir`` (resuming from its checkpoint), then write the generator file atomically.

    Step ``t``'s batch is ``train_batch`` images drawn from ``(seed, t)``, each flipped with probability
    0.5 (LSRO trains on the train images as they are; the flip doubles a small split at no cost)."""
    from reidaug.models.dcgan import DCGAN, noise_for

    model = DCGAN(build_config(hp, settings.seed))
    if model.config.size != images.shape[1:3]:
        raise DataError(f"train-dcgan: images are {images.shape[1:3]}, the model trains at {model.config.size}.")
    n = len(images)
    fixed = noise_for(settings.seed + 7919, range(settings.num_samples), model.config.nz)

    def batch_for(t: int) -> np.ndarray:
        rng = np.random.default_rng([settings.seed, t])
        idx = rng.integers(0, n, size=settings.train_batch)
        flip = rng.random(settings.train_batch) < 0.5
        batch = images[idx].copy()
        batch[flip] = batch[flip, :, ::-1]
        return batch

    def step(batch: np.ndarray) -> dict[str, float]:
        x = images_to_device(batch, device)
        with autocast(device, amp):
            return model.training_step(x)

    def sample(png: Path) -> None:
        from reidaug.models.gan_common import tensor_to_images

        fakes = tensor_to_images(model.generate(fixed.to(model.device)).float())
        cols = 8
        rows = [list(fakes[i:i + cols]) for i in range(0, len(fakes), cols)]
        image_grid(rows, png, cell_hw=tuple(model.config.size))

    out = train_loop(model, iterations=settings.iterations, batch_for=batch_for, train_step=step,
                     run_dir=run_dir, cadence=settings, device=device, where=f"train-dcgan {MODEL}",
                     checkpoint_extra={"model_name": MODEL}, sample=sample, should_stop=should_stop)
    state = {"model": MODEL, "config": dataclasses.asdict(model.config), "weights": generator_weights(model),
             "step": model.step}
    checksum = save_generator(generator_file, state)
    return TrainOutcome(steps=out.steps, resumed_from=out.resumed_from, seconds=out.seconds,
                        images_per_s=out.steps_run * settings.train_batch / max(out.seconds, 1e-9),
                        last_losses=out.last_losses, checksum=checksum)


class UnconditionalGenerator:
    """The generator of a ``train-dcgan`` output, ready for batches of fake indices."""

    def __init__(self, model_file: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                 where: str = "generate-unconditional", cpu_bf16: bool = False) -> None:
        from reidaug.models.dcgan import DCGAN, DCGANConfig

        self.device, self.amp, self.file, self.cpu_bf16 = device, amp, Path(model_file), cpu_bf16
        state = read_generator_file(self.file, MODEL, "train-dcgan", where)
        self.checksum: str = state["checksum"]
        self.model = load_generator(DCGAN(DCGANConfig(**state["config"])), state, self.file, device, where,
                                    "train-dcgan")
        self.size: tuple[int, int] = self.model.config.size
        self.nz: int = self.model.config.nz

    @classmethod
    def from_folder(cls, folder: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                    where: str = "input models", cpu_bf16: bool = False) -> "UnconditionalGenerator":
        return cls(generator_file(folder, MODEL, "train-dcgan"), device, amp=amp, where=where, cpu_bf16=cpu_bf16)

    def noise(self, seed: int, indices: Iterable[int]) -> "torch.Tensor":  # noqa: F821
        """The noise of fakes number ``indices`` of ``seed``, on the device."""
        from reidaug.models.dcgan import noise_for

        return noise_for(seed, list(indices), self.nz).to(self.device)

    def generate_tensor(self, z: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        """Noise ``(B, nz, 1, 1)`` on the device → uint8 ``(B, H, W, 3)`` on the device."""
        import torch

        with torch.inference_mode(), inference_autocast(self.device, self.amp, self.cpu_bf16):
            y = self.model.generate(z)
            return to_uint8_images(y)

    def generate(self, seed: int, indices: Iterable[int]) -> np.ndarray:
        """Fakes number ``indices`` of ``seed``: uint8 ``(B, H, W, 3)``."""
        return self.generate_tensor(self.noise(seed, indices)).cpu().numpy()
