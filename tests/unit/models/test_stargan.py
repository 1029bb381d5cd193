"""StarGAN: one model translating between all cameras; shapes, training, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reidaug.errors import ConfigError, DataError
from reidaug.models.stargan import (StarGAN, StarGANConfig, StarGANDiscriminator,
                                    StarGANGenerator)

H, W = 32, 16
L = 3  # three synthetic cameras: red-, green- and blue-tinted noise


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> StarGANConfig:
    base = dict(num_domains=L, g_conv_dim=8, d_conv_dim=8, g_repeat_num=2, d_repeat_num=3,
                image_height=H, image_width=W, lr_g=1e-3, lr_d=1e-3, n_epochs=1,
                n_epochs_decay=3)
    base.update(overrides)
    return StarGANConfig(**base)


def camera_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, H, W) noise in [-1, 1] where image i has colour channel i % L raised, and its
    camera ids (n,)."""
    g = torch.Generator().manual_seed(seed)
    domains = torch.arange(n) % L
    x = torch.rand(n, 3, H, W, generator=g) * 0.4 - 0.9
    x[torch.arange(n), domains] += 1.4
    return x, domains


def test_network_shapes() -> None:
    g = StarGANGenerator(num_domains=4, conv_dim=8, repeat_num=1)
    y = g(torch.randn(2, 3, H, W) * 3, torch.eye(4)[[0, 3]])
    assert y.shape == (2, 3, H, W) and y.abs().max() <= 1
    assert g.main[0].in_channels == 3 + 4  # image ⊕ one-hot domain planes
    d = StarGANDiscriminator(num_domains=4, image_size=(256, 128), conv_dim=8)
    src, cls = d(torch.zeros(2, 3, 256, 128))
    assert src.shape == (2, 1, 4, 2) and cls.shape == (2, 4)


def test_config_checks_sizes_and_domains() -> None:
    with pytest.raises(ConfigError, match="2\\^d_repeat_num = 64"):
        StarGANConfig(image_height=96, image_width=48)
    with pytest.raises(ConfigError, match="num_domains"):
        StarGANConfig(num_domains=1)


def test_translate_to_each_camera_gives_that_cameras_style() -> None:
    model = StarGAN(tiny_config())
    for step in range(50):
        losses = model.training_step(*camera_batch(6, seed=step))
    assert {"D", "D_cls", "G", "G_rec", "G_cls"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    x, _ = camera_batch(6, seed=1000)
    outs = [model.translate(x, k) for k in range(L)]
    for k, y in enumerate(outs):
        assert y.shape == x.shape
        colour = y.mean(dim=(0, 2, 3))  # (3,)
        # Camera k's tint: channel k is the brightest, by a wide margin, whatever the source.
        assert int(colour.argmax()) == k, (k, colour)
        assert float(colour[k] - colour[torch.arange(3) != k].max()) > 0.5
    # Per-image targets give the same result as one target for all.
    per_image = model.translate(x, torch.tensor([2] * 6))
    assert torch.equal(per_image, outs[2])


def test_translate_rejects_unknown_camera() -> None:
    model = StarGAN(tiny_config())
    with pytest.raises(DataError, match="\\[0, 2\\]"):
        model.translate(torch.zeros(1, 3, H, W), 3)
    with pytest.raises(DataError, match="shape \\(2,\\)"):
        model.translate(torch.zeros(2, 3, H, W), torch.tensor([0]))


@pytest.mark.parametrize("gan_loss, n_critic", [("lsgan", 1), ("wgan-gp", 2)])
def test_resume_is_bit_identical(gan_loss: str, n_critic: int, resume_matches) -> None:
    cfg = tiny_config(gan_loss=gan_loss, n_critic=n_critic)
    batches = [camera_batch(3, seed=i) for i in range(5)]

    def run(model: StarGAN, steps: range) -> None:
        for i in steps:
            model.training_step(*batches[i])
            if i % 2 == 1:
                model.step_schedulers()

    straight, resumed, _ = resume_matches(lambda: StarGAN(cfg), run, 5, 3)  # weights equal
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


def test_wgan_gp_reports_a_gradient_penalty() -> None:
    model = StarGAN(tiny_config(gan_loss="wgan-gp", n_critic=5))
    losses = model.training_step(*camera_batch(3, seed=0))
    assert losses["D_gp"] > 0 and "G" in losses  # step 0 updates G
    assert "G" not in model.training_step(*camera_batch(3, seed=1))  # 1 % 5: D only
