"""PN-GAN's test-time fusion: each image's own keypoint frame, the no-pose fallback, max / mean pooling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reidaug.gen.posefusion import canonical_in_frame, fused_features
from reidaug.train.model import ModelConfig, build_model


class StubGenerator:
    """Records the condition keypoints it is given; 're-poses' by inverting the image."""

    size = (32, 16)
    score_threshold = 0.3

    def __init__(self) -> None:
        self.cond_kp: list[np.ndarray] = []

    def generate(self, cond, cond_kp, target_kp):
        self.cond_kp.append(cond_kp.copy())
        return 255 - cond


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="tiny", num_classes=3, head="bnneck", input_size=(32, 16)), "none")


def test_keypoints_move_from_each_images_own_frame_and_posing_changes_the_features(model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 32, 3), np.uint8), rng.integers(0, 255, (128, 64, 3), np.uint8)]
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, :, 2] = 0.9
    kp[0, :, :2] = [16, 32]  # the centre of a 64 x 32 image
    kp[1, :, :2] = [32, 64]  # the centre of a 128 x 64 image
    gen = StubGenerator()
    poses = np.zeros((2, 17, 3), np.float32)
    out = fused_features(model, gen, images, kp, poses, batch_size=2)
    got = gen.cond_kp[0][:, 0, :2]  # both in the generator's 32 x 16 frame: its centre, (8, 16)
    np.testing.assert_allclose(got, [[8, 16], [8, 16]], atol=0.5)
    f = out.features
    assert set(f) == {"none", "max", "mean"} and f["none"].shape == f["max"].shape == (2, model.feature_dim)
    assert (f["max"] >= f["mean"] - 1e-6).all() and np.abs(f["max"] - f["none"]).max() > 1e-4
    assert out.no_pose == 0


def test_an_image_with_no_pose_keeps_its_unfused_feature(model):
    images = [np.full((32, 16, 3), v, np.uint8) for v in (40, 200)]
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, :, 2] = 0.9  # a person found; image 1: none (all-zero keypoints)
    out = fused_features(model, StubGenerator(), images, kp, np.zeros((3, 17, 3), np.float32), keep_pictures=1)
    assert out.no_pose == 1
    np.testing.assert_array_equal(out.features["max"][1], out.features["none"][1])
    np.testing.assert_array_equal(out.features["mean"][1], out.features["none"][1])
    assert out.pose_images.shape == (1, 4, 32, 16, 3)


def test_canonical_poses_move_into_the_generators_frame():
    doc = {"frame_hw": [256, 128], "keypoints": np.full((2, 17, 3), [64, 128, 1.0]).tolist()}
    got = canonical_in_frame(doc, (128, 64))
    np.testing.assert_allclose(got[..., :2], np.full((2, 17, 2), [32, 64]), atol=0.5)
