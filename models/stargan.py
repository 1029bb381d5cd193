"""StarGAN: one generator for all cameras (an alternative to CamStyle's CycleGAN per camera pair).

Choi et al., "StarGAN: Unified Generative Adversarial Networks for Multi-Domain Image-to-Image
Translation", CVPR 2018 (official code: yunjey/stargan, ``model.py`` and ``solver.py``). With L
cameras CamStyle needs L(L-1)/2 CycleGANs; StarGAN needs one model:

- :class:`StarGANGenerator`: the image concatenated with the one-hot target domain spread over
  the image (``(B, 3 + L, H, W)``) → c7s1-64, two 4x4 stride-2 downsamplings, ``repeat_num``
  residual blocks, two 4x4 transposed-conv upsamplings, c7s1-3, tanh. Instance norm with affine
  parameters as the reference, but without running statistics (the reference tracks them, which
  makes eval-mode outputs depend on the training batches; with ``track_running_stats=False``
  train and eval compute the same thing).
- :class:`StarGANDiscriminator`: ``repeat_num`` 4x4 stride-2 convs with LeakyReLU 0.01 (channels
  double each time, no norm), then a 3x3 conv to a PatchGAN real/fake map ``(B, 1, H/2^r,
  W/2^r)`` and a conv whose kernel spans the whole last map to the domain logits ``(B, L)``.
- :class:`StarGAN`: losses of the paper: adversarial + ``lambda_cls`` x domain classification
  (cross-entropy: a camera is one label, as the paper's single-dataset RaFD setting) +
  ``lambda_rec`` x reconstruction ``|G(G(x, c), c_src) - x|_1``. ``gan_loss="lsgan"`` (the
  default here: least squares, stable on small re-ID sets, as CycleGAN) or ``"wgan-gp"`` (the
  paper: Wasserstein loss, gradient penalty ``lambda_gp``, and ``n_critic=5`` discriminator
  steps per generator step). Adam(1e-4, betas (0.5, 0.999)) and a linear LR decay.
  Weights start from N(0, 0.02) drawn from a seeded generator (the reference keeps PyTorch's
  default init, which draws from the global RNG).

The target domain of each training image is drawn uniformly among the *other* domains from the
model's own seeded generator (the reference shuffles the batch's labels, which on a re-ID batch
of one camera would ask for no change at all).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from reidaug.errors import ConfigError, DataError, unknown_name

from .base import GANConfig, GANModel, net
from .gan_common import (check_halvings, check_images, init_weights, lsgan_loss,
                         set_requires_grad)

logger = logging.getLogger(__name__)

GAN_LOSSES = ("lsgan", "wgan-gp")


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class StarGANResidualBlock(nn.Module):
    """conv3x3 - IN - ReLU - conv3x3 - IN, plus the skip: ``(B, C, H, W)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _instance_norm(dim), nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), _instance_norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class StarGANGenerator(nn.Module):
    """``G(x, c)``: image ``(B, 3, H, W)`` in ``[-1, 1]`` and one-hot target ``(B, L)`` → image.

    Shapes for ``(B, 3, 256, 128)``, ``conv_dim=64``: input ``(B, 3 + L, 256, 128)``,
    ``(B, 64, 256, 128)``, ``(B, 128, 128, 64)``, ``(B, 256, 64, 32)`` through the residual
    blocks, ``(B, 128, 128, 64)``, ``(B, 64, 256, 128)``, ``(B, 3, 256, 128)``.
    """

    def __init__(self, num_domains: int, conv_dim: int = 64, repeat_num: int = 6) -> None:
        super().__init__()
        if num_domains < 1:
            raise ConfigError(f"StarGANGenerator needs num_domains >= 1, found {num_domains}.")
        self.num_domains = num_domains
        layers: list[nn.Module] = [
            nn.Conv2d(3 + num_domains, conv_dim, 7, padding=3, bias=False),
            _instance_norm(conv_dim), nn.ReLU(True)]
        c = conv_dim
        for _ in range(2):  # (B, 2c, H/2, W/2)
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False),
                       _instance_norm(2 * c), nn.ReLU(True)]
            c *= 2
        layers += [StarGANResidualBlock(c) for _ in range(repeat_num)]
        for _ in range(2):  # (B, c/2, 2H, 2W)
            layers += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False),
                       _instance_norm(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.Conv2d(c, 3, 7, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # c (B, L) → (B, L, H, W): the target domain as constant planes beside the image.
        c_map = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, c_map], dim=1))  # (B, 3, H, W)


class StarGANDiscriminator(nn.Module):
    """``D(x) -> (src, cls)``: PatchGAN map ``(B, 1, H/2^r, W/2^r)`` and logits ``(B, L)``.

    For ``(B, 3, 256, 128)`` and ``repeat_num=6``: ``(B, 64, 128, 64)`` … ``(B, 2048, 4, 2)``;
    ``src`` is ``(B, 1, 4, 2)`` and the classifier's kernel is 4 x 2. H and W must be multiples
    of ``2^repeat_num``.
    """

    def __init__(self, num_domains: int, image_size: tuple[int, int] = (256, 128),
                 conv_dim: int = 64, repeat_num: int = 6) -> None:
        super().__init__()
        fh, fw = check_halvings("StarGANDiscriminator", image_size, repeat_num, "repeat_num",
                                "lower d_repeat_num (e.g. 6 for 256 x 128, 4 for 64 x 32).")
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.01)]
        c = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            c *= 2
        self.main = nn.Sequential(*layers)
        self.conv_src = nn.Conv2d(c, 1, 3, padding=1, bias=False)
        self.conv_cls = nn.Conv2d(c, num_domains, (fh, fw), bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.main(x)  # (B, c, H/2^r, W/2^r)
        return self.conv_src(feat), self.conv_cls(feat).flatten(1)  # (B, 1, h, w), (B, L)


@dataclass(frozen=True)
class StarGANConfig(GANConfig):
    """Hyper-parameters; loss weights, optimiser and sizes are the paper's unless noted."""

    num_domains: int = 6  # cameras (Market-1501 has 6)
    g_conv_dim: int = 64
    d_conv_dim: int = 64
    g_repeat_num: int = 6
    d_repeat_num: int = 6
    image_height: int = 256
    image_width: int = 128
    gan_loss: Literal["lsgan", "wgan-gp"] = "lsgan"  # the paper: "wgan-gp"
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0  # wgan-gp only
    n_critic: int = 1  # D steps per G step; the paper uses 5 with wgan-gp
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    n_epochs: int = 100
    n_epochs_decay: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gan_loss not in GAN_LOSSES:
            raise unknown_name("gan loss", self.gan_loss, GAN_LOSSES)
        if self.num_domains < 2:
            raise ConfigError(f"StarGANConfig.num_domains must be >= 2 (cameras to translate "
                              f"between), found {self.num_domains}.")
        self.check_at_least(1, "g_conv_dim", "d_conv_dim", "d_repeat_num", "n_critic")
        self.check_at_least(0, "g_repeat_num", "lambda_cls", "lambda_rec", "lambda_gp", "lr_g",
                            "lr_d", "n_epochs", "n_epochs_decay")
        check_halvings("StarGANConfig", self.size, self.d_repeat_num, "d_repeat_num",
                       "lower d_repeat_num (6 for 256 x 128) or resize the crops.")


class StarGAN(GANModel):
    """Generator, discriminator, their optimisers and schedulers, and the RNG for targets.

    Same interface as :class:`~reidaug.models.cyclegan.CycleGAN`: ``training_step``,
    ``step_schedulers`` (once per epoch), ``state_dict`` / ``load_state_dict`` (bit-identical
    resume on the CPU), ``translate(images, target_domain)``.
    """

    name = "stargan"
    title = "StarGAN"
    config_class = StarGANConfig
    G, D = net(), net()

    def __init__(self, config: StarGANConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        self.nets.update({
            "G": init_weights(StarGANGenerator(cfg.num_domains, cfg.g_conv_dim, cfg.g_repeat_num),
                              cfg.init_gain, gen),
            "D": init_weights(StarGANDiscriminator(cfg.num_domains, cfg.size, cfg.d_conv_dim,
                                                   cfg.d_repeat_num), cfg.init_gain, gen)})
        # Target domains and gradient-penalty mixing weights come from here only.
        self.generator = self.add_state("generator", torch.Generator().manual_seed(cfg.seed + 1))
        self.configure_optimizers()

    def configure_optimizers(self) -> None:
        """Adam for G and for D and their linear-decay ``LambdaLR`` schedulers."""
        cfg = self.config
        self.add_optimizer("G", self.G.parameters(), cfg.lr_g)
        self.add_optimizer("D", self.D.parameters(), cfg.lr_d)
        self.add_linear_decay(cfg.n_epochs, cfg.n_epochs_decay)

    # -- helpers ------------------------------------------------------------------------------
    def one_hot(self, domains: torch.Tensor) -> torch.Tensor:
        """``(B,)`` integer domains → ``(B, L)`` float one-hot."""
        return nn.functional.one_hot(domains, self.config.num_domains).float()

    def _domains(self, domains: int | torch.Tensor, batch: int, device: torch.device,
                 where: str) -> torch.Tensor:
        """Validate and expand domain labels to a ``(B,)`` int64 tensor on ``device``."""
        n = self.config.num_domains
        t = torch.full((batch,), domains, dtype=torch.long) if isinstance(domains, int) \
            else torch.as_tensor(domains)
        if t.shape != (batch,) or t.is_floating_point():
            raise DataError(f"{where}: expected {batch} integer domain labels (shape ({batch},)),"
                            f" found {t.dtype} of shape {tuple(t.shape)}. Fix: pass one camera "
                            "index per image, or one int for all.")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise DataError(f"{where}: domain labels must be in [0, {n - 1}] (num_domains={n}), "
                            f"found min {int(t.min())} max {int(t.max())}. Fix: use 0-based "
                            "camera ids, and num_domains = number of cameras.")
        return t.long().to(device)

    def _gan_loss(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if self.config.gan_loss == "lsgan":
            return lsgan_loss(prediction, target_is_real)
        mean = prediction.float().mean()  # Wasserstein critic: real up, fake down
        return -mean if target_is_real else mean

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP (Gulrajani et al. 2017): ``E[(|grad D(x_hat)|_2 - 1)^2]`` on random mixes."""
        alpha = torch.rand(real.shape[0], 1, 1, 1, generator=self.generator).to(real)  # (B,1,1,1)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        src, _ = self.D(x_hat)
        (grad,) = torch.autograd.grad(src.sum(), x_hat, create_graph=True)
        return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    # -- training -----------------------------------------------------------------------------
    def training_step(self, real: torch.Tensor, domains: torch.Tensor) -> dict[str, float]:
        """One discriminator update, and a generator update every ``n_critic`` steps.

        ``real`` ``(B, 3, H, W)`` in ``[-1, 1]``, ``domains`` ``(B,)`` its camera ids. Returns
        ``D_real``, ``D_fake``, ``D_cls``, ``D_gp`` (0 for lsgan), ``D`` and, on steps that
        update the generator, ``G_fake``, ``G_cls``, ``G_rec``, ``G``.
        """
        cfg = self.config
        check_images(real, "StarGAN.training_step(real)", size=cfg.size)
        src = self._domains(domains, real.shape[0], real.device, "StarGAN.training_step")
        self.train()
        # Uniformly among the other domains: (src + k) mod L, k in [1, L-1].
        shift = torch.randint(1, cfg.num_domains, (real.shape[0],), generator=self.generator)
        trg = (src + shift.to(src.device)) % cfg.num_domains  # (B,)
        c_src, c_trg = self.one_hot(src), self.one_hot(trg)  # (B, L)
        ce = nn.functional.cross_entropy

        # Discriminator.
        set_requires_grad([self.D], True)
        out_src, out_cls = self.D(real)
        d_real = self._gan_loss(out_src, True)
        d_cls = ce(out_cls.float(), src)
        with torch.no_grad():
            fake = self.G(real, c_trg)  # (B, 3, H, W)
        out_src, _ = self.D(fake)
        d_fake = self._gan_loss(out_src, False)
        d_gp = (self._gradient_penalty(real, fake) if cfg.gan_loss == "wgan-gp"
                else real.new_zeros(()))
        d_loss = d_real + d_fake + cfg.lambda_cls * d_cls + cfg.lambda_gp * d_gp
        self.update("D", d_loss)
        losses = {"D_real": d_real, "D_fake": d_fake, "D_cls": d_cls, "D_gp": d_gp, "D": d_loss}

        # Generator, with D frozen (gradients flow through it to G only).
        if self.step % cfg.n_critic == 0:
            set_requires_grad([self.D], False)
            fake = self.G(real, c_trg)
            out_src, out_cls = self.D(fake)
            g_fake = self._gan_loss(out_src, True)
            g_cls = ce(out_cls.float(), trg)
            g_rec = nn.functional.l1_loss(self.G(fake, c_src), real)
            g_loss = g_fake + cfg.lambda_rec * g_rec + cfg.lambda_cls * g_cls
            self.update("G", g_loss)
            set_requires_grad([self.D], True)
            losses.update(G_fake=g_fake, G_cls=g_cls, G_rec=g_rec, G=g_loss)
        self.step += 1
        return self.as_floats(losses)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, images: torch.Tensor, target_domain: int | torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[-1, 1]`` → the same images in camera ``target_domain`` (one
        int for all, or ``(B,)`` ids), same shape. Any H, W that are multiples of 4 work. Runs in
        eval mode and restores the previous mode; works under ``torch.autocast``."""
        check_images(images, "StarGAN.translate")
        trg = self._domains(target_domain, images.shape[0], images.device, "StarGAN.translate")
        with self.eval_mode(self.G):
            return self.G(images, self.one_hot(trg))
