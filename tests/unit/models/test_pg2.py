"""PG2 (pose-guided generation, stage I and II): shapes, FC bottleneck, pose-mask L1, pair
discriminator, training, resume, input checks."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from reidaug.errors import ConfigError, DataError
from reidaug.models.base import clone_state
from reidaug.models.pg2 import (PG2, PairDiscriminator, PG2Config, UNetG1, UNetG2,
                                pose_mask_l1)

H, W = 64, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides: object) -> PG2Config:
    base = dict(image_height=H, image_width=W, ngf=4, ndf=4, z_dim=8, lr_g1=2e-3, lr_g2=2e-3,
                lr_d=2e-3)
    base.update(overrides)
    return PG2Config(**base)


def smooth_images(n: int, seed: int, h: int = H, w: int = W) -> torch.Tensor:
    """(n, 3, h, w) in [-1, 1]: low-frequency colour blobs, something a tiny U-Net can fit."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 2, generator=g) * 1.6 - 0.8
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture
def batch(standing_pose) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``batch(model, n=2, seed=0)``: condition and target images, target heatmaps and mask."""

    def make(model: PG2, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
        hm, mask = model.pose_maps(np.stack([standing_pose()] * n))
        return smooth_images(n, seed), smooth_images(n, seed + 100), hm, mask

    return make


@pytest.mark.parametrize("h,w", [(64, 32), (128, 64)])
def test_shapes(h: int, w: int, standing_pose) -> None:
    cfg = tiny_config(image_height=h, image_width=w)
    model = PG2(cfg)
    # Default depth keeps an 8 x 4 bottleneck: log2(H) - 2 blocks; G2 has two fewer.
    assert cfg.blocks_g1 == int(np.log2(h)) - 2 and cfg.blocks_g2 == cfg.blocks_g1 - 2
    assert model.G1.bottleneck == (8, 4)
    x = torch.zeros(2, 20, h, w)
    assert model.G1(x).shape == (2, 3, h, w)
    assert model.G2(torch.zeros(2, 6, h, w)).shape == (2, 3, h, w)
    assert model.D(torch.zeros(2, 6, h, w)).shape == (2,)
    kp = np.stack([standing_pose(h, w)] * 2)
    hm, mask = model.pose_maps(kp)
    assert hm.shape == (2, 17, h, w) and mask.shape == (2, 1, h, w)
    g1, g2 = model.generate(torch.zeros(2, 3, h, w), hm)
    assert g1.shape == g2.shape == (2, 3, h, w)
    assert g2.abs().max() <= 1


def test_256x128_option_keeps_the_8x4_bottleneck() -> None:
    cfg = PG2Config(image_height=256, image_width=128, ngf=2, ndf=2, z_dim=4)
    assert (cfg.blocks_g1, cfg.blocks_g2, cfg.layers_d) == (6, 4, 5)
    assert UNetG1(20, 3, 2, cfg.blocks_g1, 4, (256, 128)).bottleneck == (8, 4)
    assert PG2Config().size == (128, 64)  # the CPU default


def test_default_architecture_matches_the_reference() -> None:
    # conv_hidden_num 128, z_num 64, 5 blocks at 128 x 64: encoder widths 128..640, FC on the
    # 8 x 4 x 640 map; G2 has 3 levels and no linear layer; D ends in a linear layer on 8 x 4.
    g1 = UNetG1()
    assert [b[0].out_channels for b in g1.enc] == [128, 256, 384, 512, 640]
    assert (g1.fc_in.in_features, g1.fc_in.out_features) == (8 * 4 * 640, 64)
    assert g1.fc_out.out_features == 8 * 4 * 128
    g2 = UNetG2()  # 3 levels (n_blocks - 2), 128-wide decoder, no full-resolution skip
    assert len(g2.enc) == 3 and g2.skip_levels == [1]
    assert [b[2].out_channels for b in g2.dec] == [128, 128, 128]
    d = PairDiscriminator()
    assert [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256,
                                                                                    512]
    assert d.fc.in_features == 512 * 8 * 4


def test_fc_bottleneck_in_g1_only() -> None:
    cfg = tiny_config()
    model = PG2(cfg).eval()
    assert any(isinstance(m, nn.Linear) for m in model.G1.modules())
    assert not any(isinstance(m, nn.Linear) for m in model.G2.modules())
    # Behaviour: through the FC layer a change at one corner of the input reaches the opposite
    # corner of G1's output; G2, fully convolutional and shallow, stays local.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 20, H, W, generator=g)
    x2 = x.clone()
    x2[:, :, :4, :4] += 5.0
    with torch.no_grad():
        far = (slice(None), slice(None), slice(H - 4, H), slice(W - 4, W))
        assert (model.G1(x2) - model.G1(x))[far].abs().max() > 1e-4
        y, y2 = model.G2(x[:, :6]), model.G2(x2[:, :6])
        assert torch.equal(y[far], y2[far])


def test_pose_mask_l1_on_a_hand_case() -> None:
    out = torch.zeros(1, 3, 2, 2)
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (1, 1, 2, 2): pixels 1 and 4 on the body
    # |d| * (1 + m) = [2, 2, 3, 8] on every channel -> mean 15 / 4.
    assert float(pose_mask_l1(out, target, mask)) == pytest.approx(3.75)
    # The reference's form: mean(|d|) + mean(|d| * M) = 2.5 + 1.25.
    assert float(pose_mask_l1(out, target, mask)) == pytest.approx(
        float((target - out).abs().mean() + ((target - out).abs() * mask).mean()))
    assert float(pose_mask_l1(out, target, torch.zeros_like(mask))) == pytest.approx(2.5)


def test_discriminator_sees_condition_image_pairs(batch) -> None:
    model = PG2(tiny_config())
    assert model.D.main[0].in_channels == 6
    with pytest.raises(DataError, match="condition image ⊕ image"):
        model.D(torch.zeros(1, 3, H, W))
    seen: list[torch.Tensor] = []
    hook = model.D.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    cond, target, hm, mask = batch(model)
    model.training_step_g2(cond, target, hm, mask)
    hook.remove()
    # G2 step and D step: real pairs (cond, target) then fake pairs (cond, generated), one batch.
    assert len(seen) == 2
    for x in seen:
        assert x.shape == (4, 6, H, W)
        assert torch.equal(x[:2, :3], cond) and torch.equal(x[2:, :3], cond)
        assert torch.equal(x[:2, 3:], target)
        assert not torch.equal(x[2:, 3:], target)


def test_stage1_overfits_a_fixed_pair(batch) -> None:
    model = PG2(tiny_config(ngf=8, z_dim=16))
    cond, target, hm, mask = batch(model)
    first = model.training_step_g1(cond, target, hm, mask)
    assert set(first) == {"G1", "G1_l1"}
    for _ in range(80):  # 40 steps reached 0.34x standalone but 0.59x inside the suite's process state
        last = model.training_step_g1(cond, target, hm, mask)
    assert last["G1"] < 0.5 * first["G1"]
    assert model.step_g1 == 81


def test_stage2_trains_g2_and_d_with_g1_fixed(batch) -> None:
    model = PG2(tiny_config())
    cond, target, hm, mask = batch(model)
    g1_before = clone_state(model.G1.state_dict())
    g2_before = clone_state(model.G2.state_dict())
    losses = model.training_step_g2(cond, target, hm, mask)
    assert set(losses) == {"G2_adv", "G2_l1", "G2", "D_real", "D_fake", "D"}
    assert losses["G2"] == pytest.approx(losses["G2_adv"] + 10.0 * losses["G2_l1"], rel=1e-5)
    assert all(torch.equal(v, model.G1.state_dict()[k]) for k, v in g1_before.items())
    assert any(not torch.equal(v, model.G2.state_dict()[k]) for k, v in g2_before.items())
    # G2's output is G1's plus a difference map.
    g1, g2 = model.generate(cond, hm)
    with torch.no_grad():
        raw_g1 = model.G1(torch.cat([cond, hm], 1))
        diff = model.G2(torch.cat([cond, raw_g1], 1))
    assert torch.allclose(g2, (raw_g1 + diff).clamp(-1, 1))


def test_resume_is_bit_identical_across_both_stages(batch, resume_matches) -> None:
    cfg = tiny_config()

    def run(model: PG2, steps: range) -> None:
        for i in steps:
            cond, target, hm, mask = batch(model, seed=i)
            if i < 2:
                model.training_step_g1(cond, target, hm, mask)
            else:
                model.training_step_g2(cond, target, hm, mask)

    # Snapshot after two stage-I steps and one stage-II step; every weight equal (inside).
    straight, resumed, saved = resume_matches(lambda: PG2(cfg), run, 5, 3)
    assert (resumed.step_g1, resumed.step_g2) == (2, 3)
    # Without the optimiser state, the weights would differ.
    fresh = PG2(cfg)
    fresh.nets.load_state_dict(saved["nets"])
    run(fresh, range(3, 5))
    assert not torch.equal(fresh.G2.out.weight, straight.G2.out.weight)


def test_pose_maps_follow_the_keypoints(standing_pose) -> None:
    model = PG2(tiny_config())
    kp = standing_pose()
    hm, mask = model.pose_maps(kp)  # one pose: a batch of one
    assert hm.shape == (1, 17, H, W) and hm.dtype == torch.float32
    x, y = int(kp[9, 0]), int(kp[9, 1])  # left wrist
    assert hm[0, 9, y, x] == pytest.approx(1.0, abs=1e-3) and mask[0, 0, y, x] == 1
    assert mask[0, 0, 0, 0] == 0  # the corner is background
    # The same pose given in a 128 x 64 frame (pixel centres: x_128 = 2 (x + 0.5) - 0.5) lands
    # at the same place at the model's 64 x 32.
    kp128 = kp.copy()
    kp128[:, :2] = (kp[:, :2] + 0.5) * 2 - 0.5
    hm2, mask2 = model.pose_maps(kp128, src_hw=(128, 64))
    assert torch.allclose(hm2, hm, atol=1e-5) and torch.equal(mask2, mask)
    with pytest.raises(DataError, match="17, 3"):
        model.pose_maps(np.zeros((2, 18, 3), np.float32))


def test_bad_inputs_say_what_was_expected(batch) -> None:
    model = PG2(tiny_config())
    cond, target, hm, mask = batch(model)
    with pytest.raises(DataError, match="64 x 32"):
        model.training_step_g1(torch.zeros(2, 3, 32, 32), target, hm, mask)
    with pytest.raises(DataError, match=r"\(B, 17, H, W\)"):
        model.training_step_g1(cond, target, hm[:, :3], mask)
    with pytest.raises(DataError, match="body mask"):
        model.training_step_g2(cond, target, hm, mask[:, :, :10])
    with pytest.raises(DataError, match="same batch size"):
        model.training_step_g1(cond, target[:1], hm, mask)
    with pytest.raises(DataError, match="Fix"):
        model.generate(cond, hm[:1])
    with pytest.raises(ConfigError, match="divisible"):
        PG2Config(image_height=100, image_width=50)
    with pytest.raises(ConfigError, match="heatmap_sigma"):
        PG2Config(heatmap_sigma=0.0)
    state = model.state_dict()
    with pytest.raises(ConfigError, match="ngf"):
        PG2(tiny_config(ngf=2)).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a PG2 checkpoint"):
        model.load_state_dict({**state, "model": "cyclegan"})
