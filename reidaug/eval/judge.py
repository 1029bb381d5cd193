"""Identity consistency: is a generated re-ID image still the same person, to a fixed judge?

A fixed re-ID model that never saw the data (:class:`OSNetJudge`, OSNet x0.25 trained on MSMT17;
Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019) embeds every
image; each fake is a query against the gallery of *all real images*, with its own origin image
removed (a fake is trivially closest to the image it was made from). Rank-1/5 and mAP come from
:func:`reidaug.eval.metrics.evaluate`. Baseline: the origin images themselves as the queries,
under the same protocol (each without itself), i.e. the judge's ceiling on this data.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidaug.errors import ConfigError, DataError, DependencyError
from reidaug.eval.inputs import check_origins, check_positive_int, check_rgb, image_list, int_array

LOG = logging.getLogger(__name__)

#: Where the fixed judge lives in this project's CI (relative to the project root).
SHARED_JUDGE = "../shared/models/osnet_x0_25_msmt17.onnx"
JUDGE_INSTALL_HINT = (
    "Fix: `.venv/bin/pip install -r requirements/pinned.txt` (pins onnxruntime), or "
    "`pip install 'reidaug[judge]'`"
)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise DependencyError(
            f"the re-ID judge needs the package onnxruntime, which does not import "
            f"({type(err).__name__}: {err}). {JUDGE_INSTALL_HINT}."
        ) from None
    return onnxruntime


class OSNetJudge:
    """A fixed ONNX re-ID model that embeds images: ``features(images) -> (N, D)``, L2-normalised.

    The model's input must be ``(batch, 3, H, W)`` float32 RGB, ImageNet mean/std normalised
    (as torchreid's models are trained and exported); H and W are read from the model (pass
    ``input_size=(H, W)`` only if they are symbolic). Images of any size are resized to (H, W)
    with ``cv2.INTER_LINEAR``. ``providers`` default: CUDA when onnxruntime offers it, else CPU.
    ``num_threads``: onnxruntime's intra-op threads (None: its default, one per physical core).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        batch_size: int = 64,
        providers: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
        num_threads: int | None = None,
    ) -> None:
        check_positive_int(batch_size, "OSNetJudge: batch_size")
        path = Path(model_path)
        if not path.is_file():
            raise DependencyError(
                f"re-ID judge model {path} does not exist. Fix: pass the path of an ONNX re-ID "
                f"model (this project's CI has {SHARED_JUDGE}; elsewhere export torchreid's "
                f"osnet_x0_25 MSMT17 weights with torch.onnx.export, input (B, 3, 256, 128))."
            )
        ort = _onnxruntime()
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise DependencyError(
                    f"OSNetJudge: onnxruntime {ort.__version__} lacks providers {missing}; it "
                    f"has {available}. Fix: pass providers=None (automatic) or install the "
                    f"onnxruntime build that has them (onnxruntime-gpu for CUDA)."
                )
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own pybind classes (InvalidProtobuf, Fail)
            raise DependencyError(
                f"re-ID judge model {path} is not a loadable ONNX model "
                f"({type(err).__name__}: {str(err).strip()[:300]}). Fix: pass an ONNX re-ID "
                f"model such as {SHARED_JUDGE}."
            ) from None
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or inp.type != "tensor(float)":
            raise DependencyError(
                f"re-ID judge model {path}: expected one float input of shape (batch, 3, H, W); "
                f"found {inp.name!r} {inp.type} {shape}. Fix: pass a re-ID model exported with "
                f"an NCHW RGB image input."
            )
        if input_size is None:
            if not all(isinstance(d, int) and d > 0 for d in shape[2:]):
                raise ConfigError(
                    f"re-ID judge model {path} has a symbolic input size {shape[2:]}; pass "
                    f"input_size=(H, W), e.g. (256, 128)."
                )
            input_size = (int(shape[2]), int(shape[3]))
        self.path = path
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_size = (int(input_size[0]), int(input_size[1]))  # (H, W)
        self.batch_size = int(batch_size)
        self.providers = tuple(self.session.get_providers())
        out_shape = self.session.get_outputs()[0].shape
        self.dim: int | None = out_shape[-1] if isinstance(out_shape[-1], int) else None
        from reidaug.data.torchdata import IMAGENET_MEAN, IMAGENET_STD  # (torch: not at import)

        self._mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0  # (3,) in uint8 units
        self._inv_std = 1.0 / (np.asarray(IMAGENET_STD, np.float32) * 255.0)
        LOG.info("re-ID judge %s: input %s %s, output dim %s, providers %s",
                 path.name, self.input_name, self.input_size, self.dim, self.providers)

    def __repr__(self) -> str:
        return (f"OSNetJudge({str(self.path)!r}, input_size={self.input_size}, dim={self.dim}, "
                f"providers={list(self.providers)})")

    def _batch(self, images: Sequence[np.ndarray], start: int) -> np.ndarray:
        import cv2

        h, w = self.input_size
        out = np.empty((len(images), h, w, 3), np.float32)  # (B, H, W, 3)
        for i, img in enumerate(images):
            img = check_rgb(img, f"image {start + i}")
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = img
        out -= self._mean
        out *= self._inv_std
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (B, 3, H, W)

    def features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, D) float32 L2-normalised features of RGB uint8 (H, W, 3) images, any sizes."""
        images = image_list(images, "images")
        feats = []
        for start in range(0, len(images), self.batch_size):
            x = self._batch(images[start:start + self.batch_size], start)
            y = self.session.run([self.output_name], {self.input_name: x})[0]
            feats.append(np.asarray(y, np.float32).reshape(len(x), -1))  # (B, D)
        if not feats:
            return np.zeros((0, self.dim or 0), np.float32)
        f = np.concatenate(feats)
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        return (f / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class IdentityConsistency:
    """Result of :func:`identity_consistency`. Each side is a dict: rank1, rank5, mAP, mINP,
    num_queries, num_skipped (queries with no valid match, left out of the averages)."""

    fakes: dict[str, Any]
    baseline: dict[str, Any] | None  # origin images as queries; None when no fake has an origin
    num_fakes_with_origin: int


def metrics_dict(m: Any) -> dict[str, Any]:
    """The identity metrics of a :func:`reidaug.eval.metrics.evaluate` result, as JSON-ready numbers."""
    d = m.as_dict()  # rank5 is absent (None here) when the gallery has fewer than 5 images
    return {k: d.get(k) for k in ("rank1", "rank5", "mAP", "mINP", "num_queries", "num_skipped")}


def identity_consistency(
    fake_feats: Any,
    fake_pids: Any,
    fake_origins: Any,
    real_feats: Any,
    real_pids: Any,
    *,
    max_rank: int = 50,
) -> IdentityConsistency:
    """Fakes as queries against all real images, each fake's origin image excluded.

    fake_feats (F, D), real_feats (R, D): features (L2-normalised: ranked by cosine distance).
    fake_origins (F,): index into the real arrays of the image each fake was made from, -1 for
    none (nothing excluded; e.g. a gallery that does not hold it). A match is any other real
    image of the fake's pid, in any camera. Fakes with pid -1 (no identity) are skipped and
    counted. Baseline: for each fake with an origin, that origin image as the query, itself
    excluded, against the same gallery (paired with the fakes, so an origin with k fakes counts
    k times). Implemented with :func:`reidaug.eval.metrics.evaluate`: gallery "cameras" are the
    real indices and a query's "camera" is its origin, so its Market rule (drop same pid and
    same camera) drops exactly the origin.
    """
    from reidaug.eval.metrics import evaluate

    ff = np.asarray(fake_feats)
    rf = np.asarray(real_feats)
    if ff.ndim != 2 or rf.ndim != 2:
        raise DataError(f"identity_consistency: features must be (N, D); found fake {ff.shape}, "
                        f"real {rf.shape}.")
    fp = int_array(fake_pids, "fake_pids", ff.shape[0])
    fo = int_array(fake_origins, "fake_origins", ff.shape[0])
    rp = int_array(real_pids, "real_pids", rf.shape[0])
    has = check_origins(fo, fp, rp)
    g_cam = np.arange(rf.shape[0], dtype=np.int64)  # each real image its own "camera"
    kw = dict(metric="cosine", max_rank=max_rank)
    fakes = evaluate(ff, rf, fp, rp, fo, g_cam, **kw)
    baseline = None
    if has.any():
        src = fo[has]
        baseline = metrics_dict(evaluate(rf[src], rf, rp[src], rp, src, g_cam, **kw))
    return IdentityConsistency(metrics_dict(fakes), baseline, int(has.sum()))

