"""PG2: two-stage pose-guided person image generation (issue 7).

Ma et al., "Pose Guided Person Image Generation", NeurIPS 2017 (official TensorFlow code:
charliememory/Pose-Guided-Person-Image-Generation, ``models.py``, ``trainer.py``,
``wgan_gp_128x64.py``). Given a condition image ``I_A`` of a person and a target pose ``P_B``
(17 Gaussian keypoint heatmaps), generate the person in that pose:

- **Stage I**, :class:`UNetG1`: a U-Net-like encoder-decoder on ``I_A ⊕ H_B`` (``3 + 17``
  channels). The encoder is ``n_blocks`` residual blocks (two 3x3 convs + skip), a stride-2 3x3
  conv between blocks, channels ``ngf * (i + 1)``; then a **fully connected bottleneck**
  (flatten → ``z_dim`` → ``ngf * h * w``, no activation) so that every output location sees the
  whole input, and distant body parts exchange information. The decoder mirrors it: at each
  level the encoder feature is concatenated (skip connection), two 3x3 convs + residual, then a
  nearest-neighbour 2x upsampling and a 1x1 conv. ReLU everywhere (``build_model`` passes
  ``tf.nn.relu``), no normalisation, a linear 3x3 output conv (no tanh), as the reference.
  Loss: the *pose-mask L1* :func:`pose_mask_l1`, ``mean(|G1 - I_B| * (1 + M_B))`` with ``M_B``
  the target's dilated body mask (:func:`reidaug.pose.representations.body_mask`).
- **Stage II**, :class:`UNetG2`: the same kind of U-Net without the FC layer on
  ``I_A ⊕ G1(I_A, H_B)`` (6 channels); it predicts a **difference map** that is added to G1's
  output: ``G2 = G1 + D_map``. ``n_blocks - 2`` levels (the reference's ``repeat_num - 2``),
  plain (non-residual) conv pairs, decoder convs all ``ngf`` wide, and skips at every level but
  the full-resolution one (the reference's ``UAE_noFC_After2Noise``; its noise input is off in
  the released ``build_model``; its decoder also concatenates the bottleneck with itself,
  which adds weights but no information, and is left out here).
- :class:`PairDiscriminator`: the DCGAN discriminator of the reference (5x5 stride-2 convs,
  64-128-256-512 channels, batch norm after the first, LeakyReLU 0.2, a linear layer on the
  final ``8 x 4`` map) on **pairs**: ``I_A ⊕ I_B`` (real) against ``I_A ⊕ G2`` (fake),
  6 channels, as the paper's Sec. 3.2 describes, so G2 cannot win by copying the condition
  image. (The released code instead feeds single images and adds ``I_A`` as an extra
  negative; the paper's pair form is what is built here.) Real and fake pairs go through D as
  one batch, as the reference's single ``D(concat(...))`` call, so batch-norm statistics mix
  both.
- :class:`PG2`: stage I updates G1 only (:meth:`PG2.training_step_g1`); stage II keeps G1
  fixed and updates G2 then D (:meth:`PG2.training_step_g2`) with
  ``L_G2 = BCE(D(I_A, G2), 1) + lambda_l1 * pose_mask_l1(G2, I_B, M_B)`` (``lambda_l1 = 10``, the
  released ``g_loss2 += L1Loss2 * 10``) and ``L_D = (BCE(D(I_A, I_B), 1) + BCE(D(I_A, G2), 0))
  / 2``. Adam(2e-5, betas (0.5, 0.999)) for each of G1, G2 and D, the paper's setting.

Images are float ``(B, 3, H, W)`` in ``[-1, 1]`` (:func:`~.gan_common.images_to_tensor`);
heatmaps ``(B, 17, H, W)`` in ``[0, 1]`` and masks ``(B, 1, H, W)`` (or ``(B, H, W)``) in
``{0, 1}``, both from COCO-17 keypoints by :meth:`PG2.pose_maps` (``reidaug.pose``'s torch
path, on the model's device): keypoints from ``extract-pose``, an OpenPose CSV
(:func:`reidaug.pose.openpose.openpose18_to_coco17`) or canonical poses
(:func:`reidaug.pose.canonical.render_canonical`) all work. The FC layer fixes the image size
(``image_height x image_width``, 128 x 64 by default; 256 x 128 with ``n_blocks = 6``).
Constructors place nothing on a device: call :meth:`PG2.to`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reidaug.errors import ConfigError, DataError
from reidaug.pose.skeleton import NUM_KEYPOINTS

from .base import GANConfig, GANModel, PoseMapsConfig, net
from .gan_common import (bce_gan_loss, check_halvings, check_images, describe, init_weights,
                         set_requires_grad)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Losses and checks shared with the deformable model
# --------------------------------------------------------------------------------------------
def pose_mask_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PG2's pose-mask L1: ``mean(|output - target| * (1 + mask))`` over B, C, H, W.

    ``output``/``target`` ``(B, 3, H, W)``; ``mask`` ``(B, 1, H, W)`` (broadcast over the
    channels) in ``{0, 1}``. Equals the reference's ``mean(|d|) + mean(|d| * M)``: pixels on the
    body count twice.
    """
    return ((output.float() - target.float()).abs() * (1.0 + mask.float())).mean()


def check_pose_maps(heatmaps: torch.Tensor, batch: int, size: tuple[int, int], where: str
                    ) -> None:
    """Raise :class:`DataError` unless ``heatmaps`` is a float ``(B, 17, H, W)`` tensor."""
    expected = (batch, NUM_KEYPOINTS, size[0], size[1])
    if not isinstance(heatmaps, torch.Tensor) or tuple(heatmaps.shape) != expected \
            or not heatmaps.is_floating_point():
        raise DataError(f"{where}: expected COCO-17 heatmaps as a float tensor of shape "
                        f"{expected} (B, 17, H, W), found {describe(heatmaps)}. Fix: build them "
                        "with pose_maps(keypoints) (reidaug.pose.representations.heatmaps) at "
                        "the model's image size.")


def check_mask(mask: torch.Tensor, batch: int, size: tuple[int, int], where: str
               ) -> torch.Tensor:
    """Return ``mask`` as float ``(B, 1, H, W)``; accepts ``(B, H, W)`` or ``(B, 1, H, W)``,
    bool or float. Raises :class:`DataError` on any other shape."""
    ok = isinstance(mask, torch.Tensor) and (
        tuple(mask.shape) == (batch, size[0], size[1])
        or tuple(mask.shape) == (batch, 1, size[0], size[1]))
    if not ok:
        raise DataError(f"{where}: expected a body mask of shape ({batch}, 1, {size[0]}, "
                        f"{size[1]}) or ({batch}, {size[0]}, {size[1]}), found {describe(mask)}. "
                        "Fix: "
                        "build it with pose_maps(keypoints) (reidaug.pose.representations."
                        "body_mask) at the model's image size.")
    if mask.ndim == 3:
        mask = mask[:, None]
    return mask.float()


def _same_batch(where: str, **tensors: torch.Tensor) -> int:
    sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"{where}: every input needs the same batch size, found "
                        f"{', '.join(f'{k}={n}' for k, n in sizes.items())}. Fix: pass one "
                        "condition image, target image and target pose per pair.")
    return next(iter(sizes.values()))


def xavier_init(net: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Glorot-uniform conv / linear weights and zero biases (TF-slim's default initialiser,
    which the PG2 generators use), drawn from ``generator``."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
class UNetG1(nn.Module):
    """Stage-I generator: U-Net with residual blocks and a fully connected bottleneck.

    Shapes for ``(B, 20, 128, 64)``, ``ngf=128``, ``n_blocks=5``: encoder levels
    ``(B, 128, 128, 64)``, ``(B, 256, 64, 32)``, ``(B, 384, 32, 16)``, ``(B, 512, 16, 8)``,
    ``(B, 640, 8, 4)``; FC ``20480 → 64 → 4096`` reshaped to ``(B, 128, 8, 4)``; decoder levels
    ``(B, 768, 8, 4)``, ``(B, 1024, 16, 8)``, ``(B, 768, 32, 16)``, ``(B, 512, 64, 32)``,
    ``(B, 256, 128, 64)``; output ``(B, 3, 128, 64)`` (linear).
    """

    def __init__(self, in_ch: int = 3 + NUM_KEYPOINTS, out_ch: int = 3, ngf: int = 128,
                 n_blocks: int = 5, z_dim: int = 64, image_size: tuple[int, int] = (128, 64)
                 ) -> None:
        super().__init__()
        self.ngf, self.n_blocks = ngf, n_blocks
        self.bottleneck = bh, bw = check_halvings(
            "UNetG1", image_size, n_blocks - 1, "(n_blocks - 1)",
            "n_blocks = log2(H) - 2 (5 for 128 x 64, 6 for 256 x 128).", minimum=0)
        self.stem = nn.Sequential(_conv(in_ch, ngf), nn.ReLU(True))
        enc_ch = [ngf * (i + 1) for i in range(n_blocks)]
        self.enc = nn.ModuleList(
            nn.Sequential(_conv(c, c), nn.ReLU(True), _conv(c, c), nn.ReLU(True)) for c in enc_ch)
        self.down = nn.ModuleList(
            nn.Sequential(_conv(enc_ch[i], enc_ch[i + 1], 3, 2), nn.ReLU(True))
            for i in range(n_blocks - 1))
        self.fc_in = nn.Linear(enc_ch[-1] * bh * bw, z_dim)  # (B, C*h*w) -> (B, z)
        self.fc_out = nn.Linear(z_dim, ngf * bh * bw)  # (B, z) -> (B, ngf*h*w)
        dec, up = [], []
        x_ch = ngf
        for idx in range(n_blocks):
            width = x_ch + enc_ch[n_blocks - 1 - idx]  # decoder input ⊕ skip
            dec.append(nn.Sequential(_conv(width, width), nn.ReLU(True), _conv(width, width),
                                     nn.ReLU(True)))
            if idx < n_blocks - 1:
                x_ch = ngf * (n_blocks - idx - 1)
                up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                        _conv(width, x_ch, 1), nn.ReLU(True)))
        self.dec = nn.ModuleList(dec)
        self.up = nn.ModuleList(up)
        self.out = _conv(width, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, ngf, H, W)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x) + x  # residual block: (B, ngf*(i+1), H/2^i, W/2^i)
            skips.append(x)
            if i < self.n_blocks - 1:
                x = self.down[i](x)
        z = self.fc_in(x.flatten(1))  # (B, z_dim): the whole image in one vector
        x = self.fc_out(z).view(x.shape[0], self.ngf, *self.bottleneck)  # (B, ngf, h, w)
        for idx, block in enumerate(self.dec):
            x = torch.cat([x, skips[self.n_blocks - 1 - idx]], 1)
            x = block(x) + x
            if idx < self.n_blocks - 1:
                x = self.up[idx](x)  # (B, ngf*(n-idx-1), 2h, 2w)
        return self.out(x)  # (B, out_ch, H, W), linear


class UNetG2(nn.Module):
    """Stage-II generator: a U-Net without the FC layer; outputs a difference map.

    Shapes for ``(B, 6, 128, 64)``, ``ngf=128``, ``n_blocks=3``: encoder ``(B, 128, 128, 64)``,
    ``(B, 256, 64, 32)``, ``(B, 384, 32, 16)``; decoder ``(B, 128, 32, 16)``, ``(B, 128, 64,
    32)`` (after the level-1 skip), ``(B, 128, 128, 64)`` (no full-resolution skip); output
    ``(B, 3, 128, 64)`` (linear: a difference to add to G1's output).
    """

    def __init__(self, in_ch: int = 6, out_ch: int = 3, ngf: int = 128, n_blocks: int = 3) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ConfigError(f"UNetG2 needs n_blocks >= 1, found {n_blocks}.")
        self.n_blocks = n_blocks
        self.stem = nn.Sequential(_conv(in_ch, ngf), nn.ReLU(True))
        enc_ch = [ngf * (i + 1) for i in range(n_blocks)]
        enc, down = [], []
        prev = ngf
        for i, c in enumerate(enc_ch):
            enc.append(nn.Sequential(_conv(prev, c), nn.ReLU(True), _conv(c, c), nn.ReLU(True)))
            if i < n_blocks - 1:
                down.append(nn.Sequential(_conv(c, c, 3, 2), nn.ReLU(True)))
            prev = c
        self.enc, self.down = nn.ModuleList(enc), nn.ModuleList(down)
        # Skips from levels 1 .. n-2: not the full-resolution level 0, and not the bottleneck
        # (which the decoder starts from).
        self.skip_levels = [lvl for lvl in range(1, n_blocks - 1)]
        dec = []
        for idx in range(n_blocks):
            level = n_blocks - 1 - idx
            width = (enc_ch[-1] if idx == 0 else ngf) + (enc_ch[level] if level in
                                                          self.skip_levels else 0)
            dec.append(nn.Sequential(_conv(width, ngf), nn.ReLU(True), _conv(ngf, ngf),
                                     nn.ReLU(True)))
        self.dec = nn.ModuleList(dec)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = _conv(ngf, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, ngf, H, W)
        feats = []
        for i, block in enumerate(self.enc):
            x = block(x)  # (B, ngf*(i+1), H/2^i, W/2^i)
            feats.append(x)
            if i < self.n_blocks - 1:
                x = self.down[i](x)
        for idx, block in enumerate(self.dec):
            level = self.n_blocks - 1 - idx
            if level in self.skip_levels:
                x = torch.cat([x, feats[level]], 1)
            x = block(x)  # (B, ngf, H/2^level, W/2^level)
            if idx < self.n_blocks - 1:
                x = self.upsample(x)
        return self.out(x)  # (B, out_ch, H, W): the difference map


class PairDiscriminator(nn.Module):
    """DCGAN discriminator on a condition ⊕ image pair: ``(B, 6, H, W)`` → ``(B,)`` logits.

    ``n_layers`` 5x5 stride-2 convs (channels ``ndf * min(2^i, 8)``; batch norm on all but the
    first; LeakyReLU 0.2), then a linear layer on the flattened last map. For 128 x 64 and
    ``n_layers=4``: ``(B, 64, 64, 32)`` … ``(B, 512, 8, 4)``, linear ``16384 → 1``.
    """

    def __init__(self, in_ch: int = 6, ndf: int = 64, n_layers: int = 4,
                 image_size: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        fh, fw = check_halvings("PairDiscriminator", image_size, n_layers, "n_layers",
                                "n_layers = log2(H / 8) (4 for 128 x 64, 5 for 256 x 128).")
        self.in_ch = in_ch
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 5, stride=2, padding=2),
                                   nn.LeakyReLU(0.2, True)]
        c = ndf
        for i in range(1, n_layers):
            c_next = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(c, c_next, 5, stride=2, padding=2, bias=False),
                       nn.BatchNorm2d(c_next), nn.LeakyReLU(0.2, True)]
            c = c_next
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(c * fh * fw, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise DataError(f"PairDiscriminator: expected (B, {self.in_ch}, H, W) = condition "
                            f"image ⊕ image, found shape {tuple(x.shape)}. Fix: concatenate the "
                            "condition and the real or generated image along channels.")
        return self.fc(self.main(x).flatten(1)).squeeze(1)  # (B,)


# --------------------------------------------------------------------------------------------
# Config and model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PG2Config(GANConfig, PoseMapsConfig):
    """Hyper-parameters; defaults are the paper's / released code's for Market-1501 (128 x 64).

    For 256 x 128 crops set ``image_height=256, image_width=128`` (``n_blocks`` then defaults
    to 6, the discriminator to 5 layers: both keep an 8 x 4 bottleneck).
    """

    image_height: int = 128
    image_width: int = 64
    ngf: int = 128  # conv_hidden_num, "n" in the paper
    ndf: int = 64
    n_blocks: int | None = None  # G1 levels; None: log2(H) - 2 (5 at 128, 6 at 256)
    n_blocks_g2: int | None = None  # None: n_blocks - 2 (the reference's repeat_num - 2)
    n_layers_d: int | None = None  # None: log2(H / 8) (an 8-row final map, as DCGAN_128x64)
    z_dim: int = 64  # FC bottleneck size (z_num)
    lambda_l1: float = 10.0  # weight of the pose-mask L1 in G2's loss
    heatmap_sigma: float | None = None  # output pixels; None: 6 * H / 128 (pose-gan's 6 at 128)
    lr_g1: float = 2e-5
    lr_g2: float = 2e-5
    lr_d: float = 2e-5

    @property
    def blocks_g1(self) -> int:
        return self.n_blocks if self.n_blocks is not None else int(math.log2(self.image_height)) - 2

    @property
    def blocks_g2(self) -> int:
        return self.n_blocks_g2 if self.n_blocks_g2 is not None else max(1, self.blocks_g1 - 2)

    @property
    def layers_d(self) -> int:
        return (self.n_layers_d if self.n_layers_d is not None
                else max(1, int(math.log2(self.image_height / 8))))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least(1, "ngf", "ndf", "z_dim")
        if self.image_height < 8 or self.image_width < 4:
            raise ConfigError(f"PG2Config image size must be at least 8 x 4, found "
                              f"{self.image_height} x {self.image_width}. Fix: 128 x 64 (CPU) "
                              "or 256 x 128.")
        self.check_at_least(0, "lambda_l1", "lr_g1", "lr_g2", "lr_d")
        self.check_heatmap_sigma()
        h, w = self.size
        for name, levels, halvings in (("n_blocks", self.blocks_g1, self.blocks_g1 - 1),
                                       ("n_blocks_g2", self.blocks_g2, self.blocks_g2 - 1),
                                       ("n_layers_d", self.layers_d, self.layers_d)):
            if levels < 1 or (name == "n_blocks" and levels < 2):
                raise ConfigError(f"PG2Config.{name} must be >= {2 if name == 'n_blocks' else 1}"
                                  f", found {levels}. Fix: leave it None (derived from the "
                                  "image height) or raise it.")
            scale = 2 ** halvings
            if h % scale or w % scale:
                raise ConfigError(
                    f"PG2Config image size {h} x {w} is not divisible by 2^{halvings} = {scale}, "
                    f"which {name}={levels} needs ({halvings} stride-2 layers). Fix: resize the "
                    f"crops to multiples of {scale} (e.g. 128 x 64 or 256 x 128) or set {name} "
                    "lower.")


class PG2(GANModel):
    """G1, G2 and the pair discriminator with one Adam optimiser each.

    Stage I: call :meth:`training_step_g1` until G1 converges (22k iterations of batch 16 on
    Market in the paper); stage II: :meth:`training_step_g2` (14k). Both stages live in one
    :meth:`state_dict`, so a checkpoint taken in either stage resumes bit-identically on the
    CPU; ``step_g1`` / ``step_g2`` count the updates of each (``step``, their sum).
    """

    name = "pg2"
    title = "PG2"
    config_class = PG2Config
    counters = ("step_g1", "step_g2")
    G1, G2, D = net(), net(), net()

    def __init__(self, config: PG2Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        self.nets.update({
            "G1": xavier_init(UNetG1(3 + NUM_KEYPOINTS, 3, cfg.ngf, cfg.blocks_g1, cfg.z_dim,
                                     cfg.size), gen),
            "G2": xavier_init(UNetG2(6, 3, cfg.ngf, cfg.blocks_g2), gen),
            "D": init_weights(PairDiscriminator(6, cfg.ndf, cfg.layers_d, cfg.size),
                              cfg.init_gain, gen)})
        self.configure_optimizers()

    @property
    def step(self) -> int:
        """Updates of both stages together."""
        return self.step_g1 + self.step_g2

    def configure_optimizers(self) -> None:
        """Adam for G1, G2 and D (constant learning rates, as the paper)."""
        cfg = self.config
        self.add_optimizer("G1", self.G1.parameters(), cfg.lr_g1)
        self.add_optimizer("G2", self.G2.parameters(), cfg.lr_g2)
        self.add_optimizer("D", self.D.parameters(), cfg.lr_d)

    # -- pose inputs ---------------------------------------------------------------------------
    def pose_maps(self, keypoints: Any, src_hw: tuple[int, int] | None = None,
                  threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """COCO-17 keypoints ``(B, 17, 3)`` (numpy or torch; pixels of ``src_hw``, default the
        model's size) → heatmaps ``(B, 17, H, W)`` and body mask ``(B, 1, H, W)`` float, on the
        model's device. A keypoint counts when its score is above ``threshold``."""
        from reidaug.pose.representations import body_mask, heatmaps

        kp = torch.as_tensor(np.asarray(keypoints) if not isinstance(keypoints, torch.Tensor)
                             else keypoints, dtype=torch.float32).to(self.device)
        if kp.ndim == 2:
            kp = kp[None]
        hm = heatmaps(kp, self.config.size, src_hw, sigma=self.config.sigma, threshold=threshold)
        mask = body_mask(kp, self.config.size, src_hw, threshold=threshold)  # (B, H, W) bool
        return hm, mask[:, None].float()

    def _check_step(self, where: str, cond: torch.Tensor, target: torch.Tensor | None,
                    target_heatmaps: torch.Tensor, target_mask: torch.Tensor | None
                    ) -> torch.Tensor | None:
        size = self.config.size
        check_images(cond, f"{where}(cond)", multiple=1, size=size)
        tensors = {"cond": cond, "target_heatmaps": target_heatmaps}
        if target is not None:
            check_images(target, f"{where}(target)", multiple=1, size=size)
            tensors["target"] = target
        batch = _same_batch(where, **tensors)
        check_pose_maps(target_heatmaps, batch, size, f"{where}(target_heatmaps)")
        if target_mask is None:
            return None
        return check_mask(target_mask, batch, size, f"{where}(target_mask)")

    # -- training -------------------------------------------------------------------------------
    def training_step_g1(self, cond: torch.Tensor, target: torch.Tensor,
                         target_heatmaps: torch.Tensor, target_mask: torch.Tensor
                         ) -> dict[str, float]:
        """One stage-I update of G1 on ``cond`` / ``target`` ``(B, 3, H, W)`` in ``[-1, 1]``,
        the target's heatmaps ``(B, 17, H, W)`` and body mask ``(B, 1, H, W)``.

        Returns ``G1`` (the pose-mask L1 it minimises) and ``G1_l1`` (plain L1, to compare).
        """
        mask = self._check_step("PG2.training_step_g1", cond, target, target_heatmaps,
                                target_mask)
        self.G1.train()
        g1 = self.G1(torch.cat([cond, target_heatmaps.to(cond.dtype)], 1))  # (B, 3, H, W)
        loss = pose_mask_l1(g1, target, mask)
        self.update("G1", loss)
        self.step_g1 += 1
        return {"G1": float(loss.detach()),
                "G1_l1": float(F.l1_loss(g1.detach().float(), target.float()))}

    def training_step_g2(self, cond: torch.Tensor, target: torch.Tensor,
                         target_heatmaps: torch.Tensor, target_mask: torch.Tensor
                         ) -> dict[str, float]:
        """One stage-II update: G2 (G1 fixed, D frozen), then D, on the same inputs as
        :meth:`training_step_g1`.

        Returns ``G2_adv``, ``G2_l1`` (pose-mask L1), ``G2`` (``adv + lambda_l1 * l1``),
        ``D_real``, ``D_fake``, ``D`` (their mean).
        """
        cfg = self.config
        mask = self._check_step("PG2.training_step_g2", cond, target, target_heatmaps,
                                target_mask)
        self.train()
        b = cond.shape[0]
        with torch.no_grad():  # stage II trains G2 and D only
            g1 = self.G1(torch.cat([cond, target_heatmaps.to(cond.dtype)], 1))
        real_pair = torch.cat([cond, target], 1)  # (B, 6, H, W)

        set_requires_grad([self.D], False)
        g2 = g1 + self.G2(torch.cat([cond, g1], 1))  # G1 output + difference map
        logits = self.D(torch.cat([real_pair, torch.cat([cond, g2], 1)], 0))  # (2B,)
        g_adv = bce_gan_loss(logits[b:], True)
        g_l1 = pose_mask_l1(g2, target, mask)
        g_loss = g_adv + cfg.lambda_l1 * g_l1
        self.update("G2", g_loss)

        set_requires_grad([self.D], True)
        logits = self.D(torch.cat([real_pair, torch.cat([cond, g2.detach()], 1)], 0))  # (2B, 1)
        d_real, d_fake, d_loss = self.update_bce_discriminator(logits[:b], logits[b:])
        self.step_g2 += 1
        return self.as_floats({"G2_adv": g_adv, "G2_l1": g_l1, "G2": g_loss, "D_real": d_real,
                               "D_fake": d_fake, "D": d_loss})

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, cond: torch.Tensor, target_heatmaps: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cond`` ``(B, 3, H, W)`` in ``[-1, 1]`` and target heatmaps ``(B, 17, H, W)`` →
        ``(g1, g2)``: stage-I and stage-II images ``(B, 3, H, W)``, clamped to ``[-1, 1]``.
        H x W must be the config's size (the FC layer fixes it). Eval mode, restored after."""
        self._check_step("PG2.generate", cond, None, target_heatmaps, None)
        with self.eval_mode():
            g1 = self.G1(torch.cat([cond, target_heatmaps.to(cond.dtype)], 1))
            g2 = g1 + self.G2(torch.cat([cond, g1], 1))
            return g1.clamp(-1, 1), g2.clamp(-1, 1)
