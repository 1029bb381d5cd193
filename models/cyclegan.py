"""CycleGAN for camera-style transfer (CamStyle).

CamStyle (Zhong et al., "Camera Style Adaptation for Person Re-identification", CVPR 2018) trains
one CycleGAN (Zhu et al., "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", ICCV 2017) per pair of cameras, with the identity-mapping loss on, and renders every
training image in the style of every other camera. This module follows the official code
(junyanz/pytorch-CycleGAN-and-pix2pix: ``models/networks.py``, ``models/cycle_gan_model.py``)
in shapes and defaults:

- :class:`ResnetGenerator`: c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3, tanh
  (Johnson et al.); instance norm without affine or running stats, reflection padding,
  biases only where no batch norm follows. 9 blocks for 256-pixel images, 6 for 128.
- :class:`PatchDiscriminator`: the 70 x 70 PatchGAN (``NLayerDiscriminator``, ``n_layers=3``):
  C64 (no norm) - C128 - C256 - C512 (stride 1) - 1-channel map, 4 x 4 kernels, LeakyReLU 0.2.
- :class:`CycleGAN`: LSGAN losses, cycle loss ``lambda_cycle`` (10) in both directions, identity
  loss ``lambda_identity * lambda_cycle`` (0.5 x 10), Adam(2e-4, betas (0.5, 0.999)) for both
  generators together and both discriminators together, linear LR decay, image pools of 50.
  One :meth:`CycleGAN.training_step` = the reference ``optimize_parameters``: the generator
  update with the discriminators frozen, then both discriminator updates from the pools.

One option beyond the reference, for identity-preserving camera style (``residual=True``): each
generator predicts a change of its input in tanh's pre-activation space,
``tanh(atanh(x) + net(x))``, with the last convolution zeroed, so it starts as the identity map and
a fake keeps its person unless the adversarial loss pays for the change. And PTGAN's foreground
loss (Wei et al., CVPR 2018) for the same purpose (``lambda_foreground > 0``): the person mask M of
each real image (1 on the body) and ``lambda_foreground * mean(((G(x) - x) * M)^2)`` in both
directions, so a translation may restyle the background but pays for every change on the person.
And a feature-similarity loss (``lambda_feature > 0``): a frozen re-ID feature extractor
(:attr:`CycleGAN.feature_net`, set by the caller: a model trained on the real train images only,
never the judge) and ``lambda_feature * mean(1 - cos(f(G(x)), f(x)))`` in both directions, so a fake
keeps what the re-ID model sees of its person.

And SPGAN's similarity-preserving loss (Deng et al., "Image-Image Domain Adaptation with Preserved
Self-Similarity and Domain-Dissimilarity for Person Re-identification", CVPR 2018) for a CycleGAN between
two *datasets* (``lambda_similarity > 0``): a small siamese net :class:`SiameseNet` (SPGAN's SiaNet: four
4 x 4 stride-2 convolutions and a fully connected layer to a 128-d, L2-normalised embedding), trained with
the generators. Its contrastive loss pulls each image and its translation together (``a, G_AB(a)`` and
``b, G_BA(b)``: the person is kept) and pushes a translated image away from the real images of the domain
it was rendered into (``G_AB(a), b`` and ``G_BA(b), a``: the two datasets hold different people), to a
margin m (``similarity_margin``, SPGAN's 2 = antipodal): ``d^2`` for a positive pair, ``max(0, m - d)^2``
for a negative one, the mean of the four pair kinds. The generators minimise ``lambda_similarity`` times it
(SPGAN: 2), the siamese net minimises it on the detached images, as the reference's separate ``M`` step
(SPGAN's code, and Simon4Yan/Learning-via-Translation's TensorFlow original) does.

Naming: ``G_AB`` maps domain A (camera a) to B, ``G_BA`` back; ``D_A`` tells real A images from
``G_BA`` outputs, ``D_B`` real B from ``G_AB`` outputs (the reference's ``netD_B`` / ``netD_A``).
Images are float ``(B, 3, H, W)`` in ``[-1, 1]``; :func:`~.gan_common.images_to_tensor` converts
RGB uint8 crops. Constructors place nothing on a device: call :meth:`CycleGAN.to`.
"""
from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from reidaug.errors import ConfigError, unknown_name

from .base import GANConfig, GANModel, net
from .gan_common import ImagePool, check_images, init_weights, lsgan_loss, set_requires_grad

logger = logging.getLogger(__name__)

NORMS = ("instance", "batch", "none")
PADDINGS = ("reflect", "replicate", "zero")
DIRECTIONS = ("AB", "BA")


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The reference's ``get_norm_layer``: instance norm has no affine and no running stats, so
    train and eval mode compute the same thing."""
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda _channels: nn.Identity()
    raise unknown_name("norm", norm, NORMS)


def _pad(padding: str, amount: int) -> tuple[list[nn.Module], int]:
    """Padding layers before a conv and the conv's own zero padding."""
    if padding == "reflect":
        return [nn.ReflectionPad2d(amount)], 0
    if padding == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding == "zero":
        return [], amount
    raise unknown_name("padding", padding, PADDINGS)


class ResnetBlock(nn.Module):
    """Pad - conv3x3 - norm - ReLU - pad - conv3x3 - norm, plus the skip: ``(B, C, H, W)``."""

    def __init__(self, dim: int, padding: str, norm: str, use_bias: bool) -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        layers: list[nn.Module] = []
        for i in range(2):
            pad_layers, p = _pad(padding, 1)
            layers += pad_layers + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias),
                                    make_norm(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)  # (B, C, H, W)


#: a residual generator's inputs are clamped to (-_EDGE, _EDGE) before atanh (uint8 255 -> 1.0 would be inf)
_EDGE = 1.0 - 1e-3


class ResnetGenerator(nn.Module):
    """Johnson-style ResNet generator of CycleGAN; output in ``[-1, 1]`` (tanh).

    Shapes for a ``(B, 3, 256, 128)`` input and ``ngf=64``: c7s1-64 ``(B, 64, 256, 128)``,
    d128 ``(B, 128, 128, 64)``, d256 ``(B, 256, 64, 32)``, n_blocks x R256 (same), u128
    ``(B, 128, 128, 64)``, u64 ``(B, 64, 256, 128)``, c7s1-3 + tanh ``(B, 3, 256, 128)``.
    H and W must be multiples of 4.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", padding: str = "reflect", residual: bool = False) -> None:
        super().__init__()
        if residual and in_ch != out_ch:
            raise ConfigError(f"a residual ResnetGenerator maps an image onto itself: in_ch ({in_ch}) must equal "
                              f"out_ch ({out_ch})")
        self.residual = residual
        if n_blocks < 0 or ngf < 1:
            raise ConfigError(f"ResnetGenerator needs n_blocks >= 0 and ngf >= 1, found "
                              f"n_blocks={n_blocks}, ngf={ngf}. Fix: use n_blocks 9 (256-pixel "
                              "crops) or 6 (128), ngf 64.")
        make_norm = norm_layer(norm)
        use_bias = norm != "batch"  # a bias before batch norm is cancelled by its mean
        _pad(padding, 1)  # validate the name before building anything

        layers: list[nn.Module] = [nn.ReflectionPad2d(3),
                                   nn.Conv2d(in_ch, ngf, 7, padding=0, bias=use_bias),
                                   make_norm(ngf), nn.ReLU(True)]  # (B, ngf, H, W)
        for i in range(2):  # d128, d256: (B, ngf*2^(i+1), H/2^(i+1), W/2^(i+1))
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=use_bias),
                       make_norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, padding, norm, use_bias) for _ in range(n_blocks)]
        for i in range(2):  # u128, u64: (B, ngf*2^(1-i), H/2^(1-i), W/2^(1-i))
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=use_bias),
                       make_norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7, padding=0)]
        layers += [] if residual else [nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def start_as_identity(self) -> "ResnetGenerator":
        """Zero the last convolution (call after weight init): a residual generator then starts
        as the identity map, ``tanh(atanh(x) + 0) = x``."""
        if not self.residual:
            raise ConfigError("start_as_identity needs a residual generator (residual=True)")
        last = self.model[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.model(x)  # (B, in_ch, H, W) -> (B, out_ch, H, W)
        # the net predicts a change of the input in tanh's pre-activation space, so the output
        # stays in (-1, 1) and a zero change is exactly the input (up to the clamp at the ends)
        return torch.tanh(torch.atanh(x.clamp(-_EDGE, _EDGE)) + self.model(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN (``NLayerDiscriminator``): one real/fake score per overlapping patch.

    With ``n_layers=3`` each output sees a 70 x 70 input patch; a ``(B, 3, 256, 128)`` input
    gives ``(B, 1, 30, 14)``: three stride-2 convs ``(B, 64/128/256, H/2../H/8, ..)``, then two
    stride-1 4x4 convs (``-1`` each) to 512 channels and to 1.
    """

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"PatchDiscriminator needs n_layers >= 1, found {n_layers}. "
                              "Fix: use 3 (the 70x70 PatchGAN).")
        make_norm = norm_layer(norm)
        use_bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1,
                                 bias=use_bias),
                       make_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (B, in_ch, H, W) -> (B, 1, H', W')


class SiameseNet(nn.Module):
    """SPGAN's SiaNet: ``(B, 3, H, W)`` in [-1, 1] -> ``(B, dim)`` L2-normalised embeddings.

    Four 4 x 4 stride-2 convolutions (64, 128, 256, 512 channels, LeakyReLU 0.2; instance norm after
    the first) as the paper, then global average pooling where the paper max-pools after each
    convolution (its 4 pooling layers would shrink a 128 x 64 crop below one pixel), and a fully
    connected layer to ``dim`` (128). Any H, W >= 16.
    """

    def __init__(self, ndf: int = 64, dim: int = 128) -> None:
        super().__init__()
        chans = [3, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)]
            if i > 0:
                layers += [nn.InstanceNorm2d(chans[i + 1])]
            layers += [nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))  # (B, 8 ndf)
        return nn.functional.normalize(self.fc(h), dim=1)  # (B, dim), unit length


def contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, positive: bool, margin: float) -> torch.Tensor:
    """Hadsell et al.'s contrastive loss on paired embeddings ``(B, D)``: ``mean(d^2)`` for positive
    pairs, ``mean(max(0, margin - d)^2)`` for negative ones, ``d`` the Euclidean distance.
    Pairs are formed row by row; unequal batch sizes pair the first ``min`` rows."""
    n = min(e1.shape[0], e2.shape[0])
    d = (e1[:n] - e2[:n]).pow(2).sum(dim=1).add(1e-12).sqrt()  # (n,); eps: a finite gradient at d = 0
    return d.pow(2).mean() if positive else (margin - d).clamp(min=0).pow(2).mean()


@dataclass(frozen=True)
class CycleGANConfig(GANConfig):
    """Hyper-parameters; defaults are the reference's (and CamStyle's) for 256 x 128 crops."""

    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9  # 9 for 256-pixel crops, 6 for 128
    n_layers_d: int = 3  # 3 = 70x70 PatchGAN
    norm: Literal["instance", "batch", "none"] = "instance"
    padding: Literal["reflect", "replicate", "zero"] = "reflect"
    image_height: int = 256
    image_width: int = 128
    lambda_cycle: float = 10.0  # lambda_A = lambda_B
    lambda_identity: float = 0.5  # times lambda_cycle; CamStyle keeps it on (colour fidelity)
    lr: float = 2e-4
    residual: bool = False  # generators predict a change of the input and start as the identity map
    lambda_foreground: float = 0.0  # PTGAN's foreground loss on the person mask (0: off, as the reference)
    lambda_feature: float = 0.0  # 1 - cosine of a frozen re-ID model's features of G(x) and x (0: off)
    lambda_similarity: float = 0.0  # SPGAN's contrastive loss through a jointly trained siamese net (0: off)
    similarity_margin: float = 2.0  # SPGAN's m: negative pairs pushed to this distance of unit embeddings
    pool_size: int = 50
    n_epochs: int = 100  # epochs at the initial lr
    n_epochs_decay: int = 100  # epochs of linear decay to ~0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in NORMS:
            raise unknown_name("norm", self.norm, NORMS)
        if self.padding not in PADDINGS:
            raise unknown_name("padding", self.padding, PADDINGS)
        self.check_at_least(1, "ngf", "ndf", "n_layers_d", "image_height", "image_width")
        self.check_at_least(0, "n_blocks", "pool_size", "n_epochs", "n_epochs_decay",
                            "lambda_cycle", "lambda_identity", "lr", "lambda_foreground", "lambda_feature",
                            "lambda_similarity", "similarity_margin")
        if self.image_height % 4 or self.image_width % 4:
            raise ConfigError(f"CycleGANConfig image size must be multiples of 4, found "
                              f"{self.image_height} x {self.image_width}. Fix: e.g. 256 x 128.")
        smallest = 3 * 2 ** self.n_layers_d  # n_layers_d halvings, then two 4x4 convs (-1 each)
        if min(self.image_height, self.image_width) < smallest:
            raise ConfigError(f"CycleGANConfig image size {self.image_height} x "
                              f"{self.image_width} is too small for a PatchGAN with n_layers_d="
                              f"{self.n_layers_d}: both sides must be >= {smallest}. Fix: use "
                              "larger crops or fewer discriminator layers.")


class CycleGAN(GANModel):
    """Two generators and two PatchGAN discriminators with their optimisers, schedulers and
    image pools (see the module docstring for the naming).

    ``training_step`` updates everything once; call ``step_schedulers`` at the end of each
    epoch. ``optimizer_G`` updates both generators, ``optimizer_D`` both discriminators.
    ``state_dict`` holds networks, optimisers, schedulers, pools and RNG states, so
    ``load_state_dict`` resumes bit-identically on the CPU.
    """

    name = "cyclegan"
    title = "CycleGAN"
    config_class = CycleGANConfig
    G_AB, G_BA, D_A, D_B = net(), net(), net(), net()
    #: frozen re-ID features ``(B, 3, H, W)`` in [-1, 1] -> ``(B, D)`` for ``lambda_feature``; set by the
    #: caller, never trained or saved here
    feature_net: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, config: CycleGANConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)

        def make_g() -> ResnetGenerator:
            g = init_weights(ResnetGenerator(3, 3, cfg.ngf, cfg.n_blocks, cfg.norm, cfg.padding,
                                             cfg.residual), cfg.init_gain, gen)
            return g.start_as_identity() if cfg.residual else g

        def make_d() -> PatchDiscriminator:
            return init_weights(PatchDiscriminator(3, cfg.ndf, cfg.n_layers_d, cfg.norm),
                                cfg.init_gain, gen)

        self.nets.update({"G_AB": make_g(), "G_BA": make_g(), "D_A": make_d(), "D_B": make_d()})
        if cfg.lambda_similarity > 0:  # SPGAN's siamese net, trained with the generators, never saved with them
            self.nets["S"] = init_weights(SiameseNet(cfg.ndf), cfg.init_gain, gen)
        # fake_a_pool feeds D_A with G_BA outputs, fake_b_pool feeds D_B with G_AB outputs.
        self.fake_a_pool = self.add_state("fake_a_pool", ImagePool(cfg.pool_size, cfg.seed + 1))
        self.fake_b_pool = self.add_state("fake_b_pool", ImagePool(cfg.pool_size, cfg.seed + 2))
        self.configure_optimizers()

    def configure_optimizers(self) -> None:
        """Adam for both generators, Adam for both discriminators, and their linear-decay
        ``LambdaLR`` schedulers, as the reference does."""
        cfg = self.config
        self.add_optimizer("G", itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()),
                           cfg.lr)
        self.add_optimizer("D", itertools.chain(self.D_A.parameters(), self.D_B.parameters()),
                           cfg.lr)
        if "S" in self.nets:
            self.add_optimizer("S", self.nets["S"].parameters(), cfg.lr)
        self.add_linear_decay(cfg.n_epochs, cfg.n_epochs_decay)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, real_a: torch.Tensor, real_b: torch.Tensor, mask_a: torch.Tensor | None = None,
                      mask_b: torch.Tensor | None = None) -> dict[str, float]:
        """One reference ``optimize_parameters`` on ``real_a`` ``(B, 3, H, W)`` (domain A) and
        ``real_b`` ``(B', 3, H, W)`` (domain B), both in ``[-1, 1]``; with ``lambda_foreground > 0``
        also their person masks ``mask_a`` ``(B, 1, H, W)`` and ``mask_b`` ``(B', 1, H, W)`` in ``[0, 1]``.

        Returns the losses: ``G_AB``/``G_BA`` (LSGAN, generator side), ``cycle_A``/``cycle_B``
        (``lambda_cycle * |G_BA(G_AB(a)) - a|_1`` and the reverse), ``idt_A``/``idt_B``
        (``lambda_identity * lambda_cycle * |G_BA(a) - a|_1`` and ``|G_AB(b) - b|_1``), ``G``
        (their sum), ``D_A``/``D_B`` (``(real + fake) / 2``); with the foreground loss also ``fg_A``
        / ``fg_B`` (``lambda_foreground * mean(((G_AB(a) - a) * M_a)^2)`` and the reverse); with the
        feature loss ``feat_A`` / ``feat_B`` (``lambda_feature * mean(1 - cos(f(G_AB(a)), f(a)))`` and the reverse);
        with SPGAN's loss ``sim`` (``lambda_similarity`` times the contrastive loss, generator side), ``S`` (the
        siamese net's own loss, unweighted), ``sim_pos`` / ``sim_neg`` (the mean embedding distance of the
        positive and of the negative pairs: the first should stay small, the second approach the margin).
        """
        cfg = self.config
        check_images(real_a, "CycleGAN.training_step(real_a)", size=cfg.size)
        check_images(real_b, "CycleGAN.training_step(real_b)", size=cfg.size)
        foreground = cfg.lambda_foreground > 0
        if foreground:
            for name, m, x in (("mask_a", mask_a, real_a), ("mask_b", mask_b, real_b)):
                if m is None or m.shape != (x.shape[0], 1, *x.shape[2:]):
                    raise ConfigError(
                        f"CycleGAN.training_step: lambda_foreground={cfg.lambda_foreground} needs {name} "
                        f"({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]}), the person mask of each image; found "
                        f"{None if m is None else tuple(m.shape)}. Fix: pass the masks, or lambda_foreground=0.")
        if cfg.lambda_feature > 0 and self.feature_net is None:
            raise ConfigError(f"CycleGAN.training_step: lambda_feature={cfg.lambda_feature} needs feature_net, a "
                              "frozen re-ID feature extractor. Fix: set model.feature_net, or lambda_feature=0.")
        self.train()
        l1 = nn.functional.l1_loss

        fake_b = self.G_AB(real_a)  # (B, 3, H, W)
        rec_a = self.G_BA(fake_b)  # (B, 3, H, W)
        fake_a = self.G_BA(real_b)  # (B', 3, H, W)
        rec_b = self.G_AB(fake_a)  # (B', 3, H, W)

        # Generators, with the discriminators frozen (no wasted weight gradients).
        set_requires_grad([self.D_A, self.D_B], False)
        lam_idt = cfg.lambda_identity * cfg.lambda_cycle
        if lam_idt > 0:
            loss_idt_a = l1(self.G_BA(real_a), real_a) * lam_idt
            loss_idt_b = l1(self.G_AB(real_b), real_b) * lam_idt
        else:
            loss_idt_a = loss_idt_b = real_a.new_zeros(())
        loss_g_ab = lsgan_loss(self.D_B(fake_b), True)
        loss_g_ba = lsgan_loss(self.D_A(fake_a), True)
        loss_cycle_a = l1(rec_a, real_a) * cfg.lambda_cycle
        loss_cycle_b = l1(rec_b, real_b) * cfg.lambda_cycle
        loss_g = loss_g_ab + loss_g_ba + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
        if foreground:  # PTGAN: every change on the person costs
            loss_fg_a = (((fake_b - real_a) * mask_a) ** 2).mean() * cfg.lambda_foreground
            loss_fg_b = (((fake_a - real_b) * mask_b) ** 2).mean() * cfg.lambda_foreground
            loss_g = loss_g + loss_fg_a + loss_fg_b
        if cfg.lambda_feature > 0:  # the re-ID model's view of the person kept
            f = self.feature_net
            with torch.no_grad():
                f_a, f_b = f(real_a), f(real_b)  # (B, D), (B', D)
            cos = nn.functional.cosine_similarity
            loss_feat_a = (1 - cos(f(fake_b), f_a, dim=1)).mean() * cfg.lambda_feature
            loss_feat_b = (1 - cos(f(fake_a), f_b, dim=1)).mean() * cfg.lambda_feature
            loss_g = loss_g + loss_feat_a + loss_feat_b
        spgan = cfg.lambda_similarity > 0
        if spgan:  # SPGAN: a translation keeps its person and is no one of the other dataset
            set_requires_grad([self.nets["S"]], False)
            loss_sim, _ = self._similarity(real_a, real_b, fake_b, fake_a)
            loss_sim = loss_sim * cfg.lambda_similarity
            loss_g = loss_g + loss_sim
        self.update("G", loss_g)

        # Discriminators, on fakes drawn through the history pools.
        set_requires_grad([self.D_A, self.D_B], True)
        self.optimizer_D.zero_grad(set_to_none=True)
        loss_d_b = self._backward_d(self.D_B, real_b, self.fake_b_pool.query(fake_b))
        loss_d_a = self._backward_d(self.D_A, real_a, self.fake_a_pool.query(fake_a))
        self.optimizer_D.step()
        if spgan:  # the siamese net learns the same contrastive loss on the detached images
            set_requires_grad([self.nets["S"]], True)
            loss_s, (d_pos, d_neg) = self._similarity(real_a, real_b, fake_b.detach(), fake_a.detach())
            self.update("S", loss_s)
        self.step += 1

        losses = {"G_AB": loss_g_ab, "G_BA": loss_g_ba, "cycle_A": loss_cycle_a,
                  "cycle_B": loss_cycle_b, "idt_A": loss_idt_a, "idt_B": loss_idt_b,
                  "G": loss_g, "D_A": loss_d_a, "D_B": loss_d_b}
        if foreground:
            losses.update(fg_A=loss_fg_a, fg_B=loss_fg_b)
        if cfg.lambda_feature > 0:
            losses.update(feat_A=loss_feat_a, feat_B=loss_feat_b)
        if spgan:
            losses.update(sim=loss_sim, S=loss_s, sim_pos=d_pos, sim_neg=d_neg)
        return self.as_floats(losses)

    def _similarity(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor,
                    fake_a: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """SPGAN's contrastive loss over its four pair kinds (mean), and the mean distance of the
        positive and of the negative pairs (detached, for the log)."""
        s, m = self.nets["S"], self.config.similarity_margin
        e_a, e_b, e_fb, e_fa = s(real_a), s(real_b), s(fake_b), s(fake_a)
        loss = (contrastive_loss(e_a, e_fb, True, m) + contrastive_loss(e_b, e_fa, True, m)
                + contrastive_loss(e_fb, e_b, False, m) + contrastive_loss(e_fa, e_a, False, m)) / 4

        def dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            n = min(len(x), len(y))
            return (x[:n] - y[:n]).detach().norm(dim=1).mean()

        return loss, ((dist(e_a, e_fb) + dist(e_b, e_fa)) / 2, (dist(e_fb, e_b) + dist(e_fa, e_a)) / 2)

    @staticmethod
    def _backward_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``backward_D_basic``: LSGAN on real (target 1) and detached fake (target 0), halved."""
        loss = 0.5 * (lsgan_loss(d(real), True) + lsgan_loss(d(fake.detach()), False))
        loss.backward()
        return loss

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` → the other domain, same shape, float in ``[-1, 1]``.

        ``direction`` is ``"AB"`` (``G_AB``) or ``"BA"``. Any H, W that are multiples of 4 work
        (fully convolutional). Runs in eval mode and restores the previous mode. Works under
        ``torch.autocast`` (the output keeps the autocast dtype) and with channels_last.
        """
        if direction not in DIRECTIONS:
            raise unknown_name("direction", direction, DIRECTIONS)
        check_images(images, f"CycleGAN.translate({direction})")
        g = self.G_AB if direction == "AB" else self.G_BA
        with self.eval_mode(g):
            return g(images)
