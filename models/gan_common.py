"""Pieces shared by the GAN models (losses, init, schedules, image conversion and checks); the
plumbing of a model (nets, optimisers, checkpoints) is :mod:`.base`.

Follows the official CycleGAN code (Zhu et al., "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", ICCV 2017; junyanz/pytorch-CycleGAN-and-pix2pix,
``util/image_pool.py`` and ``models/networks.py``):

- :class:`ImagePool`: the history buffer of generated images (Shrivastava et al., CVPR 2017) that
  the discriminators are updated from. Same policy as the reference (fill up, then 50 % return
  the new image, 50 % swap it with a random stored one), but it draws from its own seeded
  ``torch.Generator`` instead of Python's global ``random``, and its state (images + generator)
  is saved, so a resumed training draws the same numbers.
- :func:`lsgan_loss`: the reference ``GANLoss('lsgan')``, a mean squared error to a constant 1
  (real) or 0 (fake) target map; :func:`bce_gan_loss`: the standard GAN loss (``'vanilla'``) on
  logits, as PG2 and Deformable GAN use it.
- :func:`init_weights`: N(0, 0.02) for conv / linear weights, zero biases, N(1, 0.02) for batch
  norm scales, like ``init_weights(init_type='normal')``; here from a seeded generator.
- :func:`linear_decay_lambda`: the ``lr_policy='linear'`` rule of ``get_scheduler`` (constant
  for ``n_epochs``, then linear to almost zero over ``n_epochs_decay``).
- :func:`images_to_tensor` / :func:`tensor_to_images`: RGB uint8 ``(H, W, 3)`` ↔ float ``[-1, 1]``
  ``(B, 3, H, W)``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from reidaug.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Image history buffer
# --------------------------------------------------------------------------------------------
class ImagePool:
    """History of generated images for the discriminator update (CycleGAN ``ImagePool``).

    ``query(images)`` with ``images`` ``(B, C, H, W)`` returns a ``(B, C, H, W)`` tensor: while
    fewer than ``size`` images are stored, each input image is stored and returned; once full,
    each image is, with probability 1/2, returned as is, otherwise swapped with a uniformly
    chosen stored image, which is returned instead. ``size=0`` returns the input unchanged.
    Stored images are detached.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ConfigError(f"ImagePool size must be >= 0, found {size}. Fix: use 0 (no pool) "
                              "or a positive size (50 in CycleGAN).")
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, H, W)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(B, C, H, W)`` images for the discriminator (see the class docstring)."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():  # (C, H, W)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            # Two draws per image once full, like the reference (uniform, then randint).
            elif torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(0, self.size, (), generator=self.generator).item())
                out.append(self.images[idx].to(image.device))  # a resumed pool may be on CPU
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.stack(out, 0)  # (B, C, H, W)

    def state_dict(self) -> dict[str, Any]:
        """Stored images and the generator state: everything a resumed query depends on."""
        return {"size": self.size, "images": list(self.images),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ConfigError(f"ImagePool state has size {state['size']}, this pool has size "
                              f"{self.size}. Fix: build the model with the saved config.")
        self.images = [t.clone() for t in state["images"]]
        self.generator.set_state(state["generator"])


# --------------------------------------------------------------------------------------------
# Losses, init, schedules
# --------------------------------------------------------------------------------------------
def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al., ICCV 2017): mean((D(x) - 1)^2) or mean(D(x)^2)."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def bce_gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """The standard (non-saturating) GAN loss: sigmoid cross-entropy of the discriminator's
    logits against 1 (real) or 0 (fake)."""
    target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target.float())


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None
                 ) -> nn.Module:
    """CycleGAN's ``init_weights(init_type='normal')``: conv/linear weights N(0, gain), biases 0,
    batch-norm scales N(1, gain). Draws from ``generator`` (not the global RNG) when given."""
    for m in net.modules():
        name = type(m).__name__
        weight = getattr(m, "weight", None)
        if weight is None:
            continue
        bias = getattr(m, "bias", None)
        if "Conv" in name or "Linear" in name:
            nn.init.normal_(weight, 0.0, gain, generator=generator)
            if bias is not None:
                nn.init.zeros_(bias)
        elif "BatchNorm2d" in name:
            nn.init.normal_(weight, 1.0, gain, generator=generator)
            nn.init.zeros_(bias)
    return net


def set_requires_grad(nets: Iterable[nn.Module], requires_grad: bool) -> None:
    """Freeze / unfreeze networks (the reference's ``set_requires_grad``)."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(requires_grad)


class LinearDecay:
    """Learning-rate factor for ``LambdaLR``: 1.0 for ``n_epochs`` epochs, then linear decay.

    Factor for the 0-based epoch ``e`` (the scheduler's counter, stepped once per epoch) is
    ``1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)``, as CycleGAN's ``lambda_rule`` with
    ``epoch_count=1``. A plain object (not a closure) so ``LambdaLR.state_dict`` saves it.
    """

    def __init__(self, n_epochs: int, n_epochs_decay: int) -> None:
        if n_epochs < 0 or n_epochs_decay < 0:
            raise ConfigError(f"linear decay needs n_epochs >= 0 and n_epochs_decay >= 0, found "
                              f"{n_epochs} and {n_epochs_decay}. Fix: use e.g. 100 and 100 "
                              "(CycleGAN's defaults).")
        self.n_epochs = n_epochs
        self.n_epochs_decay = n_epochs_decay

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_epochs) / float(self.n_epochs_decay + 1)


def linear_decay_lambda(n_epochs: int, n_epochs_decay: int) -> LinearDecay:
    """The ``lr_lambda`` of CycleGAN's linear policy (see :class:`LinearDecay`)."""
    return LinearDecay(n_epochs, n_epochs_decay)


# --------------------------------------------------------------------------------------------
# Image conversion and checks
# --------------------------------------------------------------------------------------------
def images_to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 images ``(H, W, 3)`` (a list or a ``(B, H, W, 3)`` array, one size) → float32
    ``(B, 3, H, W)`` in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    arr = np.asarray(images) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"images_to_tensor expects RGB uint8 images of shape (H, W, 3) or "
                        f"(B, H, W, 3), found dtype {arr.dtype} shape {arr.shape}. Fix: decode "
                        "with reidaug.data.images.decode_image and resize to one size.")
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)  # (B, 3, H, W)
    return t.float().div_(127.5).sub_(1.0)


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """Float ``(B, 3, H, W)`` in ``[-1, 1]`` → RGB uint8 ``(B, H, W, 3)``, clamped and rounded
    (the reference truncates; rounding makes the round trip with :func:`images_to_tensor`
    exact)."""
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise DataError(f"tensor_to_images expects a (B, 3, H, W) tensor, found shape "
                        f"{tuple(tensor.shape)}. Fix: pass a generator output.")
    t = tensor.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return t.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def check_halvings(where: str, size: tuple[int, int], halvings: int, what: str, fix: str,
                   minimum: int = 1) -> tuple[int, int]:
    """Raise :class:`ConfigError` unless ``halvings >= minimum`` and H and W are multiples of
    ``2^halvings`` (the stride-2 layers counted by ``what``); returns ``(H, W) / 2^halvings``,
    the size of the last feature map."""
    h, w = size
    scale = 2 ** max(halvings, 0)
    if halvings < minimum or h % scale or w % scale:
        raise ConfigError(f"{where}: image size {h} x {w} must be multiples of 2^{what} = "
                          f"{scale} ({what} = {halvings}, at least {minimum}). Fix: {fix}")
    return h // scale, w // scale


def describe(x: Any) -> str:
    """What an input is, for an error message: dtype and shape of a tensor, else its type."""
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def check_images(images: torch.Tensor, where: str, multiple: int = 4,
                 size: tuple[int, int] | None = None) -> None:
    """Raise :class:`DataError` unless ``images`` is a float ``(B, 3, H, W)`` tensor with H and W
    divisible by ``multiple`` (and equal to ``size`` when given)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or not images.is_floating_point():
        raise DataError(f"{where}: expected a float (B, 3, H, W) tensor in [-1, 1], found "
                        f"{describe(images)}. Fix: convert RGB uint8 images with "
                        "images_to_tensor().")
    h, w = int(images.shape[2]), int(images.shape[3])
    if size is not None and (h, w) != tuple(size):
        raise DataError(f"{where}: expected images of H x W = {size[0]} x {size[1]} (the "
                        f"model config), found {h} x {w}. Fix: resize the crops, or build the "
                        "model with image_height/image_width set to this size.")
    if h % multiple or w % multiple:
        raise DataError(f"{where}: H and W must be multiples of {multiple} (the generator "
                        f"downsamples and upsamples back), found {h} x {w}. Fix: resize or pad "
                        f"the crops to multiples of {multiple}.")
