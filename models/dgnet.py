"""DG-Net's generator: appearance / structure codes, swapped between people.

DG-Net (Zheng et al., "Joint Discriminative and Generative Learning for Person Re-identification",
CVPR 2019) encodes each person image ``x`` into an appearance code ``a = E_a(x)`` (clothes, colours: a
re-ID encoder that also carries the identity classifier) and a structure code ``s = E_s(gray(x))`` (pose,
body shape, background: a shallow encoder on the grey-scale image, so it cannot carry colour). The
decoder ``G(a, s)`` injects ``a`` into ``s`` by adaptive instance norm (AdaIN) whose scales and biases an
MLP computes from ``a``; ``G(a_i, s_j)`` dresses person j's pose in person i's clothes. This module
follows the official code (NVlabs/DG-Net: ``networks.py``, ``trainer.py``, ``reIDmodel.py``,
``configs/latest.yaml``) in losses, weights and layout:

- :class:`StructureEncoder` (``ContentEncoder``): grey ``(B, 1, H, W)`` -> conv3x3/2 (d) -> conv3x3
  (2d) -> conv3x3 (2d) -> conv3x3/2 (4d) -> ``n_res`` residual blocks -> ASPP (a 1x1 branch, 3x3 branches
  dilated 3, 6, 9) -> ``s`` ``(B, 8d, H/4, W/4)``; instance norm, LeakyReLU 0.2, reflection padding.
  ``d = struct_dim`` (16).
- :class:`Decoder` (``AdaINGen.dec`` + its MLPs): ``n_res`` residual blocks with AdaIN on ``s`` (two per
  block), two [x2 nearest upsampling, conv5x5 (halving channels), layer norm, LeakyReLU], two conv3x3,
  conv1x1 to RGB. The MLP (3 linear layers, ``mlp_dim`` 512, LeakyReLU) maps ``a`` to every AdaIN scale
  and bias.
- :class:`MultiScaleDiscriminator` (``MsImageDis``): ``d_scales`` (3) PatchGANs on the image and on
  3x3/2 average-pooled copies; each conv1x1 (ndf 32), conv3x3, conv3x3/2, ``d_layers - 1`` x [conv3x3,
  conv3x3/2 (doubling, <= 512)], ``d_res`` (4) residual blocks, conv1x1 to one score per patch; no norm.
- :class:`AppearanceEncoder`: a backbone of :mod:`reidaug.train.backbones` (``app_backbone``), global
  average pooling, a linear projection to the ``app_dim``-d appearance code and a linear identity
  classifier on it (``num_classes`` train identities).

Losses of one :meth:`DGNet.training_step` (``trainer.py`` ``gen_update`` / ``dis_update``, weights of
``latest.yaml``), for images ``x`` (identities ``y``), ``x_pos`` (another image of each ``y``) and
``x_other`` (identities ``y_other``), swaps ``cross_x = G(a_x, s_other)`` (identity ``y``) and
``cross_o = G(a_other, s_x)`` (identity ``y_other``):

- ``rec_x``: ``lambda_x`` (5, ``recon_x_w``) x L1 of ``G(a_x, s_x)`` to ``x`` and of ``G(a_o, s_o)`` to
  ``x_other``; ``rec_xp``: ``lambda_xp`` (5, ``recon_xp_w``) x L1 of ``G(a_pos, s_x)`` to ``x`` (the
  same person's other image gives the clothes).
- ``rec_a`` / ``rec_s``: warm-up x ``lambda_a`` / ``lambda_s`` (1, ``max_w``) x L1 of ``E_a(cross)`` to
  the (detached) appearance source's code and of ``E_s(gray(cross))`` to the structure source's code.
  ``E_a`` on generated images is a frozen copy (gradients reach the image only; batch norm in training
  mode, everything else in eval mode: ``id_a_copy`` with ``train_bn``). ``E_s`` is, with probability
  ``encoder_again`` (0.5, ``use_encoder_again``), trained on the detached images, else a frozen copy on
  the live ones.
- ``cyc``: warm-up x ``lambda_cycle`` (2, ``max_cyc_w``) x L1 of ``G(E_a(cross_x), E_s(cross_o))`` to
  ``x`` (and the mirror to ``x_other``).
- ``id_real``: ``lambda_id`` (1, ``id_w``) x cross-entropy of the classifier on ``x`` and ``x_other``;
  ``id_pos``: ``lambda_pid`` (1, ``pid_w``) on ``x_pos``; ``id_fake``: ``lambda_id_fake`` (0.5,
  ``recon_id_w``) on the frozen ``E_a`` of ``cross_x`` (label ``y``) and ``cross_o`` (``y_other``): a
  generated image has the identity of its appearance source.
- ``G_adv``: ``lambda_gan`` (1, ``gan_w``) x the reference's LSGAN generator loss, ``2 mean((D_k - 1)^2)``
  summed over scales, for both swaps. ``D``: ``mean(D_k(fake)^2) + mean((D_k(real) - 1)^2)`` summed over
  scales, plus ``lambda_reg`` (0.01, ``dis.LAMBDA``) x the mean over images of ``|grad_x D_k(real)|^2``
  (``D_reg``), for both pairs.

The warm-up (``warm_iter`` 30,000 of ``max_iter`` 100,000, then ``warm_scale`` 0.0005 per iteration up to
``max_w`` 1) is a factor ``w`` in [0, 1] that is 0 until ``warmup_start`` x ``total_steps`` (0.3) and
grows linearly to 1 over ``warmup_length`` x ``total_steps`` (0.02 = 2,000 of 100,000 iterations).
Optimisers as the reference: Adam(``lr_g`` 1e-4, betas (0, 0.999)) for ``E_s`` and ``G``,
Adam(``lr_d`` 1e-4) for ``D``, SGD(``lr_app`` 2e-3, x10 for the new projection and classifier, momentum
0.9, Nesterov) for ``E_a``, weight decay 5e-4 everywhere, every learning rate x ``lr_gamma`` (0.1) from
``lr_decay_at`` x ``total_steps`` (0.6: ``step_size`` 60,000); the rates are a function of
:attr:`DGNet.step`, so a resumed run uses the same ones.

Deviations from the reference, and why:

- CPU-sized defaults: 128 x 64 crops (reference 256 x 128) and a small appearance encoder
  (EfficientNet-Lite0 with this install's ImageNet weights, ``last_stride`` 1, global average pooling, a
  512-d code) instead of ResNet-50 ``ft_netAB`` whose 4-stripe max-pooled 2048 x 4 = 8192-d feature is the
  code (classifier on a separate global-pooled branch). Here the classifier (one linear layer) sits on the
  code itself. Inputs of the backbone are converted from [-1, 1] to ImageNet mean/std, what
  :mod:`reidaug.train.backbones` expects; the reference's x2 upsampling of small inputs (``scale2``) is
  not done.
- One MLP from ``a`` to all AdaIN parameters, where the reference has eight (scale and bias for each of
  the four stripes of its code, one stripe per residual block). The AdaIN scale is ``1 + gamma(a)``
  (the reference: ``gamma(a)``), so with this project's N(0, ``init_gain``) initialisation (``g_init``
  "normal", the default) the decoder starts as plain instance norm instead of zeroing its blocks, its output
  a near-constant grey (std ~0.003) barely moved by ``a``. ``g_init`` "kaiming" is the reference's init of the
  structure encoder and decoder (the appearance encoder keeps its backbone's, the discriminator N(0, 0.02)):
  the decoder starts at image scale, modulated by ``a``. On tiny synthetic people it reconstructs better and
  moves more of a swap by ``a`` at equal steps (BENCHMARKS, DG-Net).
- ``d_init`` "normal" (the default) is the reference's N(0, 0.02) discriminator. With no normalisation its
  1x1 input convolution (fan-in 3) and four 3x3 convolutions each shrink the signal (x0.035, then ~x0.34 each),
  so at step 0 the score maps move ~1e-6 with the image (an image and its grey copy score the same to
  ~1e-6): the discriminator starts as a bias and its gradients to the early layers vanish. The reference
  has 100k steps to climb out of it; ``d_init`` "kaiming" starts it image-sensitive. Measured on CUHK01 (3,000
  steps, BENCHMARKS, DG-Net) it is worse: the gradient penalty dominates early and the generator learns to
  ignore the appearance code (every swap looks like its structure source). Kept for the record, not advised.
- The decoder ends in tanh (images in [-1, 1], as every GAN here); the reference outputs ImageNet-normalised
  values without tanh. Its layer norm (mean / unbiased std over C, H, W, per-channel affine) is
  ``GroupNorm(1, C)`` (biased variance, eps inside the square root). ASPP's dilated convolutions use zero
  padding (reflection padding needs feature maps larger than the dilation, 9).
- Not implemented: the re-ID side of DG-Net (primary feature learning with a teacher's soft labels,
  ``teacher_w``, and fine-grained mining, ``B_w``), which trains the re-ID model on the fakes and needs a
  separately trained teacher: this project trains its re-ID models on the saved fakes elsewhere. No random
  erasing of ``E_a``'s inputs (augmentation is the data loader's), no VGG loss (``vgg_w`` 0 there too).
- ``x_other`` comes without a positive image, so ``rec_xp`` and ``id_pos`` are computed for ``x`` only
  (the reference: for both images of a pair). ``E_a`` encodes ``x``, ``x_other`` and ``x_pos`` in one
  batch (batch-norm statistics over the three); the structure encoder, decoder and discriminator
  normalise per image, so batching them changes nothing.
- One warm-up factor for ``rec_a``, ``rec_s`` and ``cyc``: the reference grows each weight by the same
  0.0005 per iteration, so its cycle weight (max 2) reaches its maximum 2,000 iterations after the
  others; here all reach theirs together. ``id_fake`` is not warmed up (``recon_id_w`` is constant in
  the reference too). Terms whose weight is 0 are not computed (as the reference).
- Order: the generator / encoder update, then the discriminator on the same step's fakes, detached (the
  reference updates D first, with a fresh forward pass).

Determinism: weights come from a ``torch.Generator`` seeded with ``config.seed`` (the backbone's own
random initialisation and the projection's under a forked, seeded global RNG, which is restored), the
random choices of a step (``encoder_again``, and a seed for whatever a backbone draws from the global
RNG, e.g. EfficientNet's drop-connect) from the saved generator ``rng``: on the CPU a resumed run is
bit-identical to an uninterrupted one, and the caller's global RNG is untouched. Images are float
``(B, 3, H, W)`` in [-1, 1]; constructors place nothing on a device (call :meth:`DGNet.to`).
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812  (torch's conventional alias)

from reidaug.errors import ConfigError, DataError, did_you_mean
from reidaug.train.backbones import BACKBONES, build_backbone

from .base import GANConfig, GANModel, net
from .gan_common import check_images, describe, init_weights, lsgan_loss, set_requires_grad

#: ImageNet statistics the re-ID backbones expect their input normalised with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gray(x: torch.Tensor) -> torch.Tensor:
    """The structure encoder's input: ``(B, 3, H, W)`` -> ``(B, 1, H, W)``, the channel mean (``to_gray``)."""
    return x.mean(dim=1, keepdim=True)


def _halve(n: int) -> int:
    """Output size of a 3x3 stride-2 layer with padding 1 (conv or average pooling)."""
    return (n - 1) // 2 + 1


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
#: weight initialisations of ``g_init`` / ``d_init``
INITS = ("normal", "kaiming")


def kaiming_init(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """The reference's ``weights_init('kaiming')``: conv / linear weights ``kaiming_normal_(a=0, fan_in)``,
    biases 0, drawn from ``generator``."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


@dataclass(frozen=True)
class DGNetConfig(GANConfig):
    """Hyper-parameters; defaults are ``configs/latest.yaml``'s unless the module docstring says otherwise.
    ``num_classes`` (the number of train identities) must be set."""

    beta1: float = 0.0  # DG-Net: Adam betas (0, 0.999)
    num_classes: int = 0  # train identities (the classifier of E_a); required, >= 2
    image_height: int = 128  # the reference: 256 x 128
    image_width: int = 64
    app_backbone: str = "efficientnet_lite0"  # reidaug.train.backbones name ("tiny" for tests)
    app_pretrained: str = "imagenet"  # "imagenet", "none" or a path to ImageNet weights
    app_dim: int = 512  # appearance code length (the reference: 8192 = 4 stripes x 2048)
    struct_dim: int = 16  # gen.dim: width of E_s's first conv; s has 8 x struct_dim channels
    n_res: int = 4  # gen.n_res: residual blocks in E_s and AdaIN residual blocks in G
    mlp_dim: int = 512  # gen.mlp_dim
    ndf: int = 32  # dis.dim
    d_layers: int = 2  # dis.n_layer: stride-2 convs per scale
    d_res: int = 4  # dis.n_res
    d_scales: int = 3  # dis.num_scales
    lambda_x: float = 5.0  # recon_x_w: G(a_i, s_i) -> x_i
    lambda_xp: float = 5.0  # recon_xp_w: G(a_pos, s_i) -> x_i
    lambda_a: float = 1.0  # max_w: appearance code reconstruction (after warm-up)
    lambda_s: float = 1.0  # max_w: structure code reconstruction (after warm-up)
    lambda_cycle: float = 2.0  # max_cyc_w: G(E_a(x_ij), E_s(x_ji)) -> x_i (after warm-up)
    lambda_id: float = 1.0  # id_w: identity loss on x and x_other
    lambda_pid: float = 1.0  # pid_w: identity loss on x_pos
    lambda_id_fake: float = 0.5  # recon_id_w: identity loss on the swaps (label of the appearance source)
    lambda_gan: float = 1.0  # gan_w
    lambda_reg: float = 0.01  # dis.LAMBDA: gradient penalty on real images
    encoder_again: float = 0.5  # use_encoder_again: probability E_s trains on the detached swaps
    g_init: str = "normal"  # E_s + decoder weights: "normal" N(0, init_gain) or "kaiming" (the reference's init)
    d_init: str = "normal"  # D's weights: "normal" N(0, init_gain) (the reference's) or "kaiming"
    lr_g: float = 1e-4  # Adam, E_s + decoder
    lr_d: float = 1e-4  # Adam, discriminator
    lr_app: float = 2e-3  # lr2: SGD, E_a's backbone (x10 for its projection and classifier)
    weight_decay: float = 5e-4
    total_steps: int = 100_000  # max_iter: the schedules below are fractions of it
    warmup_start: float = 0.3  # warm_iter / max_iter
    warmup_length: float = 0.02  # (1 / warm_scale) / max_iter: the ramp from 0 to 1
    lr_decay_at: float = 0.6  # step_size / max_iter
    lr_gamma: float = 0.1  # gamma, gamma2

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not self.num_classes >= 2:
            raise ConfigError(f"{name}.num_classes must be >= 2 (the identities of the train split, for the "
                              f"appearance encoder's classifier), found {self.num_classes}. Fix: set num_classes "
                              "to the number of train identities (751 for Market-1501).")
        if self.app_backbone not in BACKBONES:
            raise ConfigError(f"{name}.app_backbone: unknown backbone {self.app_backbone!r}."
                              f"{did_you_mean(self.app_backbone, BACKBONES)} Fix: one of "
                              f"{', '.join(sorted(BACKBONES))} (\"tiny\" with app_pretrained \"none\" for tests).")
        self.check_at_least(1, "image_height", "image_width", "app_dim", "struct_dim", "mlp_dim", "ndf",
                            "d_layers", "d_scales", "total_steps")
        self.check_at_least(0, "n_res", "d_res", "lambda_x", "lambda_xp", "lambda_a", "lambda_s", "lambda_cycle",
                            "lambda_id", "lambda_pid", "lambda_id_fake", "lambda_gan", "lambda_reg", "lr_g", "lr_d",
                            "lr_app", "weight_decay")
        for field, reference, other in (("g_init", "kaiming", "normal"), ("d_init", "normal", "kaiming")):
            if getattr(self, field) not in INITS:
                raise ConfigError(f"{name}.{field} must be one of {', '.join(INITS)}, found {getattr(self, field)!r}. "
                                  f"Fix: \"{reference}\" (the reference's) or \"{other}\".")
        for field in ("encoder_again", "warmup_start", "warmup_length", "lr_decay_at", "lr_gamma"):
            value = getattr(self, field)
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}.{field} must be in [0, 1] (a fraction), found {value}. Fix: e.g. "
                                  f"{getattr(DGNetConfig, field)} (the reference's).")
        h, w = self.image_height, self.image_width
        if h % 4 or w % 4 or min(h, w) < 8:
            raise ConfigError(f"{name} image size must be multiples of 4 and at least 8 (the structure code is "
                              f"H/4 x W/4 and the decoder upsamples it twice), found {h} x {w}. Fix: e.g. 128 x 64.")
        smallest = min(self._d_side(h), self._d_side(w))
        if smallest < 2:
            raise ConfigError(f"{name} image size {h} x {w} is too small for the discriminator: its coarsest scale "
                              f"(d_scales={self.d_scales}, d_layers={self.d_layers}) would end at a side of "
                              f"{smallest}, reflection padding needs >= 2. Fix: larger crops (128 x 64), or fewer "
                              "d_scales / d_layers.")

    def _d_side(self, n: int) -> int:
        """A side of the coarsest discriminator scale's last map: ``d_scales - 1`` poolings, ``d_layers`` convs."""
        for _ in range(self.d_scales - 1 + self.d_layers):
            n = _halve(n)
        return n

    @property
    def s_channels(self) -> int:
        """Channels of the structure code (``8 * struct_dim``: 128 by default)."""
        return 8 * self.struct_dim


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, k: int, stride: int = 1, norm: bool = True, act: bool = True,
          dilation: int = 1, reflect: bool = True) -> nn.Sequential:
    """The reference's ``Conv2dBlock``: pad, conv (with bias), instance norm (no affine), LeakyReLU 0.2."""
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if reflect and pad else []
    layers.append(nn.Conv2d(cin, cout, k, stride, padding=0 if reflect else pad, dilation=dilation))
    if norm:
        layers.append(nn.InstanceNorm2d(cout))
    if act:
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """conv3x3 - [IN] - LeakyReLU - conv3x3 - [IN], plus the skip: ``(B, C, H, W)`` (``H, W >= 2``)."""

    def __init__(self, dim: int, norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(dim, dim, 3, norm=norm), _conv(dim, dim, 3, norm=norm, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the structure encoder: ``(B, C, h, w) -> (B, 2C, h, w)``.

    Four branches of ``C/2`` channels (1x1; 1x1 then 3x3 with dilation 3, 6, 9), concatenated, fused by a
    1x1 conv; instance norm, no activation at the end."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.branches = nn.ModuleList([_conv(dim, half, 1, act=False)] + [
            nn.Sequential(_conv(dim, half, 1), _conv(half, half, 3, act=False, dilation=d, reflect=False))
            for d in (3, 6, 9)])
        self.fuse = _conv(4 * half, 2 * dim, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([b(x) for b in self.branches], dim=1))


class StructureEncoder(nn.Module):
    """``E_s``: grey images ``(B, 1, H, W)`` -> structure codes ``(B, 8 d, H/4, W/4)`` (``d = dim``).

    Shapes at 128 x 64, ``d = 16``: conv3x3/2 ``(B, 16, 64, 32)``, conv3x3 ``(B, 32, 64, 32)``, conv3x3
    (same), conv3x3/2 ``(B, 64, 32, 16)``, ``n_res`` residual blocks (same), ASPP ``(B, 128, 32, 16)``.
    """

    def __init__(self, dim: int = 16, n_res: int = 4) -> None:
        super().__init__()
        self.model = nn.Sequential(
            _conv(1, dim, 3, stride=2), _conv(dim, 2 * dim, 3),
            _conv(2 * dim, 2 * dim, 3), _conv(2 * dim, 4 * dim, 3, stride=2),
            *[ResBlock(4 * dim) for _ in range(n_res)], ASPP(4 * dim))
        self.out_channels = 8 * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class AdaIN(nn.Module):
    """Instance norm whose per-image, per-channel scale ``1 + gamma`` and bias ``beta`` come from outside."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(dim, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        # x (B, C, h, w); gamma, beta (B, C)
        return self.norm(x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class AdaINResBlock(nn.Module):
    """conv3x3 - AdaIN - LeakyReLU - conv3x3 - AdaIN, plus the skip; ``params`` ``(B, 2, 2, C)``: per AdaIN
    layer, (gamma, beta)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(dim, dim, 3, norm=False, act=False), _conv(dim, dim, 3, norm=False, act=False)
        self.norm1, self.norm2 = AdaIN(dim), AdaIN(dim)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x), params[:, 0, 0], params[:, 0, 1]), 0.2)
        return x + self.norm2(self.conv2(h), params[:, 1, 0], params[:, 1, 1])


class Decoder(nn.Module):
    """``G``: structure ``(B, C, h, w)`` and appearance ``(B, app_dim)`` -> images ``(B, 3, 4h, 4w)`` in [-1, 1].

    The MLP maps ``a`` to ``(B, n_res, 2, 2, C)`` AdaIN parameters. Shapes at 128 x 64, ``C = 128``:
    ``n_res`` AdaIN blocks ``(B, 128, 32, 16)``, upsample + conv5x5 ``(B, 64, 64, 32)``, ``(B, 32, 128, 64)``,
    two conv3x3 (same), conv1x1 + tanh ``(B, 3, 128, 64)``.
    """

    def __init__(self, dim: int, app_dim: int, mlp_dim: int = 512, n_res: int = 4) -> None:
        super().__init__()
        self.dim, self.n_res = dim, n_res
        self.mlp = nn.Sequential(nn.Linear(app_dim, mlp_dim), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(mlp_dim, mlp_dim), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(mlp_dim, n_res * 2 * 2 * dim))
        self.blocks = nn.ModuleList([AdaINResBlock(dim) for _ in range(n_res)])
        up: list[nn.Module] = []
        c = dim
        for _ in range(2):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(c, c // 2, 5, norm=False, act=False),
                   nn.GroupNorm(1, c // 2), nn.LeakyReLU(0.2, inplace=True)]
            c //= 2
        up += [_conv(c, c, 3, norm=False), _conv(c, c, 3, norm=False), nn.Conv2d(c, 3, 1), nn.Tanh()]
        self.up = nn.Sequential(*up)

    def adain_params(self, a: torch.Tensor) -> torch.Tensor:
        """``(B, app_dim)`` -> ``(B, n_res, 2, 2, C)``: per block, per AdaIN layer, (gamma, beta)."""
        return self.mlp(a).view(a.shape[0], self.n_res, 2, 2, self.dim)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        params = self.adain_params(a)
        h = s
        for i, block in enumerate(self.blocks):
            h = block(h, params[:, i])
        return self.up(h)


class AppearanceEncoder(nn.Module):
    """``E_a``: images ``(B, 3, H, W)`` in [-1, 1] -> appearance codes ``(B, app_dim)`` and identity logits
    ``(B, num_classes)``: ImageNet normalisation, the backbone's feature map, global average pooling, a
    linear projection (the code), a linear classifier on the code."""

    def __init__(self, backbone: nn.Module, app_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.out_dim, app_dim)
        self.classifier = nn.Linear(app_dim, num_classes)
        # constants, not weights: not in the state_dict
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The new layers (projection and classifier): the reference trains them at 10x the backbone's rate."""
        return itertools.chain(self.proj.parameters(), self.classifier.parameters())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet mean/std, as the backbones expect
        a = self.proj(self.backbone(z).mean(dim=(2, 3)))  # (B, app_dim)
        return a, self.classifier(a)


class ScaleDiscriminator(nn.Module):
    """One scale of ``MsImageDis``: ``(B, 3, H, W)`` -> ``(B, 1, H / 2^L, W / 2^L)`` patch scores, no norm."""

    def __init__(self, ndf: int = 32, n_layers: int = 2, n_res: int = 4) -> None:
        super().__init__()
        d = ndf
        layers: list[nn.Module] = [_conv(3, d, 1, norm=False), _conv(d, d, 3, norm=False),
                                   _conv(d, d, 3, stride=2, norm=False)]
        for _ in range(n_layers - 1):
            d2 = min(2 * d, 512)
            layers += [_conv(d, d, 3, norm=False), _conv(d, d2, 3, stride=2, norm=False)]
            d = d2
        layers += [ResBlock(d, norm=False) for _ in range(n_res)]
        layers.append(nn.Conv2d(d, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """``D``: ``n_scales`` :class:`ScaleDiscriminator`\\ s on the image and on 3x3/2 average-pooled copies;
    returns one score map per scale, finest first."""

    def __init__(self, ndf: int = 32, n_layers: int = 2, n_res: int = 4, n_scales: int = 3) -> None:
        super().__init__()
        self.scales = nn.ModuleList([ScaleDiscriminator(ndf, n_layers, n_res) for _ in range(n_scales)])
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            outs.append(d(x))
        return outs


def frozen_call(module: nn.Module, x: torch.Tensor, batchnorm_train: bool = False) -> torch.Tensor:
    """``module(x)`` as the reference's deep copies do it: gradients reach ``x`` but no weight, batch-norm
    running statistics stay as they are; the module runs in eval mode except batch norm when
    ``batchnorm_train`` (batch statistics, as ``id_a_copy`` with ``train_bn``). Modes are restored."""
    state = {k: v.detach() for k, v in module.named_parameters()}
    state.update({k: v.clone() for k, v in module.named_buffers()})
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        if batchnorm_train:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        return torch.func.functional_call(module, state, (x,))
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (CPU, and ``device`` when CUDA) seeded with ``seed``; restore it after."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it would reseed every GPU for good
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class DGNet(GANModel):
    """DG-Net's encoders, decoder and discriminator with their optimisers (see the module docstring).

    Nets: ``G_app`` (:class:`AppearanceEncoder`, with the identity classifier), ``G_struct``
    (:class:`StructureEncoder`), ``G_dec`` (:class:`Decoder`), ``D`` (:class:`MultiScaleDiscriminator`);
    :meth:`generator_weights` holds the first three (what :meth:`swap` needs). Optimisers ``G`` (Adam:
    ``G_struct`` + ``G_dec``), ``app`` (SGD: ``G_app``) and ``D`` (Adam).
    """

    name = "dgnet"
    title = "DG-Net"
    config_class = DGNetConfig
    G_app, G_struct, G_dec, D = net(), net(), net(), net()

    def __init__(self, config: DGNetConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        def initialised(net: nn.Module, init: str) -> nn.Module:
            return kaiming_init(net, gen) if init == "kaiming" else init_weights(net, cfg.init_gain, gen)

        # Layers draw their default init from the global RNG when built (a randomly initialised backbone
        # keeps it): fork it, seeded from ``gen``, so the weights depend on the seed only and the caller's
        # RNG is left as it was.
        with seeded_global_rng(int(torch.randint(2 ** 62, (), generator=gen)), torch.device("cpu")):
            backbone = build_backbone(cfg.app_backbone, cfg.app_pretrained, last_stride=1)
            app = AppearanceEncoder(backbone, cfg.app_dim, cfg.num_classes)
            init_weights(app.proj, cfg.init_gain, gen)  # the backbone keeps its (pretrained) weights
            init_weights(app.classifier, cfg.init_gain, gen)
            self.nets.update({
                "G_app": app,
                "G_struct": initialised(StructureEncoder(cfg.struct_dim, cfg.n_res), cfg.g_init),
                "G_dec": initialised(Decoder(cfg.s_channels, cfg.app_dim, cfg.mlp_dim, cfg.n_res), cfg.g_init),
                "D": initialised(MultiScaleDiscriminator(cfg.ndf, cfg.d_layers, cfg.d_res, cfg.d_scales),
                                 cfg.d_init)})
        # the random choices of training steps: in the checkpoint, so a resumed run draws the same
        self.rng = self.add_state("rng", torch.Generator().manual_seed(cfg.seed + 1))
        self.configure_optimizers()

    def configure_optimizers(self) -> None:
        """The reference's three optimisers: Adam for E_s + decoder and for D, SGD for the appearance
        encoder (its new layers at 10x), all with weight decay."""
        cfg = self.config
        for name, params, lr in (("G", itertools.chain(self.G_struct.parameters(), self.G_dec.parameters()), cfg.lr_g),
                                 ("D", self.D.parameters(), cfg.lr_d)):
            opt = self.add_optimizer(name, params, lr)
            opt.param_groups[0]["weight_decay"] = cfg.weight_decay
        head = {id(p) for p in self.G_app.head_parameters()}
        base = [p for p in self.G_app.parameters() if id(p) not in head]
        opt = torch.optim.SGD([{"params": base, "lr": cfg.lr_app},
                               {"params": list(self.G_app.head_parameters()), "lr": cfg.lr_app * 10}],
                              lr=cfg.lr_app, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        self.optimizers["app"] = opt  # registered like add_optimizer's: saved as "optimizer_app"
        self.optimizer_app = opt

    # -- schedules ----------------------------------------------------------------------------
    def warmup_weight(self, step: int | None = None) -> float:
        """The warm-up factor in [0, 1] of ``rec_a``, ``rec_s`` and ``cyc`` at ``step`` (default: the
        coming step, :attr:`step`): 0 up to ``warmup_start * total_steps``, then linear to 1 over
        ``warmup_length * total_steps``."""
        cfg = self.config
        step = self.step if step is None else step
        start, length = cfg.warmup_start * cfg.total_steps, cfg.warmup_length * cfg.total_steps
        if length <= 0:
            return 1.0 if step >= start else 0.0
        return min(1.0, max(0.0, (step - start) / length))

    def lr_factor(self, step: int | None = None) -> float:
        """The learning-rate factor at ``step`` (default :attr:`step`): 1, then ``lr_gamma`` from
        ``lr_decay_at * total_steps`` (the reference's multistep policy with one step)."""
        cfg = self.config
        step = self.step if step is None else step
        return cfg.lr_gamma if step >= cfg.lr_decay_at * cfg.total_steps else 1.0

    def _set_learning_rates(self) -> None:
        cfg, f = self.config, self.lr_factor()
        self.optimizer_G.param_groups[0]["lr"] = cfg.lr_g * f
        self.optimizer_D.param_groups[0]["lr"] = cfg.lr_d * f
        self.optimizer_app.param_groups[0]["lr"] = cfg.lr_app * f
        self.optimizer_app.param_groups[1]["lr"] = cfg.lr_app * 10 * f

    # -- training -----------------------------------------------------------------------------
    def _check_labels(self, y: torch.Tensor, n: int, what: str) -> None:
        if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype != torch.long \
                or (n and (int(y.min()) < 0 or int(y.max()) >= self.config.num_classes)):
            raise DataError(f"DGNet.training_step({what}): expected a torch.long tensor of shape ({n},) with "
                            f"identity indices in [0, {self.config.num_classes}), found {describe(y)}"
                            + (f" with values {int(y.min())}..{int(y.max())}" if isinstance(y, torch.Tensor)
                               and y.numel() and not y.is_floating_point() else "")
                            + ". Fix: map the train identities to 0..num_classes-1 (num_classes = their number).")

    def training_step(self, x: torch.Tensor, x_pos: torch.Tensor, x_other: torch.Tensor, y: torch.Tensor,
                      y_other: torch.Tensor) -> dict[str, float]:
        """One generator / encoder update, then one discriminator update.

        ``x``, ``x_pos``, ``x_other``: ``(B, 3, H, W)`` in [-1, 1] (the config's size); ``x_pos[k]`` is another
        image of identity ``y[k]``, ``x_other[k]`` an image of ``y_other[k]`` (another person: the structure
        donor of ``x``'s swap and the appearance donor of the mirror swap). ``y``, ``y_other``: ``(B,)`` long.

        Returns the weighted losses (``G`` is the sum of the generator's terms): ``rec_x``, ``rec_xp``,
        ``rec_a``, ``rec_s``, ``cyc``, ``id_real``, ``id_pos``, ``id_fake``, ``G_adv``, ``G``; ``D`` (total,
        including ``D_reg``), ``D_reg``; and ``warmup``, the warm-up factor this step used.
        """
        cfg = self.config
        for name, images in (("x", x), ("x_pos", x_pos), ("x_other", x_other)):
            check_images(images, f"DGNet.training_step({name})", size=cfg.size)
        n = x.shape[0]
        if x_pos.shape[0] != n or x_other.shape[0] != n:
            raise DataError(f"DGNet.training_step: x, x_pos and x_other must hold the same number of images, found "
                            f"{n}, {x_pos.shape[0]}, {x_other.shape[0]}. Fix: one positive and one other image per x.")
        self._check_labels(y, n, "y")
        self._check_labels(y_other, n, "y_other")
        self.train()
        self._set_learning_rates()
        w = self.warmup_weight()
        encoder_again = bool(torch.rand((), generator=self.rng) < cfg.encoder_again)
        seed = int(torch.randint(2 ** 62, (), generator=self.rng))
        with seeded_global_rng(seed, x.device):  # whatever a backbone draws (drop-connect) is reproducible
            losses = self._step(x, x_pos, x_other, y, y_other, w, encoder_again)
        self.step += 1
        losses["warmup"] = torch.tensor(w)
        return self.as_floats(losses)

    def _step(self, x: torch.Tensor, x_pos: torch.Tensor, x_other: torch.Tensor, y: torch.Tensor,
              y_other: torch.Tensor, w: float, encoder_again: bool) -> dict[str, torch.Tensor]:
        cfg, n = self.config, x.shape[0]
        l1, ce = F.l1_loss, F.cross_entropy
        zero = x.new_zeros(())

        # Generator and encoders, with D frozen (no wasted weight gradients).
        set_requires_grad([self.D], False)
        a_all, logits = self.G_app(torch.cat([x, x_other, x_pos]))
        a_x, a_o, a_p = a_all.split(n)
        s_x, s_o = self.G_struct(gray(torch.cat([x, x_other]))).split(n)
        # one decoder pass: self reconstructions, the positive's clothes on x, the two swaps
        out = self.G_dec(torch.cat([s_x, s_o, s_x, s_o, s_x]), torch.cat([a_x, a_o, a_p, a_x, a_o]))
        rec_x, rec_o, rec_p, cross_x, cross_o = out.split(n)
        fakes = torch.cat([cross_x, cross_o])  # identities y (clothes of x), y_other (clothes of x_other)

        loss_rec_x = cfg.lambda_x * (l1(rec_x, x) + l1(rec_o, x_other))
        loss_rec_xp = cfg.lambda_xp * l1(rec_p, x)
        logit_x, logit_o, logit_p = logits.split(n)
        loss_id_real = cfg.lambda_id * (ce(logit_x, y) + ce(logit_o, y_other))
        loss_id_pos = cfg.lambda_pid * ce(logit_p, y)

        # the swaps through a frozen E_a: their identity and appearance are the appearance source's
        a_rec, logit_fake = frozen_call(self.G_app, fakes, batchnorm_train=True)
        loss_id_fake = cfg.lambda_id_fake * (ce(logit_fake[:n], y) + ce(logit_fake[n:], y_other))
        loss_rec_a = w * cfg.lambda_a * l1(a_rec, torch.cat([a_x, a_o]).detach()) * 2 if w > 0 else zero
        loss_rec_s = loss_cyc = zero
        if w > 0 and (cfg.lambda_s > 0 or cfg.lambda_cycle > 0):
            if encoder_again:  # E_s learns to read the fakes (their pixels fixed)
                s_rec = self.G_struct(gray(fakes.detach()))
            else:  # the fakes learn to be read by a fixed E_s
                s_rec = frozen_call(self.G_struct, gray(fakes))
            loss_rec_s = w * cfg.lambda_s * l1(s_rec, torch.cat([s_o, s_x]).detach()) * 2
            if cfg.lambda_cycle > 0:  # x's structure (from cross_o) with x's appearance (from cross_x)
                cyc = self.G_dec(torch.cat([s_rec[n:], s_rec[:n]]), a_rec)
                loss_cyc = w * cfg.lambda_cycle * l1(cyc, torch.cat([x, x_other])) * 2
        # l1 over the concatenated pair is the mean of the two, the reference sums them: hence the * 2

        d_fake = self.D(fakes)
        loss_g_adv = cfg.lambda_gan * sum(2 * (lsgan_loss(o[:n], True) + lsgan_loss(o[n:], True)) for o in d_fake)
        loss_g = (loss_rec_x + loss_rec_xp + loss_rec_a + loss_rec_s + loss_cyc + loss_id_real + loss_id_pos
                  + loss_id_fake + loss_g_adv)
        for opt in (self.optimizer_G, self.optimizer_app):
            opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_G.step()
        self.optimizer_app.step()

        # Discriminator on the detached fakes, with the gradient penalty on the real images.
        set_requires_grad([self.D], True)
        real = torch.cat([x, x_other]).detach().requires_grad_(cfg.lambda_reg > 0)
        out_fake, out_real = self.D(fakes.detach()), self.D(real)
        loss_d_adv = sum(lsgan_loss(f[:n], False) + lsgan_loss(f[n:], False)
                         + lsgan_loss(r[:n], True) + lsgan_loss(r[n:], True) for f, r in zip(out_fake, out_real))
        loss_reg = zero
        if cfg.lambda_reg > 0:
            for r in out_real:  # per scale: each image's squared gradient norm, mean per pair, pairs summed
                (grad,) = torch.autograd.grad(r.sum(), real, create_graph=True)
                per_image = grad.pow(2).flatten(1).sum(1)
                loss_reg = loss_reg + cfg.lambda_reg * (per_image[:n].mean() + per_image[n:].mean())
        loss_d = cfg.lambda_gan * (loss_d_adv + loss_reg)
        self.update("D", loss_d)

        return {"rec_x": loss_rec_x, "rec_xp": loss_rec_xp, "rec_a": loss_rec_a, "rec_s": loss_rec_s,
                "cyc": loss_cyc, "id_real": loss_id_real, "id_pos": loss_id_pos, "id_fake": loss_id_fake,
                "G_adv": loss_g_adv, "G": loss_g, "D": loss_d, "D_reg": cfg.lambda_gan * loss_reg}

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_appearance(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> appearance codes ``(B, app_dim)`` (eval mode, no gradients)."""
        check_images(images, "DGNet.encode_appearance")
        with self.eval_mode(self.G_app):
            return self.G_app(images)[0]

    @torch.no_grad()
    def identity_logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> the appearance encoder's identity logits ``(B, num_classes)``."""
        check_images(images, "DGNet.identity_logits")
        with self.eval_mode(self.G_app):
            return self.G_app(images)[1]

    @torch.no_grad()
    def encode_structure(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> structure codes ``(B, 8 struct_dim, H/4, W/4)`` of the grey image."""
        check_images(images, "DGNet.encode_structure")
        with self.eval_mode(self.G_struct):
            return self.G_struct(gray(images))

    @torch.no_grad()
    def decode(self, appearance: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """Appearance ``(B, app_dim)`` and structure ``(B, C, h, w)`` codes -> images ``(B, 3, 4h, 4w)`` in [-1, 1]."""
        cfg = self.config
        if appearance.ndim != 2 or appearance.shape[1] != cfg.app_dim or structure.ndim != 4 \
                or structure.shape[1] != cfg.s_channels or appearance.shape[0] != structure.shape[0]:
            raise DataError(f"DGNet.decode: expected appearance (B, {cfg.app_dim}) and structure "
                            f"(B, {cfg.s_channels}, h, w) codes with one B, found {describe(appearance)} and "
                            f"{describe(structure)}. Fix: pass encode_appearance() and encode_structure() outputs.")
        with self.eval_mode(self.G_dec):
            return self.G_dec(structure, appearance)

    @torch.no_grad()
    def swap(self, appearance_images: torch.Tensor, structure_images: torch.Tensor) -> torch.Tensor:
        """Row k: the clothes of ``appearance_images[k]`` on the pose / body / background of
        ``structure_images[k]``. Both ``(B, 3, H, W)`` in [-1, 1] (H, W multiples of 4); returns
        ``(B, 3, H, W)`` in [-1, 1]. Eval mode (the previous modes restored), no gradients."""
        check_images(appearance_images, "DGNet.swap(appearance_images)")
        check_images(structure_images, "DGNet.swap(structure_images)")
        if appearance_images.shape[0] != structure_images.shape[0]:
            raise DataError(f"DGNet.swap: one structure image per appearance image, found "
                            f"{appearance_images.shape[0]} and {structure_images.shape[0]}. Fix: pair them row by row.")
        return self.decode(self.encode_appearance(appearance_images), self.encode_structure(structure_images))
