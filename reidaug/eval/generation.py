"""Generation metrics: is a generated re-ID image still the same person, in the target camera?

Used for CamStyle fakes (Zhong et al., "Camera Style Adaptation for Person Re-identification",
CVPR 2018) and for pose-guided fakes (PG2, Ma et al., NeurIPS 2017; Deformable GAN, Siarohin et
al., CVPR 2018). Four measurements, each beside a baseline that says what "good" means on the
data at hand:

* **Identity consistency** (:func:`identity_consistency`): a fixed re-ID model that never saw the
  data (:class:`OSNetJudge`, OSNet x0.25 trained on MSMT17; Zhou et al., "Omni-Scale Feature
  Learning for Person Re-Identification", ICCV 2019) embeds every image; each fake is a query
  against the gallery of *all real images*, with its own origin image removed (a fake is
  trivially closest to the image it was made from). Rank-1/5 and mAP come from
  :func:`reidaug.eval.metrics.evaluate`. Baseline: the origin images themselves as the queries,
  under the same protocol (each without itself), i.e. the judge's ceiling on this data.
* **FReID** (:func:`frechet_distance`, :func:`freid_per_camera`): the Fréchet distance
  (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule", NeurIPS 2017: FID) between
  Gaussians fitted to re-ID features instead of Inception features. Per target camera c:
  FD(fakes translated to c, real images of c) beside FD(the untransferred origins of the same
  fakes, real images of c). Lower than the baseline = the translation moved the features
  towards camera c.
* **SSIM** (:func:`ssim`, :func:`mask_ssim`): Wang et al., "Image Quality Assessment: From Error
  Visibility to Structural Similarity", TIP 2004, computed as PG2 / Deformable GAN evaluate with
  scikit-image's ``compare_ssim(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  multichannel=True)``: an 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 0.01,
  K2 0.03, population covariance, the SSIM map averaged over the pixels whose window lies
  inside the image (skimage crops 5 pixels at each border) and then over channels. Data range
  255 by default (Deformable GAN passes ``generated.max() - generated.min()``, which is near 255
  for natural images). Mask-SSIM is PG2's: both images multiplied by the body mask first. Needs
  ground-truth images, which real data lacks; the synthetic dataset has them
  (:func:`synthetic_gt_path`).
* :func:`evaluate_generated` runs all of it on arrays and returns a JSON-ready dict;
  :func:`format_report` turns it into a markdown table; :func:`read_generated_h5` pulls the
  arrays from an exported reidaug HDF5 file (docs/hdf5-format.md).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from reidaug.errors import ConfigError, DataError, DependencyError

LOG = logging.getLogger(__name__)

#: Where the fixed judge lives in this project's CI (relative to the project root).
SHARED_JUDGE = "../shared/models/osnet_x0_25_msmt17.onnx"
JUDGE_INSTALL_HINT = (
    "Fix: `.venv/bin/pip install -r requirements/pinned.txt` (pins onnxruntime), or "
    "`pip install 'reidaug[judge]'`"
)

# SSIM constants of Wang et al. 2004 as scikit-image applies them with gaussian_weights=True.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # scipy's truncate=3.5 -> 5, an 11-tap window
SSIM_K1, SSIM_K2 = 0.01, 0.03
_SSIM_TAPS = np.exp(-0.5 * (np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
_SSIM_TAPS /= _SSIM_TAPS.sum()  # (11,) float64, sums to 1 like scipy.ndimage.gaussian_filter
# Images per SSIM step: about this many pixel values, so the five filtered maps stay in cache
# (measured: one 256x128 pair at a time is 8x faster than 64 at once).
_SSIM_CHUNK_ELEMENTS = 150_000


# ------------------------------------------------------------------------------------ judge


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
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"OSNetJudge: batch_size must be a positive integer; got {batch_size!r}.")
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
        except Exception as err:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail)
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
            img = _check_rgb(img, f"image {start + i}")
            if img.shape[:2] != (h, w):
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = img
        out -= self._mean
        out *= self._inv_std
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (B, 3, H, W)

    def features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, D) float32 L2-normalised features of RGB uint8 (H, W, 3) images, any sizes."""
        images = _image_list(images, "images")
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


def _check_rgb(img: Any, where: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise DataError(
            f"{where}: expected an RGB uint8 array (H, W, 3); found dtype {arr.dtype}, shape "
            f"{arr.shape}. Fix: decode images to RGB uint8 (reidaug.data.images.decode_image)."
        )
    return arr


def _image_list(images: Any, name: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise DataError(
                f"{name}: expected a list of (H, W, 3) images or an (N, H, W, 3) array; found an "
                f"array of shape {images.shape}."
            )
        return list(images)
    return list(images)


# ------------------------------------------------------------------------- identity consistency


@dataclasses.dataclass(frozen=True)
class IdentityConsistency:
    """Result of :func:`identity_consistency`. Each side is a dict: rank1, rank5, mAP, mINP,
    num_queries, num_skipped (queries with no valid match, left out of the averages)."""

    fakes: dict[str, Any]
    baseline: dict[str, Any] | None  # origin images as queries; None when no fake has an origin
    num_fakes_with_origin: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _metrics_dict(m: Any) -> dict[str, Any]:
    d = m.as_dict()
    return {"rank1": d["rank1"], "rank5": d.get("rank5"), "mAP": d["mAP"], "mINP": d["mINP"],
            "num_queries": d["num_queries"], "num_skipped": d["num_skipped"]}


def _int_array(x: Any, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name}: expected shape ({n},), one per image; found shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{name}: expected integers; found dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _check_origins(origins: np.ndarray, fake_pids: np.ndarray, real_pids: np.ndarray) -> np.ndarray:
    """Boolean mask of fakes with an origin; raises when an origin is out of range or of
    another identity (then excluding it would silently exclude nothing)."""
    has = origins >= 0
    bad = origins < -1
    bad |= origins >= len(real_pids)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"fake_origins: {int(bad.sum())} origins are outside -1..{len(real_pids) - 1} (the "
            f"real images), e.g. fake {i} has origin {int(origins[i])}. Fix: origins index the "
            f"real arrays (-1 = none); remap HDF5 row numbers with read_generated_h5."
        )
    labelled = has & (fake_pids >= 0)
    mismatch = labelled & (real_pids[np.where(has, origins, 0)] != fake_pids)
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise DataError(
            f"fake_pids: {int(mismatch.sum())} fakes have another pid than their origin image, "
            f"e.g. fake {i}: pid {int(fake_pids[i])}, origin {int(origins[i])} has pid "
            f"{int(real_pids[origins[i]])}. Fix: pass the original (not relabelled) pids of both."
        )
    return has


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
    fp = _int_array(fake_pids, "fake_pids", ff.shape[0])
    fo = _int_array(fake_origins, "fake_origins", ff.shape[0])
    rp = _int_array(real_pids, "real_pids", rf.shape[0])
    has = _check_origins(fo, fp, rp)
    g_cam = np.arange(rf.shape[0], dtype=np.int64)  # each real image its own "camera"
    kw = dict(metric="cosine", max_rank=max_rank)
    fakes = evaluate(ff, rf, fp, rp, fo, g_cam, **kw)
    baseline = None
    if has.any():
        src = fo[has]
        baseline = _metrics_dict(evaluate(rf[src], rf, rp[src], rp, src, g_cam, **kw))
    return IdentityConsistency(_metrics_dict(fakes), baseline, int(has.sum()))


# ------------------------------------------------------------------------------- Fréchet


def _feature_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected features of shape (N, D); found shape {arr.shape}.")
    if arr.shape[0] < 2:
        raise DataError(
            f"{name}: {arr.shape[0]} feature rows; a covariance needs at least 2. Fix: pass more "
            f"images (the Fréchet distance is only meaningful with many more than D)."
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: features contain NaN or inf. Check the model output.")
    return arr


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a: Any, feats_b: Any, *, eps: float = 0.0) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances (N - 1, as
    pytorch-fid). The trace of the matrix square root is computed from eigenvalues of the
    symmetric PSD matrix ``S_a^(1/2) S_b S_a^(1/2)`` (same eigenvalues as ``S_a S_b``), so it
    needs no complex sqrtm and no eps fallback. ``eps`` adds ``eps * I`` to both covariances.

    With N <= D a covariance is rank-deficient (rank <= N - 1): the value is still defined but
    biased upward, more so for smaller N; compare only distances computed from equal N (as
    :func:`freid_per_camera` does for a fake set and its baseline). A warning is logged.
    """
    a = _feature_matrix(feats_a, "feats_a")
    b = _feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"frechet_distance: feature sizes differ ({a.shape[1]} vs {b.shape[1]}); "
                        f"extract both with the same model.")
    if eps < 0:
        raise ConfigError(f"frechet_distance: eps must be >= 0; got {eps!r}.")
    d = a.shape[1]
    if min(a.shape[0], b.shape[0]) <= d:
        LOG.warning("Fréchet distance from %d and %d samples of %d-d features: covariances are "
                    "rank-deficient, the value is biased upward (compare only at equal N)",
                    a.shape[0], b.shape[0], d)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.cov(a, rowvar=False).reshape(d, d) + eps * np.eye(d)
    s_b = np.cov(b, rowvar=False).reshape(d, d) + eps * np.eye(d)
    r = _psd_sqrt(s_a)
    m = r @ s_b @ r
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)
    return max(fd, 0.0)  # rounding can give -1e-12 for identical sets


def freid_per_camera(
    fake_feats: Any,
    fake_target_camids: Any,
    fake_origins: Any,
    real_feats: Any,
    real_camids: Any,
    *,
    eps: float = 0.0,
) -> dict[int, dict[str, Any]]:
    """FReID per target camera: {c: {fd, fd_baseline, num_fakes, num_real, num_baseline, note}}.

    ``fd`` = FD(fakes whose target camera is c, real images of camera c); ``fd_baseline`` =
    FD(the origin images of those fakes, untransferred, real images of camera c), over the
    fakes that have an origin (paired: same N as the fakes when all have one). Fakes with
    target -1 (not camera-transferred) are left out. A distance that cannot be computed (fewer
    than 2 images on a side) is None with a note; ``note`` also flags N <= D.
    """
    ff = np.asarray(fake_feats)
    rf = np.asarray(real_feats)
    tc = _int_array(fake_target_camids, "fake_target_camids", ff.shape[0])
    fo = _int_array(fake_origins, "fake_origins", ff.shape[0])
    rc = _int_array(real_camids, "real_camids", rf.shape[0])
    d = ff.shape[1] if ff.ndim == 2 else 0
    out: dict[int, dict[str, Any]] = {}
    for c in sorted(int(x) for x in np.unique(tc[tc >= 0])):
        sel = tc == c
        real_c = rf[rc == c]
        src = fo[sel & (fo >= 0)]
        notes = []
        entry: dict[str, Any] = {"num_fakes": int(sel.sum()), "num_real": int(len(real_c)),
                                 "num_baseline": int(len(src))}
        for key, feats in (("fd", ff[sel]), ("fd_baseline", rf[src])):
            if len(feats) < 2 or len(real_c) < 2:
                entry[key] = None
                notes.append(f"{key}: fewer than 2 images on a side")
            else:
                entry[key] = frechet_distance(feats, real_c, eps=eps)
        if min(entry["num_fakes"], entry["num_real"]) <= d:
            notes.append(f"N <= D={d}: covariance rank-deficient, FD biased upward; compare fd "
                         f"with fd_baseline only (same N)")
        entry["note"] = "; ".join(notes)
        out[c] = entry
    return out


# ------------------------------------------------------------------------------------ SSIM


def _ssim_stack(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """(N, H, W, C) float64 and whether the input was a single image."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        return arr[None, :, :, None].astype(np.float64), True
    if arr.ndim == 3:
        return arr[None].astype(np.float64), True
    if arr.ndim == 4:
        return arr.astype(np.float64), False
    raise DataError(f"{name}: expected (H, W), (H, W, C) or (N, H, W, C); found shape {arr.shape}.")


def _valid_gaussian(x: np.ndarray) -> np.ndarray:
    """Separable 11-tap Gaussian over axes -3 (H) and -2 (W), 'valid' part only."""
    taps = _SSIM_TAPS
    k = len(taps)
    h, w = x.shape[-3] - k + 1, x.shape[-2] - k + 1
    v = taps[0] * x[..., 0:h, :, :]
    for i in range(1, k):
        v += taps[i] * x[..., i:i + h, :, :]
    out = taps[0] * v[..., :, 0:w, :]
    for i in range(1, k):
        out += taps[i] * v[..., :, i:i + w, :]
    return out


def _ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """(N,) SSIM of float64 (N, H, W, C) pairs: mean over the valid map, then over channels."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ux, uy, uxx, uyy, uxy = _valid_gaussian(np.stack([a, b, a * a, b * b, a * b]))
    vx = uxx - ux * ux  # population (co)variances, weighted by the window
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2)).mean(axis=1)  # (N, C) -> (N,)


def ssim(a: Any, b: Any, *, data_range: float = 255.0) -> float | np.ndarray:
    """SSIM of Wang et al. 2004 as PG2 / Deformable GAN compute it (module docstring).

    ``a``, ``b``: one image (H, W) or (H, W, C), or a batch (N, H, W, C), same shapes, any
    numeric dtype (compared as float64 in units of ``data_range``). Returns a float for one
    image, an (N,) float64 array for a batch. H and W must be at least 11.
    """
    x, single = _ssim_stack(a, "ssim a")
    y, _ = _ssim_stack(b, "ssim b")
    if x.shape != y.shape:
        raise DataError(f"ssim: shapes differ: {np.shape(a)} vs {np.shape(b)}. Fix: resize one "
                        f"to the other first.")
    win = 2 * SSIM_RADIUS + 1
    if min(x.shape[1:3]) < win:
        raise DataError(f"ssim: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                        f"{win}x{win} window.")
    if not data_range > 0:
        raise ConfigError(f"ssim: data_range must be > 0; got {data_range!r}.")
    per = max(1, _SSIM_CHUNK_ELEMENTS // max(1, int(np.prod(x.shape[1:]))))
    out = np.concatenate([_ssim_batch(x[i:i + per], y[i:i + per], float(data_range))
                          for i in range(0, len(x), per)]) if len(x) else np.zeros(0)
    return float(out[0]) if single else out


def mask_ssim(a: Any, b: Any, mask: Any, *, data_range: float = 255.0) -> float | np.ndarray:
    """PG2's mask-SSIM: :func:`ssim` of ``a * mask`` and ``b * mask``.

    ``mask``: (H, W) or (N, H, W) (bool or float in [0, 1]; a trailing channel axis of 1 is
    allowed), broadcast over channels, e.g. :func:`reidaug.pose.representations.body_mask`.
    """
    x, single = _ssim_stack(a, "mask_ssim a")
    y, _ = _ssim_stack(b, "mask_ssim b")
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim in (3, 4) and m.shape[-1] == 1 and m.shape[-3:-1] == x.shape[1:3]:
        m = m[..., 0]  # (H, W, 1) or (N, H, W, 1)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != x.shape[1:3] or m.shape[0] not in (1, x.shape[0]):
        raise DataError(f"mask_ssim: mask of shape {np.shape(mask)} does not fit images of shape "
                        f"{np.shape(a)}; expected (H, W) or (N, H, W).")
    m = m[..., None]  # (N, H, W, 1)
    r = ssim(x * m, y * m, data_range=data_range)
    return float(r[0]) if single else r


# ---------------------------------------------------------------------- synthetic ground truth

_MARKET_CAM = re.compile(r"^\d+_c(?P<cam>\d+)s\d+_")


def synthetic_gt_path(dataset_root: str | os.PathLike[str], origin_path: str, target_camid: int) -> Path:
    """The ground-truth image of ``origin_path``'s person and pose seen by camera ``target_camid``.

    ``dataset_root``: a folder written by :func:`reidaug.data.synthetic.write_dataset` (the
    ``dataset/`` output of the demo-data stage); ``origin_path``: the image's path relative to
    it (as HDF5 ``path`` stores it, e.g. ``bounding_box_train/0001_c1s1_000001_00.jpg``);
    ``target_camid``: 0-based. Layout: ``gt_camstyle/<target + 1>/<file name>``; for the
    image's own camera the truth is the image itself. Raises DataError when the file is absent.
    """
    from reidaug.data.synthetic import GT_CAMSTYLE_DIR

    root = Path(dataset_root)
    name = PurePosixPath(str(origin_path)).name
    m = _MARKET_CAM.match(name)
    if m is None:
        raise DataError(
            f"synthetic_gt_path: {origin_path!r} is not a synthetic (Market-style "
            f"PPPP_cCsS_FFFFFF_BB.jpg) image name; ground truth exists only for the synthetic "
            f"dataset (reidaug demo-data)."
        )
    if int(target_camid) < 0:
        raise DataError(f"synthetic_gt_path: target camera {target_camid} of {origin_path!r} is "
                        f"negative; only camera-transferred fakes have a ground truth.")
    own = int(m["cam"]) - 1
    path = (root / str(origin_path) if int(target_camid) == own
            else root / GT_CAMSTYLE_DIR / str(int(target_camid) + 1) / name)
    if not path.is_file():
        raise DataError(
            f"synthetic ground truth not found: {path} (image {origin_path!r}, target camera "
            f"{int(target_camid)}). Expected {GT_CAMSTYLE_DIR}/<target+1>/<name> under a folder "
            f"made by `reidaug demo-data`. Fix: pass that folder as dataset_root, and check the "
            f"camera is below its num_cams."
        )
    return path


def load_synthetic_gt(
    dataset_root: str | os.PathLike[str], origin_paths: Sequence[str], target_camids: Sequence[int]
) -> list[np.ndarray]:
    """RGB uint8 ground-truth images, one per (origin path, target camera) pair."""
    from reidaug.data.images import decode_image

    return [decode_image(synthetic_gt_path(dataset_root, p, int(t))).rgb
            for p, t in zip(origin_paths, target_camids)]


# ------------------------------------------------------------------------------ evaluation


def _paired_ssim(
    fakes: Sequence[np.ndarray], refs: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None
) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and mask-SSIM (NaN where no mask) per pair; refs are resized to each fake's size."""
    import cv2

    n = len(fakes)
    plain = np.full(n, np.nan)
    masked = np.full(n, np.nan)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, f in enumerate(fakes):
        groups.setdefault(tuple(np.shape(f)), []).append(i)
    for shape, idx in groups.items():
        h, w = shape[:2]
        a = np.stack([fakes[i] for i in idx])
        b = np.stack([r if r.shape[:2] == (h, w) else cv2.resize(r, (w, h), interpolation=cv2.INTER_LINEAR)
                      for r in (np.asarray(refs[i]) for i in idx)])
        plain[idx] = ssim(a, b)
        if masks is not None:
            has = [k for k, i in enumerate(idx) if masks[i] is not None]
            if has:
                m = np.stack([_mask_to(masks[idx[k]], h, w) for k in has])
                masked[[idx[k] for k in has]] = mask_ssim(a[has], b[has], m)
    return plain, masked


def _mask_to(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    m = np.asarray(mask, dtype=np.float32)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    return m


def _summary(values: np.ndarray) -> dict[str, Any] | None:
    v = values[np.isfinite(values)]
    if not v.size:
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def evaluate_generated(
    fake_images: Sequence[np.ndarray] | np.ndarray,
    fake_pids: Any,
    fake_origins: Any,
    fake_source_camids: Any,
    fake_target_camids: Any,
    real_images: Sequence[np.ndarray] | np.ndarray,
    real_pids: Any,
    real_camids: Any,
    *,
    judge: OSNetJudge | str | os.PathLike[str],
    gt_images: Sequence[np.ndarray | None] | None = None,
    gt_masks: Sequence[np.ndarray | None] | None = None,
    fd_eps: float = 0.0,
) -> dict[str, Any]:
    """Every generation metric of the module docstring, as a JSON-ready dict.

    Fakes: images (RGB uint8, any sizes), original pids, ``fake_origins`` (index into the real
    arrays, -1 none), source and target cameras (0-based; target -1 = not camera-transferred).
    Reals: images, pids, cameras. ``judge``: an :class:`OSNetJudge` or the path of its ONNX
    model. ``gt_images``: optional ground truth per fake (None entries: none), giving SSIM of
    fake vs truth beside SSIM of the untransferred origin vs truth; references are resized to
    the fake's size. ``gt_masks``: optional body masks (H, W) per fake for mask-SSIM.
    """
    fakes = _image_list(fake_images, "fake_images")
    reals = _image_list(real_images, "real_images")
    nf, nr = len(fakes), len(reals)
    if nf == 0 or nr == 0:
        raise DataError(f"evaluate_generated: {nf} fake and {nr} real images; need at least one of each.")
    fp = _int_array(fake_pids, "fake_pids", nf)
    fo = _int_array(fake_origins, "fake_origins", nf)
    fs = _int_array(fake_source_camids, "fake_source_camids", nf)
    ft = _int_array(fake_target_camids, "fake_target_camids", nf)
    rp = _int_array(real_pids, "real_pids", nr)
    rc = _int_array(real_camids, "real_camids", nr)
    has = _check_origins(fo, fp, rp)
    wrong_cam = has & (rc[np.where(has, fo, 0)] != fs)
    if wrong_cam.any():
        i = int(np.flatnonzero(wrong_cam)[0])
        raise DataError(
            f"fake_source_camids: {int(wrong_cam.sum())} fakes name another source camera than "
            f"their origin's, e.g. fake {i}: source {int(fs[i])}, origin {int(fo[i])} is camera "
            f"{int(rc[fo[i]])}. Fix: pass the origin images' 0-based cameras."
        )
    if not isinstance(judge, OSNetJudge):
        judge = OSNetJudge(judge)
    real_f = judge.features(reals)  # (R, D)
    fake_f = judge.features(fakes)  # (F, D)
    ident = identity_consistency(fake_f, fp, fo, real_f, rp)
    pairs = {f"{s}->{t}": int(((fs == s) & (ft == t)).sum())
             for s, t in sorted({(int(s), int(t)) for s, t in zip(fs, ft)})}
    result: dict[str, Any] = {
        "judge": {"model": judge.path.name, "input_size": list(judge.input_size),
                  "dim": int(real_f.shape[1]), "providers": list(judge.providers)},
        "counts": {"num_fakes": nf, "num_real": nr, "num_real_ids": int(len(np.unique(rp[rp >= 0]))),
                   "num_fakes_with_origin": int(has.sum()), "camera_pairs": pairs},
        "identity": {"protocol": "fake queries vs all real images, own origin excluded; "
                                 "baseline: the origin images as queries",
                     "fakes": ident.fakes, "baseline": ident.baseline},
        "freid": {str(c): v for c, v in freid_per_camera(fake_f, ft, fo, real_f, rc, eps=fd_eps).items()},
        "ssim": None,
    }
    if gt_images is not None:
        if len(gt_images) != nf:
            raise DataError(f"gt_images: {len(gt_images)} entries for {nf} fakes; pass one per "
                            f"fake (None where there is none).")
        if gt_masks is not None and len(gt_masks) != nf:
            raise DataError(f"gt_masks: {len(gt_masks)} entries for {nf} fakes; pass one per fake.")
        idx = [i for i in range(nf) if gt_images[i] is not None]
        masks = None if gt_masks is None else [gt_masks[i] for i in idx]
        gts = [_check_rgb(gt_images[i], f"gt_images[{i}]") for i in idx]
        s_fake, m_fake = _paired_ssim([fakes[i] for i in idx], gts, masks)  # checked by the judge
        with_src = [k for k, i in enumerate(idx) if fo[i] >= 0]
        s_src, m_src = _paired_ssim(
            [reals[fo[idx[k]]] for k in with_src], [gts[k] for k in with_src],
            None if masks is None else [masks[k] for k in with_src])
        result["ssim"] = {
            "fakes": _summary(s_fake), "baseline": _summary(s_src),
            "mask_fakes": _summary(m_fake), "mask_baseline": _summary(m_src),
            "num_without_gt": nf - len(idx),
        }
    return result


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_report(result: dict[str, Any]) -> str:
    """A markdown table of :func:`evaluate_generated`'s result (fakes beside their baseline)."""
    ident = result["identity"]
    base = ident.get("baseline") or {}
    counts = result["counts"]
    lines = [
        f"Generation metrics: {counts['num_fakes']} fakes, {counts['num_real']} real images "
        f"({counts['num_real_ids']} ids); judge {result['judge']['model']}",
        "",
        "| metric | fakes | baseline | notes |",
        "|---|---|---|---|",
    ]
    for key, label in (("rank1", "identity rank-1"), ("rank5", "identity rank-5"), ("mAP", "identity mAP")):
        lines.append(f"| {label} | {_fmt(ident['fakes'].get(key))} | {_fmt(base.get(key))} | "
                     f"{'baseline: origin images as queries' if key == 'rank1' else ''} |")
    for cam, e in sorted(result["freid"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| FReID cam {cam} (lower is better) | {_fmt(e['fd'], 4)} | "
                     f"{_fmt(e['fd_baseline'], 4)} | {e['num_fakes']} fakes vs {e['num_real']} real; "
                     f"baseline: untransferred origins. {e['note']} |")
    s = result.get("ssim")
    if s:
        for key, label in (("", "SSIM vs ground truth"), ("mask_", "mask-SSIM vs ground truth")):
            f, b = s.get(f"{key}fakes"), s.get(f"{key}baseline")
            if f is None and b is None:
                continue
            lines.append(f"| {label} | {_fmt(f and f['mean'])} | {_fmt(b and b['mean'])} | "
                         f"n={f['n'] if f else 0}; baseline: origin vs ground truth |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- HDF5 reader


@dataclasses.dataclass(frozen=True)
class GeneratedData:
    """The arrays :func:`evaluate_generated` takes, read from one split of a reidaug HDF5 file."""

    fake_images: list[np.ndarray]
    fake_pids: np.ndarray  # (F,) int64, original pids
    fake_origins: np.ndarray  # (F,) int64, index into the real arrays, -1 none
    fake_source_camids: np.ndarray  # (F,) int64, the origin's camera, -1 without origin
    fake_target_camids: np.ndarray  # (F,) int64, -1 none
    real_images: list[np.ndarray]
    real_pids: np.ndarray  # (R,) int64
    real_camids: np.ndarray  # (R,) int64
    fake_origin_paths: list[str]  # "" without origin
    gt_images: list[np.ndarray | None] | None = None
    gt_masks: list[np.ndarray | None] | None = None

    def arrays(self) -> dict[str, Any]:
        """Keyword arguments for :func:`evaluate_generated` (add ``judge=``)."""
        keys = ("fake_images", "fake_pids", "fake_origins", "fake_source_camids",
                "fake_target_camids", "real_images", "real_pids", "real_camids", "gt_images", "gt_masks")
        return {k: getattr(self, k) for k in keys}


def read_generated_h5(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    sources: Sequence[str] | None = None,
    synthetic_root: str | os.PathLike[str] | None = None,
) -> GeneratedData:
    """Fakes and real images of ``split`` of an exported reidaug HDF5 file.

    Real rows have source "real" (origin -1); fakes are the other rows, or only those whose
    source name is in ``sources`` (e.g. ``("camstyle",)``). HDF5 origins (row numbers in the
    split) are remapped to indices into the real arrays. ``synthetic_root``: the synthetic
    dataset folder the file was made from; then each camera-transferred fake with an origin
    gets its ground truth (:func:`synthetic_gt_path`) and, where the origin has keypoints, PG2's
    body mask of the origin's pose (the truth shares it) for mask-SSIM.
    """
    from reidaug.data.h5format import open_h5

    with open_h5(path) as f:
        meta = f.meta(split)
        fake = meta.is_fake
        real = ~fake
        if sources is not None:
            known = set(meta.source_names.values())
            unknown = sorted(set(sources) - known)
            if unknown:
                raise ConfigError(f"read_generated_h5: unknown sources {unknown} for {path}; the "
                                  f"file's source names are {sorted(known)}.")
            fake &= np.isin(meta.source, [c for c, n in meta.source_names.items() if n in set(sources)])
        real_rows = np.flatnonzero(real)
        fake_rows = np.flatnonzero(fake)
        if not len(fake_rows):
            raise DataError(f"{path} split {split!r} has no generated images"
                            f"{' of sources ' + str(list(sources)) if sources else ''}; nothing to evaluate.")
        pos = np.full(len(meta), -1, np.int64)
        pos[real_rows] = np.arange(len(real_rows))
        origin_rows = meta.origin[fake_rows].astype(np.int64)
        origins = np.where(origin_rows >= 0, pos[np.clip(origin_rows, 0, None)], -1)
        if ((origin_rows >= 0) & (origins < 0)).any():
            raise DataError(f"{path} split {split!r}: a fake's origin is not a real row; the file "
                            f"breaks its invariants. Fix: run `reidaug inspect --verify` and re-export.")
        real_cam = meta.camid[real_rows].astype(np.int64)
        origin_cam = np.where(origins >= 0, real_cam[np.clip(origins, 0, None)], -1)
        origin_paths = [meta.path[r] if r >= 0 else "" for r in origin_rows]
        data = dict(
            fake_images=[f.read_image(split, int(r)) for r in fake_rows],
            fake_pids=meta.pid[fake_rows].astype(np.int64),
            fake_origins=origins,
            fake_source_camids=origin_cam,
            fake_target_camids=meta.gen_target_camid[fake_rows].astype(np.int64),
            real_images=[f.read_image(split, int(r)) for r in real_rows],
            real_pids=meta.pid[real_rows].astype(np.int64),
            real_camids=real_cam,
            fake_origin_paths=origin_paths,
        )
        if synthetic_root is not None:
            data["gt_images"], data["gt_masks"] = _synthetic_truth(
                synthetic_root, origin_rows, data["fake_target_camids"], origin_paths, meta, data)
    LOG.info("read %d fakes and %d real images from %s (%s)", len(fake_rows), len(real_rows), path, split)
    return GeneratedData(**data)


def _synthetic_truth(
    root: str | os.PathLike[str], origin_rows: np.ndarray, targets: np.ndarray,
    origin_paths: list[str], meta: Any, data: dict[str, Any],
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    from reidaug.pose.representations import body_mask

    todo = [k for k, (row, t) in enumerate(zip(origin_rows, targets)) if row >= 0 and t >= 0]
    gts: list[np.ndarray | None] = [None] * len(origin_rows)
    for k, gt in zip(todo, load_synthetic_gt(root, [origin_paths[k] for k in todo], targets[todo])):
        gts[k] = gt
    masks: list[np.ndarray | None] = []
    for k, row in enumerate(origin_rows):
        kp = meta.keypoints[row] if gts[k] is not None and meta.keypoints is not None else None
        if kp is None or not np.isfinite(kp).any():  # an all-NaN row = no keypoints
            masks.append(None)
            continue
        stored_hw = data["real_images"][data["fake_origins"][k]].shape[:2]  # keypoints' frame
        masks.append(np.asarray(body_mask(kp, stored_hw), dtype=np.float32))
    return gts, masks

