"""CycleGAN (CamStyle) and the shared GAN helpers: shapes, receptive field, training, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reidaug.errors import ConfigError, DataError, UnknownNameError
from reidaug.models.cyclegan import CycleGAN, CycleGANConfig, PatchDiscriminator, ResnetGenerator
from reidaug.models.base import clone_state
from reidaug.models.gan_common import (ImagePool, images_to_tensor, linear_decay_lambda,
                                       lsgan_loss, tensor_to_images)

H, W = 64, 32  # the smallest crops a 70x70 PatchGAN (3 layers) accepts are 24 x 24


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> CycleGANConfig:
    base = dict(ngf=8, ndf=8, n_blocks=2, image_height=H, image_width=W, pool_size=2,
                n_epochs=1, n_epochs_decay=3)
    base.update(overrides)
    return CycleGANConfig(**base)


def tinted(n: int, channel: int, seed: int) -> torch.Tensor:
    """(n, 3, H, W) noise in [-1, 1] with one colour channel raised: a synthetic 'camera'."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, H, W, generator=g) * 0.6 - 0.9
    x[:, channel] += 1.2
    return x


def test_generator_shapes_and_range() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2)
    y = g(torch.randn(2, 3, 32, 16) * 3)
    assert y.shape == (2, 3, 32, 16)
    assert y.min() >= -1 and y.max() <= 1
    # The reference layout: c7s1, 2 downsamplings, residual blocks, 2 upsamplings, c7s1 + tanh.
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [m.kernel_size[0] for m in convs] == [7, 3, 3] + [3] * 4 + [3, 3, 7]
    assert [m.out_channels for m in convs] == [8, 16, 32] + [32] * 4 + [16, 8, 3]
    assert isinstance(g.model[-1], nn.Tanh)


def test_default_parameter_counts_match_the_reference() -> None:
    # 11.378 M and 2.765 M: the figures the official code prints for resnet_9blocks (ngf=64)
    # and the basic 70x70 PatchGAN (ndf=64).
    assert sum(p.numel() for p in ResnetGenerator().parameters()) == 11_378_179
    assert sum(p.numel() for p in PatchDiscriminator().parameters()) == 2_764_737


def test_patch_discriminator_receptive_field_is_70() -> None:
    d = PatchDiscriminator()  # ndf=64, n_layers=3
    rf, jump = 1, 1
    for conv in (m for m in d.modules() if isinstance(m, nn.Conv2d)):
        rf += (conv.kernel_size[0] - 1) * jump
        jump *= conv.stride[0]
    assert rf == 70
    assert d(torch.zeros(1, 3, 256, 128)).shape == (1, 1, 30, 14)
    # One output pixel depends on a 70 x 70 window of the input (without instance norm, whose
    # statistics span the whole image). Random input: no ReLU-dead gradient.
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    PatchDiscriminator(norm="none")(x)[0, 0, 5, 5].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert int(rows.max() - rows.min()) + 1 == 70
    assert int(cols.max() - cols.min()) + 1 == 70


def test_config_rejects_crops_too_small_and_bad_names() -> None:
    with pytest.raises(ConfigError, match="too small"):
        CycleGANConfig(image_height=32, image_width=16)
    with pytest.raises(UnknownNameError, match="instance"):
        CycleGANConfig(norm="instnce")


def test_training_reduces_cycle_loss() -> None:
    model = CycleGAN(tiny_config())
    a, b = tinted(4, 0, seed=1), tinted(4, 2, seed=2)
    first = model.training_step(a, b)
    assert set(first) == {"G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A", "idt_B", "G",
                          "D_A", "D_B"}
    for _ in range(9):
        last = model.training_step(a, b)
    assert last["cycle_A"] < 0.8 * first["cycle_A"]
    assert last["cycle_B"] < 0.8 * first["cycle_B"]
    assert all(np.isfinite(v) for v in last.values())


def test_training_step_rejects_wrong_size_with_a_fix() -> None:
    model = CycleGAN(tiny_config())
    with pytest.raises(DataError, match="64 x 32"):
        model.training_step(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 64, 32))


def test_resume_is_bit_identical(resume_matches) -> None:
    a = [tinted(2, 0, seed=10 + i) for i in range(5)]
    b = [tinted(2, 2, seed=20 + i) for i in range(5)]

    def run(model: CycleGAN, steps: range) -> None:
        for i in steps:
            model.training_step(a[i], b[i])
            if i % 2 == 1:  # an epoch boundary: the learning rate decays
                model.step_schedulers()

    # Every weight bit-identical after 3 steps, a snapshot, and 2 more (checked inside).
    straight, resumed, saved = resume_matches(lambda: CycleGAN(tiny_config()), run, 5, 3)
    # Pools of 2 with batches of 2 are full after step 1: their random swaps were exercised.
    assert len(resumed.fake_a_pool) == 2
    assert straight.optimizer_G.param_groups[0]["lr"] == resumed.optimizer_G.param_groups[0]["lr"]
    # Training the resumed model did not change the snapshot: it resumes the same way again.
    again = CycleGAN.from_state_dict(saved)
    run(again, range(3, 5))
    assert torch.equal(again.G_BA.model[1].weight, straight.G_BA.model[1].weight)
    # Without the pool / optimiser state, the parameters would differ.
    fresh = CycleGAN(tiny_config())
    fresh.nets.load_state_dict(saved["nets"])
    run(fresh, range(3, 5))
    assert not torch.equal(fresh.G_AB.model[1].weight, straight.G_AB.model[1].weight)


def test_residual_generator_starts_as_the_identity_and_learns_a_change() -> None:
    model = CycleGAN(tiny_config(residual=True))
    a, b = tinted(4, 0, seed=1), tinted(4, 2, seed=2)
    with torch.no_grad():
        assert torch.allclose(model.G_AB(a), a.clamp(-1 + 1e-3, 1 - 1e-3), atol=1e-5)
        assert (model.G_AB(a) - a).abs().max() < 1e-3  # a fake before training is its origin
    plain = CycleGAN(tiny_config())
    with torch.no_grad():
        assert (plain.G_AB(a) - a).abs().mean() > 0.2  # the reference generator starts anywhere
    for _ in range(5):
        model.training_step(a, b)
    with torch.no_grad():
        moved = (model.G_AB(a) - a).abs().mean()
    assert 0 < moved < 0.5 and torch.isfinite(model.G_AB(a)).all()
    # weights and the residual flag round-trip; a checkpoint written before the field existed loads
    state = model.state_dict()
    again = CycleGAN.from_state_dict(state)
    assert again.config.residual and torch.equal(again.G_AB(a), model.G_AB(a))
    old = CycleGAN(tiny_config()).state_dict()
    del old["config"]["residual"]
    CycleGAN(tiny_config()).load_state_dict(old)


def test_foreground_loss_pays_for_changes_on_the_person_only() -> None:
    """PTGAN's loss: lambda * mean(((G(x) - x) * M)^2) in both directions. It is 0 where the mask is
    empty, the masked squared change where it is not, refused without masks, and training with it
    keeps the person: after the same steps from the same weights, G_AB changes the masked half of
    each image far less than without it, while the unmasked half is free to change."""
    a, b = tinted(4, 0, seed=1), tinted(4, 2, seed=2)
    empty, full = torch.zeros(4, 1, H, W), torch.ones(4, 1, H, W)
    model = CycleGAN(tiny_config(lambda_foreground=7.0))
    with torch.no_grad():
        expected = 7.0 * ((model.G_AB(a) - a) ** 2).mean().item()
    first = model.training_step(a, b, mask_a=full, mask_b=empty)
    assert first["fg_A"] == pytest.approx(expected, rel=1e-5) and first["fg_B"] == 0.0
    assert first["G"] == pytest.approx(sum(first[k] for k in ("G_AB", "G_BA", "cycle_A", "cycle_B", "idt_A",
                                                              "idt_B", "fg_A", "fg_B")), rel=1e-5)
    with pytest.raises(ConfigError, match=r"lambda_foreground=7.0 needs mask_a \(4, 1, 64, 32\).*found None"):
        model.training_step(a, b)
    assert "fg_A" not in CycleGAN(tiny_config()).training_step(a, b)  # off by default: the reference's losses

    half = torch.zeros(4, 1, H, W)
    half[:, :, :, : W // 2] = 1  # the "person": the left half
    changes = {}
    for lam in (0.0, 50.0):
        m = CycleGAN(tiny_config(lambda_foreground=lam))
        for _ in range(15):
            m.training_step(a, b, mask_a=half, mask_b=half) if lam else m.training_step(a, b)
        with torch.no_grad():
            d = (m.G_AB(a) - a) ** 2
        changes[lam] = (d[..., : W // 2].mean().item(), d[..., W // 2:].mean().item())
    assert changes[50.0][0] < 0.5 * changes[0.0][0]  # the person kept
    assert changes[50.0][1] > 1.5 * changes[50.0][0]  # the background still free to change


def test_feature_loss_compares_a_frozen_models_view_of_fake_and_real() -> None:
    """lambda * mean(1 - cos(f(G(x)), f(x))) both ways with a frozen f: the value at the first step,
    the refusal without f, f's weights untouched by training, and the features kept: after the same
    steps, f sees the fakes closer to their origins than without the loss."""
    a, b = tinted(4, 0, seed=1), tinted(4, 2, seed=2)
    torch.manual_seed(0)
    f_net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for q in f_net.parameters():
        q.requires_grad_(False)
    before = [q.clone() for q in f_net.parameters()]
    cos = nn.functional.cosine_similarity
    model = CycleGAN(tiny_config(lambda_feature=3.0))
    with pytest.raises(ConfigError, match="lambda_feature=3.0 needs feature_net"):
        model.training_step(a, b)
    model.feature_net = f_net
    with torch.no_grad():
        expected = 3.0 * (1 - cos(f_net(model.G_AB(a)), f_net(a), dim=1)).mean().item()
    first = model.training_step(a, b)
    assert first["feat_A"] == pytest.approx(expected, rel=1e-5) and first["feat_B"] > 0
    kept = {}
    for lam in (0.0, 200.0):
        m = CycleGAN(tiny_config(lambda_feature=lam))
        m.feature_net = f_net
        for _ in range(12):
            m.training_step(a, b)
        with torch.no_grad():
            kept[lam] = cos(f_net(m.G_AB(a)), f_net(a), dim=1).mean().item()
    assert kept[200.0] > kept[0.0] and 1 - kept[200.0] < 0.5 * (1 - kept[0.0])
    assert all(torch.equal(x, y) for x, y in zip(before, f_net.parameters()))
    nets = model.state_dict()["nets"]
    assert {k.split(".")[0] for k in nets} == {"G_AB", "G_BA", "D_A", "D_B"}  # the feature net is never saved


def test_load_refuses_a_different_config() -> None:
    state = CycleGAN(tiny_config()).state_dict()
    with pytest.raises(ConfigError, match="ngf"):
        CycleGAN(tiny_config(ngf=4)).load_state_dict(state)


def test_translate_shapes_channels_last_and_bf16_autocast() -> None:
    model = CycleGAN(tiny_config())
    x = tinted(2, 0, seed=3)
    y = model.translate(x, "AB")
    assert y.shape == x.shape and y.abs().max() <= 1
    assert not torch.allclose(y, model.translate(x, "BA"))
    # Inference on a different size than training (fully convolutional).
    assert model.translate(torch.zeros(1, 3, 128, 64), "BA").shape == (1, 3, 128, 64)
    model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = model.translate(x.to(memory_format=torch.channels_last), "AB")
    assert y16.shape == x.shape
    assert (y16.float() - y).abs().max() < 0.1
    with pytest.raises(UnknownNameError, match="BA"):
        model.translate(x, "A2B")


def test_image_pool_returns_input_until_full_then_a_seeded_mix() -> None:
    batches = [torch.full((2, 3, 4, 4), float(i)) for i in range(12)]
    pool = ImagePool(size=4, seed=7)
    assert torch.equal(pool.query(batches[0]), batches[0])
    assert torch.equal(pool.query(batches[1]), batches[1])
    assert len(pool) == 4

    def rest(p: ImagePool) -> list[float]:
        return [float(v) for b in batches[2:] for v in p.query(b)[:, 0, 0, 0]]

    out = rest(pool)
    assert any(v < i // 2 + 2 for i, v in enumerate(out))  # some come from the history
    assert any(v == i // 2 + 2 for i, v in enumerate(out))  # some are the new images
    again = ImagePool(size=4, seed=7)
    again.query(batches[0]), again.query(batches[1])
    assert rest(again) == out  # same seed, same choices
    other = ImagePool(size=4, seed=8)
    other.query(batches[0]), other.query(batches[1])
    assert rest(other) != out
    assert torch.equal(ImagePool(size=0).query(batches[3]), batches[3])


def test_image_pool_state_round_trip() -> None:
    pool = ImagePool(size=3, seed=1)
    for i in range(3):
        pool.query(torch.full((2, 1, 2, 2), float(i)))
    copy = ImagePool(size=3, seed=99)
    copy.load_state_dict(clone_state(pool.state_dict()))
    x = torch.full((4, 1, 2, 2), 9.0)
    assert torch.equal(pool.query(x), copy.query(x))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_linear_decay_schedule() -> None:
    f = linear_decay_lambda(3, 4)
    assert [f(e) for e in range(7)] == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    model = CycleGAN(tiny_config(n_epochs=2, n_epochs_decay=2, lr=3e-4))
    lrs = [model.step_schedulers() for _ in range(3)]
    assert lrs == pytest.approx([3e-4, 2e-4, 1e-4])


def test_lsgan_loss_targets() -> None:
    pred = torch.tensor([0.0, 1.0, 2.0])
    assert float(lsgan_loss(pred, True)) == pytest.approx((1 + 0 + 1) / 3)
    assert float(lsgan_loss(pred, False)) == pytest.approx((0 + 1 + 4) / 3)


def test_image_conversion_round_trip() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 8, 4, 3), dtype=np.uint8)
    t = images_to_tensor(list(imgs))
    assert t.shape == (2, 3, 8, 4) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(tensor_to_images(t), imgs)
    with pytest.raises(DataError, match="uint8"):
        images_to_tensor(imgs.astype(np.float32))
