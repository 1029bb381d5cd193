"""mmpose's batched path as tuned for the CPU (mini-batches, channels-last input, BatchNorm folded
into a copy of the model) gives the keypoints of the plain one-``test_step`` batch and of mmpose's
own per-crop ``inference_topdown`` (random weights: the same numbers once seeded, speed-only
checkpoints are not needed for this)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

pytestmark = pytest.mark.mmpose

XY_ATOL = 1e-3  # pixels
SCORE_ATOL = 1e-4  # measured <= 6e-6 on 133 crops (CUHK01 + random)


@pytest.fixture(scope="module")
def est():
    pytest.importorskip("mmpose")
    from reidaug.models.pose_estimators import build_estimator

    return build_estimator("mmpose", config="rtmpose-t", random_init=True, seed=0)


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """7 crops of mixed sizes and aspect ratios: with forward_batch=3, two full mini-batches and
    a partial one."""
    rng = np.random.default_rng(11)
    sizes = [(160, 60), (256, 128), (96, 40), (64, 200), (128, 64), (300, 90), (48, 48)]
    out = []
    for h, w in sizes:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = (200, 40, 40)  # a block: not pure noise
        out.append(img)
    return out


def _plain(est):
    """The batched path as it was before the CPU tuning: one test_step, NCHW, the model as it is."""
    old = copy.copy(est)
    old.forward_batch, old.channels_last, old.batch_model = None, False, est.model
    return old


def _assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a[..., :2], b[..., :2], rtol=0, atol=XY_ATOL)
    np.testing.assert_allclose(a[..., 2], b[..., 2], rtol=0, atol=SCORE_ATOL)


def test_cpu_defaults_fold_bn_into_a_copy_and_leave_the_model_alone(est):
    from reidaug.models.pose_estimators import MMPOSE_CPU_FORWARD_BATCH

    def n_bn(model) -> int:
        return sum("BatchNorm" in type(m).__name__ for m in model.modules())

    assert est.forward_batch == MMPOSE_CPU_FORWARD_BATCH and est.channels_last
    assert est.batch_model is not est.model
    assert n_bn(est.batch_model) == 0 and n_bn(est.model) > 0  # folded copy; mmpose's model untouched
    assert all(p.is_contiguous() for p in est.model.parameters())


def test_tuned_batch_equals_plain_batch_and_inference_topdown(est, crops):
    from reidaug.models.pose_estimators import mmpose_predict_per_image

    tuned = copy.copy(est)
    tuned.forward_batch = 3  # 3 + 3 + 1 crops: the partial last mini-batch too
    got = tuned.predict_raw(crops)
    assert got.shape == (len(crops), 17, 3) and got.dtype == np.float32
    _assert_same(got, _plain(est).predict_raw(crops))
    _assert_same(got, mmpose_predict_per_image(est, crops, raw=True))
    _assert_same(est.predict_raw(crops), got)  # default forward_batch: all 7 in one mini-batch
    # the clipped output follows from the raw one as before
    from reidaug.models.pose_estimators import to_crop_frame

    clipped = tuned.predict(crops)
    for k, r, img in zip(clipped, got, crops):
        np.testing.assert_array_equal(k, to_crop_frame(r, img.shape[0], img.shape[1]))


def test_each_knob_alone_keeps_the_keypoints(est, crops):
    ref = _plain(est).predict_raw(crops[:4])
    for knob in ("forward_batch", "channels_last", "batch_model"):
        one = _plain(est)
        setattr(one, knob, {"forward_batch": 1, "channels_last": True, "batch_model": est.batch_model}[knob])
        _assert_same(one.predict_raw(crops[:4]), ref)


def test_a_fold_that_changes_the_outputs_is_dropped(monkeypatch, caplog):
    pytest.importorskip("mmpose")
    import mmcv.cnn
    import torch

    from reidaug.models.pose_estimators import build_estimator

    real = mmcv.cnn.fuse_conv_bn

    def wrong_fold(module):
        out = real(module)
        with torch.no_grad():
            next(p for p in out.parameters() if p.dim() == 4).mul_(1.5)  # e.g. a BN before its conv
        return out

    monkeypatch.setattr(mmcv.cnn, "fuse_conv_bn", wrong_fold)
    with caplog.at_level("WARNING", logger="reidaug.models.pose_estimators"):
        bad = build_estimator("mmpose", config="rtmpose-t", random_init=True, seed=0)
    assert bad.batch_model is bad.model
    assert "changes its outputs" in caplog.text


def test_forward_batch_must_be_positive():
    pytest.importorskip("mmpose")
    from reidaug.errors import ConfigError
    from reidaug.models.pose_estimators import MMPoseEstimator

    with pytest.raises(ConfigError, match="forward_batch must be >= 1"):
        MMPoseEstimator("rtmpose-t", random_init=True, forward_batch=0)
