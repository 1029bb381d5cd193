"""predict_probs: a trained run as a teacher (softmax over its training identities)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidaug.data.h5format import open_h5
from reidaug.errors import ConfigError
from reidaug.train.features import predict_probs
from reidaug.train.model import ModelConfig, build_model, load_model
from reidaug.train.trainer import train
from tiny_reid import one_torch_thread, tiny_config, write_reid_h5


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("teacher")
    data = write_reid_h5(d / "data.h5")
    with one_torch_thread():
        train(tiny_config(), data, d / "run")
    return d / "run", data


def _train_images(data: Path) -> tuple[list[np.ndarray], np.ndarray]:
    with open_h5(data) as f:
        n = f.num_samples("train")
        return [f.read_image("train", i) for i in range(n)], f.meta("train").label


def test_probabilities_over_the_training_identities(teacher) -> None:
    run, data = teacher
    images, labels = _train_images(data)
    probs = predict_probs(run, images, device="cpu")
    assert probs.dtype == np.float32 and probs.shape == (40, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == labels).mean() >= 0.9  # column j is train label j
    # one (N, H, W, 3) array, another batch size, a loaded model: the same numbers
    model = load_model(run)
    again = predict_probs(model, np.stack(images), batch_size=7, device="cpu")
    np.testing.assert_allclose(again, probs, rtol=1e-4, atol=1e-6)


def test_temperature_softens_and_images_of_any_size_are_resized(teacher) -> None:
    run, data = teacher
    images, _ = _train_images(data)
    sharp = predict_probs(run, images[:8], temperature=1.0, device="cpu")
    soft = predict_probs(run, images[:8], temperature=4.0, device="cpu")

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(p + 1e-12)).sum(1)

    assert (entropy(soft) > entropy(sharp)).all() and (soft.argmax(1) == sharp.argmax(1)).all()
    import cv2

    big = [cv2.resize(im, (64, 128), interpolation=cv2.INTER_LINEAR) for im in images[:8]]  # 128x64 in
    np.testing.assert_allclose(predict_probs(run, big, device="cpu").argmax(1), sharp.argmax(1))
    assert predict_probs(run, [], device="cpu").shape == (0, 5)


def test_mistakes_are_clear(teacher) -> None:
    run, data = teacher
    images, _ = _train_images(data)
    with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
        predict_probs(run, images[:2], temperature=0)
    triplet = build_model(ModelConfig(backbone="tiny", num_classes=1, head="triplet", bottleneck="none",
                                      input_size=(64, 32)), "none")
    with pytest.raises(ConfigError, match="head=triplet"):
        predict_probs(triplet, images[:2])


def test_logits_in_eval_mode_match_the_train_mode_classifier_without_dropout_and_bn_noise() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", num_classes=3, head="bnneck", input_size=(32, 16)), "none")
    x = torch.randn(4, 3, 32, 16)
    model.eval()
    f_i = model(x)  # (B, D): BNNeck's eval feature
    assert torch.allclose(model.logits(x), model.classifier(f_i))
