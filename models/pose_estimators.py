"""COCO-17 pose estimators for re-ID crops: MoveNet, MediaPipe BlazePose and mmpose top-down.

Each backend turns a list of RGB uint8 crops ``(H_i, W_i, 3)`` into float32 ``(B, 17, 3)`` =
``(x, y, score)`` in COCO-17 order (reidaug.pose.skeleton), in each crop's own continuous pixel
frame: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so every returned point satisfies
``0 <= x <= W_i`` and ``0 <= y <= H_i``. A keypoint a model places outside its crop (in the
letterbox padding, or beyond the border) is clipped to the border and gets score 0: it is not
visible in the crop. A crop where no person is found gives an all-zero ``(17, 3)`` row.

- ``movenet``: MoveNet SinglePose (Google, 2021; the TFLite models of TF Hub / Kaggle) run with
  LiteRT (PyPI ``ai-edge-litert``). Crops are letterboxed into the square input (aspect kept,
  centred, zero padding) and keypoints mapped back exactly (:class:`Letterbox`). The models are
  batch-1: resizing the input to B allocates and runs, but the output stays ``(1, 1, 17, 3)``
  (the post-processing is fixed to one image), so ``predict`` loops over the batch.
- ``mediapipe``: BlazePose GHUM full (Bazarevsky et al., "BlazePose: On-device Real-time Body
  Pose tracking", CVPR-W 2020), bundled in ``mediapipe==0.10.21``; its 33 landmarks mapped to
  COCO-17 (:data:`MEDIAPIPE_TO_COCO17`), landmark visibility as the score. Needs no model file.
- ``mmpose``: any mmpose 1.x top-down model (RTMPose, Jiang et al. 2023; HRNet, Sun et al.,
  CVPR 2019) from a config and a local checkpoint, the whole crop as the person box. ``predict``
  runs mmpose's own test pipeline per crop and ``model.test_step`` once per mini-batch of
  crops (on the CPU: 8 crops per forward, channels-last input, BatchNorm folded into the
  convolutions of a copy of the model; on CUDA: the whole batch, the model as it is);
  :func:`mmpose_predict_per_image` is the ``inference_topdown``-per-crop reference.

Backends import their packages lazily; a missing package or model file raises
:class:`~reidaug.errors.DependencyError` naming the install step or the file and where to get it.
Install all three with ``scripts/install_pose.sh .venv/bin/python`` (pins: requirements/pose.txt).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from reidaug.errors import ConfigError, DataError, DependencyError, unknown_name
from reidaug.pose.skeleton import NUM_KEYPOINTS

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "Fix: run `scripts/install_pose.sh .venv/bin/python` (pins and flags: requirements/pose.txt)"
)

#: BlazePose's 33 landmarks → COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
#: ankles): BlazePose indices in COCO order.
MEDIAPIPE_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26,
                                        27, 28)

#: Short names for configs shipped inside the mmpose package (``mmpose/.mim/configs``).
MMPOSE_CONFIG_ALIASES: dict[str, str] = {
    "rtmpose-t": "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py",
    "rtmpose-s": "body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py",
    "rtmpose-m": "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py",
    "hrnet-w32": "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
}
MMPOSE_ZOO_PAGE = "https://mmpose.readthedocs.io/en/latest/model_zoo/body_2d_keypoint.html"
#: Crops per forward on the CPU (:class:`MMPoseEstimator` ``forward_batch``): the fastest of
#: 4/8/16/32 for rtmpose-t, measured side by side on a loaded 2-core VM (1 thread; 8 >= 16 in
#: 3 of 4 runs, 4 and 32 slower; hrnet-w32: 8 = 16).
MMPOSE_CPU_FORWARD_BATCH = 8


@runtime_checkable
class PoseEstimator(Protocol):
    """What the extract-pose stage needs from a backend."""

    name: str

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """B RGB uint8 crops ``(H_i, W_i, 3)`` → float32 ``(B, 17, 3)`` = (x, y, score)."""
        ...


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def check_images(images: Sequence[np.ndarray], where: str = "pose estimator input") -> None:
    """Raise DataError unless every item is an RGB uint8 ``(H, W, 3)`` array with H, W > 0."""
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 \
                or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            found = (f"{type(img).__name__} {getattr(img, 'dtype', '')} "
                     f"{tuple(getattr(img, 'shape', ()))}")
            raise DataError(
                f"{where}: image {i} must be an RGB uint8 array of shape (H, W, 3), found "
                f"{found}. Fix: decode with reidaug.data.images (RGB uint8), not cv2.imread (BGR)."
            )


def to_crop_frame(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clip ``(..., 17, 3)`` points into ``[0, W] x [0, H]``; points that were outside get score 0.

    Returns a new float32 array; a point exactly on the border counts as inside.
    """
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    x, y = kp[..., 0], kp[..., 1]
    outside = (x < 0) | (x > width) | (y < 0) | (y > height) | ~np.isfinite(x) | ~np.isfinite(y)
    kp[..., 0] = np.clip(np.nan_to_num(x), 0, width)
    kp[..., 1] = np.clip(np.nan_to_num(y), 0, height)
    kp[..., 2] = np.where(outside, 0.0, kp[..., 2])
    return kp


@dataclass(frozen=True)
class Letterbox:
    """Fit an ``(H, W)`` crop into an ``(out_h, out_w)`` canvas keeping aspect, centred, padded.

    Uses the exact per-axis scales of the integer resized size (``new_w / W``, ``new_h / H``),
    so :meth:`to_crop` inverts :meth:`to_input` exactly, and both match what ``cv2.resize``
    does to the pixels (continuous frame: the pixel edge 0 maps to 0, W to new_w).
    """

    height: int
    width: int
    out_h: int
    out_w: int
    new_h: int
    new_w: int
    pad_y: int
    pad_x: int

    @classmethod
    def fit(cls, height: int, width: int, out_h: int, out_w: int) -> "Letterbox":
        scale = min(out_h / height, out_w / width)
        new_h = min(out_h, max(1, int(round(height * scale))))
        new_w = min(out_w, max(1, int(round(width * scale))))
        return cls(height, width, out_h, out_w, new_h, new_w,
                   (out_h - new_h) // 2, (out_w - new_w) // 2)

    @property
    def scale_x(self) -> float:
        return self.new_w / self.width

    @property
    def scale_y(self) -> float:
        return self.new_h / self.height

    def apply(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The letterboxed ``(out_h, out_w, 3)`` image (zero padding); fills ``out`` if given."""
        if out is None:
            out = np.zeros((self.out_h, self.out_w, 3), dtype=image.dtype)
        else:
            out[...] = 0
        # INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging.
        interp = cv2.INTER_AREA if self.new_h < self.height else cv2.INTER_LINEAR
        out[self.pad_y:self.pad_y + self.new_h, self.pad_x:self.pad_x + self.new_w] = \
            cv2.resize(image, (self.new_w, self.new_h), interpolation=interp)
        return out

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Crop-frame ``(..., 2)`` points → letterboxed-canvas points."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([xy[..., 0] * self.scale_x + self.pad_x,
                         xy[..., 1] * self.scale_y + self.pad_y], axis=-1)

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Letterboxed-canvas ``(..., 2)`` points → crop-frame points (inverse of to_input)."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] - self.pad_x) / self.scale_x,
                         (xy[..., 1] - self.pad_y) / self.scale_y], axis=-1)


@contextlib.contextmanager
def _quiet_import_warnings() -> Iterator[None]:
    # mmengine warns about pkg_resources, mediapipe/protobuf about deprecations: not our news.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class _ToLogging(logging.Handler):
    """Hands an mmengine record to the standard ``mmengine`` logger (and so to the application's handlers)."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("mmengine")
        if target.isEnabledFor(record.levelno):  # handle() skips the level check: mmengine's DEBUG stays out
            target.handle(record)


def route_mmengine_logs() -> None:
    """mmengine's ``MMLogger`` prints its INFO lines (checkpoint loading, scope notes) to stdout through a
    handler of its own, outside the ``logging`` tree: route them into it instead, where the reidaug CLI
    sends third-party INFO to the run log only (``-v`` shows it)."""
    from mmengine.logging import MMLogger

    lg = MMLogger.get_current_instance()
    for h in list(lg.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr):
            lg.removeHandler(h)
    if not any(isinstance(h, _ToLogging) for h in lg.handlers):
        lg.addHandler(_ToLogging())


def _missing_package(backend: str, package: str, err: ImportError) -> DependencyError:
    return DependencyError(
        f'pose backend "{backend}" needs the package {package}, which does not import '
        f"({type(err).__name__}: {err}). {INSTALL_HINT}."
    )


def _cpu_only(backend: str, device: str) -> None:
    if device != "cpu":
        logger.warning('pose backend "%s" runs on the CPU only; device=%r is ignored',
                       backend, device)


# --------------------------------------------------------------------------------------------
# MoveNet (TFLite via ai-edge-litert)
# --------------------------------------------------------------------------------------------
class MoveNetEstimator:
    """MoveNet SinglePose (Lightning 192 or Thunder 256) from a local ``.tflite`` file."""

    name = "movenet"

    def __init__(self, model_path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise DependencyError(
                f'pose backend "movenet": model file {path} does not exist. Fix: pass the path '
                "of a MoveNet SinglePose .tflite (the project's CI has "
                "../shared/models/movenet_singlepose_lightning_int8.tflite; elsewhere download "
                '"movenet/singlepose/lightning/tflite/int8" from Kaggle Models / TF Hub, '
                "Apache-2.0)."
            )
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise _missing_package("movenet", "ai-edge-litert", err) from err
        try:
            self._interp = Interpreter(model_path=str(path),
                                       num_threads=num_threads or os.cpu_count() or 1)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise DependencyError(
                f'pose backend "movenet": {path} is not a loadable TFLite model ({err}). '
                "Fix: pass a MoveNet SinglePose .tflite file."
            ) from err
        inp = self._interp.get_input_details()[0]
        outp = self._interp.get_output_details()[0]
        shape, oshape = tuple(inp["shape"]), tuple(outp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or oshape != (1, 1, NUM_KEYPOINTS, 3):
            raise DependencyError(
                f'pose backend "movenet": {path} has input {shape} and output {oshape}; '
                "expected input (1, S, S, 3) and output (1, 1, 17, 3) (MoveNet SinglePose). "
                "Fix: pass a SinglePose model (MultiPose is not supported)."
            )
        self.model_path = path
        self.input_size = (int(shape[1]), int(shape[2]))  # (h, w)
        self._in_index, self._out_index = inp["index"], outp["index"]
        self._in_dtype = inp["dtype"]
        self._canvas = np.zeros((1, *self.input_size, 3), dtype=np.uint8)  # (1, S, S, 3)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        check_images(images, "movenet")
        out = np.zeros((len(images), NUM_KEYPOINTS, 3), dtype=np.float32)  # (B, 17, 3)
        in_h, in_w = self.input_size
        for b, img in enumerate(images):
            box = Letterbox.fit(img.shape[0], img.shape[1], in_h, in_w)
            box.apply(img, out=self._canvas[0])
            self._interp.set_tensor(self._in_index, self._canvas.astype(self._in_dtype, copy=False))
            self._interp.invoke()
            yxs = self._interp.get_tensor(self._out_index)[0, 0]  # (17, 3): y, x in 0..1, score
            xy = box.to_crop(np.stack([yxs[:, 1] * in_w, yxs[:, 0] * in_h], axis=-1))
            kp = np.concatenate([xy, yxs[:, 2:3]], axis=-1)
            out[b] = to_crop_frame(kp, img.shape[0], img.shape[1])
        return out


# --------------------------------------------------------------------------------------------
# MediaPipe BlazePose
# --------------------------------------------------------------------------------------------
class MediaPipeEstimator:
    """BlazePose full (``model_complexity=1``) bundled in mediapipe 0.10.21, single-image mode.

    ``upscale_height``: crops shorter than this are enlarged (aspect kept) before BlazePose sees
    them; its landmarks are normalised to the image, so they map back to the crop exactly.
    """

    name = "mediapipe"

    def __init__(self, upscale_height: int | None = None, model_complexity: int = 1,
                 min_detection_confidence: float = 0.5) -> None:
        if upscale_height is not None and upscale_height < 1:
            raise ConfigError(f'pose backend "mediapipe": upscale_height must be >= 1 or None, '
                              f"found {upscale_height}.")
        try:
            with _quiet_import_warnings():
                from mediapipe.python.solutions import pose as mp_pose
        except ImportError as err:
            raise _missing_package("mediapipe", "mediapipe==0.10.21 (installed --no-deps)",
                                   err) from err
        try:
            self._pose = mp_pose.Pose(static_image_mode=True, model_complexity=model_complexity,
                                      min_detection_confidence=min_detection_confidence)
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            # mediapipe >= 0.10.22 no longer bundles the pose models.
            raise DependencyError(
                f'pose backend "mediapipe": BlazePose (model_complexity={model_complexity}) '
                f"could not start ({err}). Fix: mediapipe==0.10.21 exactly, which bundles "
                f"pose_landmark_full.tflite; {INSTALL_HINT}."
            ) from err
        self.upscale_height = upscale_height
        self._index = np.asarray(MEDIAPIPE_TO_COCO17)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        check_images(images, "mediapipe")
        out = np.zeros((len(images), NUM_KEYPOINTS, 3), dtype=np.float32)  # (B, 17, 3)
        for b, img in enumerate(images):
            h, w = img.shape[:2]
            feed = img
            if self.upscale_height is not None and h < self.upscale_height:
                s = self.upscale_height / h
                feed = cv2.resize(img, (max(1, int(round(w * s))), self.upscale_height),
                                  interpolation=cv2.INTER_CUBIC)
            result = self._pose.process(np.ascontiguousarray(feed))
            if result.pose_landmarks is None:
                continue  # no person: the row stays all zero
            lm = result.pose_landmarks.landmark
            arr = np.array([(lm[i].x * w, lm[i].y * h, lm[i].visibility) for i in self._index],
                           dtype=np.float32)  # (17, 3), normalised coords → this crop's pixels
            out[b] = to_crop_frame(arr, h, w)
        return out

    def close(self) -> None:
        """Free the MediaPipe graph (it also goes with the object)."""
        self._pose.close()


# --------------------------------------------------------------------------------------------
# mmpose top-down
# --------------------------------------------------------------------------------------------
def _mmpose_config_dir() -> Path:
    import mmpose

    return Path(mmpose.__file__).parent / ".mim" / "configs"


def resolve_mmpose_config(config: str) -> Path:
    """A config path, an alias (:data:`MMPOSE_CONFIG_ALIASES`), or the file name (with or
    without ``.py``) of a config shipped in mmpose's package → the config file's path."""
    path = Path(config)
    if path.is_file():
        return path
    root = _mmpose_config_dir()
    if config in MMPOSE_CONFIG_ALIASES:
        return root / MMPOSE_CONFIG_ALIASES[config]
    stem = config[:-3] if config.endswith(".py") else config
    matches = sorted(root.rglob(f"{Path(stem).name}.py")) if root.is_dir() else []
    if matches:
        return matches[0]
    if os.sep in config or config.endswith(".py"):
        raise ConfigError(
            f'pose backend "mmpose": config {config} is neither a file nor a config shipped in '
            f"mmpose ({root}). Fix: pass an existing mmpose config path, a config file name "
            f"from that folder, or one of: {', '.join(sorted(MMPOSE_CONFIG_ALIASES))}."
        )
    raise unknown_name("mmpose config", config, MMPOSE_CONFIG_ALIASES)


def mmpose_checkpoint_url(config_path: Path) -> str | None:
    """The checkpoint URL mmpose's model index (``*.yml`` beside the config) lists, if any."""
    import yaml

    for index in sorted(config_path.parent.glob("*.yml")):
        try:
            doc = yaml.safe_load(index.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in doc.get("Models", []) if isinstance(doc, dict) else []:
            if isinstance(entry, dict) and str(entry.get("Config", "")).endswith(config_path.name):
                return entry.get("Weights")
    return None


class MMPoseEstimator:
    """An mmpose 1.x top-down model; the whole crop is the person box; B crops in few forwards.

    ``checkpoint=None`` is only accepted with ``random_init=True`` (plumbing tests: shapes,
    batching, coordinate frames); ``seed`` then fixes the random weights.

    How a batch runs (the keypoints do not depend on it beyond float rounding):

    - ``forward_batch``: at most this many crops per forward (one mmpose ``predict`` each, so
      with flip test two backbone passes of this many rows); ``None``: the whole batch at once.
      The default ``-1`` means :data:`MMPOSE_CPU_FORWARD_BATCH` (8) on the CPU and the whole
      batch on CUDA. On the CPU a large batch is slower per crop than a mid-sized one: the
      activations of 32 crops at 256x192 (19-38 MB a tensor in rtmpose-t's first stages) no
      longer fit the caches, and such blocks go back to the OS and are page-faulted afresh on
      every call (glibc malloc's mmap/trim thresholds: ~4,000 minor faults and ~8 ms of system
      time per crop at 32 rows NCHW; none at 8 or 16 rows).
    - ``channels_last``: the input tensor (and the weights of the BN-folded copy) in
      channels-last (NHWC) memory format, which oneDNN's CPU convolutions run ~20-25% faster than
      NCHW. ``None``: on for the CPU, off for CUDA.
    - ``fuse_bn``: the batched path runs :attr:`batch_model`, a copy of the model with each
      BatchNorm folded into the convolution before it (mmcv's ``fuse_conv_bn``; eval-mode BN is
      an affine map per channel, so this changes nothing but float rounding). Channels-last
      BatchNorm is slow on the CPU (~15% of the forward), so this is worth ~10-15%. The copy is
      checked against the model once, on one crop (one more forward at start-up); if they
      differ (a model whose BN does not follow its conv) it is dropped with a warning and the
      model itself runs. Costs one more copy of the weights (~13 MB for rtmpose-t, ~115 MB for
      hrnet-w32). ``None``: on for the CPU, off for CUDA.

    :attr:`model` itself is never changed, so :func:`mmpose_predict_per_image` runs mmpose's
    model exactly as ``inference_topdown`` would.
    """

    name = "mmpose"

    def __init__(self, config: str, checkpoint: str | os.PathLike[str] | None = None,
                 device: str = "cpu", random_init: bool = False, seed: int = 0,
                 forward_batch: int | None = -1, channels_last: bool | None = None,
                 fuse_bn: bool | None = None) -> None:
        on_cpu = not str(device).startswith("cuda")
        if forward_batch == -1:
            forward_batch = MMPOSE_CPU_FORWARD_BATCH if on_cpu else None
        if forward_batch is not None and forward_batch < 1:
            raise ConfigError(f'pose backend "mmpose": forward_batch must be >= 1, None (whole batch) or -1 '
                              f"(default), found {forward_batch}.")
        try:
            from reidaug.models import mmcv_shim

            mmcv_shim.install()
            with _quiet_import_warnings():
                import torch
                from mmengine.dataset import Compose, pseudo_collate
                from mmengine.registry import init_default_scope
                from mmpose.apis import init_model
        except ImportError as err:
            raise _missing_package("mmpose", "mmpose==1.3.2 (with mmcv-lite, mmdet, mmengine)",
                                   err) from err
        config_path = resolve_mmpose_config(config)
        if (checkpoint is None and not random_init) or (checkpoint is not None and not Path(checkpoint).is_file()):
            url = mmpose_checkpoint_url(config_path) or "see " + MMPOSE_ZOO_PAGE
            missing = (f"no checkpoint given for config {config_path.name}. Fix: download its weights ({url}) on a "
                       "machine with internet access and pass the local path as checkpoint; random_init=True "
                       "(random weights) is for plumbing tests only." if checkpoint is None else
                       f"checkpoint {checkpoint} does not exist. Fix: download the weights for "
                       f"{config_path.name} ({url}) and pass that local path.")
            raise DependencyError(f'pose backend "mmpose": {missing}')
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f'pose backend "mmpose": device={device!r} but CUDA is not '
                              "available here. Fix: device=cpu.")
        route_mmengine_logs()
        with _quiet_import_warnings(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random_init weights depend on the seed only
            self.model = init_model(str(config_path),
                                    None if checkpoint is None else str(checkpoint), device=device)
        self.model.eval()
        self.config_path = config_path
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.device = device
        self._torch = torch
        self._scope = self.model.cfg.get("default_scope", "mmpose")
        self._init_default_scope = init_default_scope
        self._pseudo_collate = pseudo_collate
        init_default_scope(self._scope)
        self._pipeline: Callable[[dict], dict] = Compose(
            self.model.cfg.test_dataloader.dataset.pipeline)
        self.forward_batch: int | None = forward_batch
        self.channels_last: bool = on_cpu if channels_last is None else bool(channels_last)
        #: the model the batched path runs: :attr:`model`, or its BN-folded copy (``fuse_bn``)
        self.batch_model = self.model
        if on_cpu if fuse_bn is None else fuse_bn:
            self.batch_model = self._bn_folded_copy()

    def _bn_folded_copy(self) -> Any:
        """A copy of :attr:`model` with BatchNorm folded into the convs, if it gives the model's
        outputs on a test crop (else :attr:`model`, with a warning)."""
        import copy

        from mmcv.cnn import fuse_conv_bn

        torch = self._torch
        folded = fuse_conv_bn(copy.deepcopy(self.model)).eval()
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        folded.to(memory_format=memory_format)  # 4-d weights only
        crop = np.random.default_rng(0).integers(0, 256, size=(160, 60, 3), dtype=np.uint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            inputs = self.model.data_preprocessor(self._pseudo_collate([self._sample(crop)]), False)["inputs"]
            ref = _flat_tensors(self.model(inputs, None, mode="tensor"))
            got = _flat_tensors(folded(inputs.contiguous(memory_format=memory_format), None, mode="tensor"))
        scale = max(1.0, max(float(r.abs().max()) for r in ref))
        diff = max((float((r - g).abs().max()) for r, g in zip(ref, got)), default=0.0)
        if len(ref) != len(got) or not diff <= 1e-4 * scale:
            logger.warning('pose backend "mmpose": folding BatchNorm into the convolutions of %s changes its '
                           "outputs (max abs diff %.3g of %.3g); running the model as it is", self.config_path.name,
                           diff, scale)
            return self.model
        return folded

    def _sample(self, img: np.ndarray) -> dict:
        """mmpose's test pipeline for one crop, its whole frame as the box (as in
        ``inference_topdown``)."""
        h, w = img.shape[:2]
        info: dict[str, Any] = {
            "img": np.ascontiguousarray(img[..., ::-1]),  # mmpose works in BGR (LoadImage)
            "bbox": np.array([[0, 0, w, h]], dtype=np.float32),  # (1, 4) xyxy
            "bbox_score": np.ones(1, dtype=np.float32),
        }
        info.update(self.model.dataset_meta)
        return self._pipeline(info)

    def predict_raw(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, 17, 3)`` as the model decodes it, before :func:`to_crop_frame` (not clipped)."""
        check_images(images, "mmpose")
        if not images:
            return np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
        self._init_default_scope(self._scope)
        samples = [self._sample(img) for img in images]
        step = self.forward_batch or len(samples)
        rows = []
        with self._torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mmdet's torch.cuda.amp notices
            for s in range(0, len(samples), step):
                # = batch_model.test_step(mini-batch), the input's memory format set in between
                data = self.batch_model.data_preprocessor(self._pseudo_collate(samples[s:s + step]), False)
                if self.channels_last:
                    data["inputs"] = data["inputs"].contiguous(memory_format=self._torch.channels_last)
                rows.append(_stack_results(self.batch_model(**data, mode="predict")))
        return np.concatenate(rows)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raw = self.predict_raw(images)
        return np.stack([to_crop_frame(k, im.shape[0], im.shape[1])
                         for k, im in zip(raw, images)]) if len(raw) else raw


def _flat_tensors(out: Any) -> list[Any]:
    """The tensors of a model's ``mode="tensor"`` output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat_tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flat_tensors(v)]
    return [out]


def _stack_results(results: Sequence[Any]) -> np.ndarray:
    """PoseDataSamples (one instance each) → float32 ``(B, 17, 3)``."""
    rows = []
    for sample in results:
        inst = sample.pred_instances
        xy = np.asarray(inst.keypoints, dtype=np.float32)[0]  # (17, 2)
        score = np.asarray(inst.keypoint_scores, dtype=np.float32)[0]  # (17,)
        rows.append(np.concatenate([xy, score[:, None]], axis=-1))
    return np.stack(rows).astype(np.float32)


def mmpose_predict_per_image(estimator: MMPoseEstimator, images: Sequence[np.ndarray],
                             raw: bool = False) -> np.ndarray:
    """Reference path: mmpose's ``inference_topdown`` once per crop (B forwards), same output
    convention as :meth:`MMPoseEstimator.predict` (``raw=True``: before clipping)."""
    from mmpose.apis import inference_topdown

    check_images(images, "mmpose")
    rows = []
    for img in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            bgr = np.ascontiguousarray(img[..., ::-1])  # mmpose works in BGR
            res = inference_topdown(estimator.model, bgr)
        kp = _stack_results(res)[0]
        rows.append(kp if raw else to_crop_frame(kp, img.shape[0], img.shape[1]))
    return np.stack(rows) if rows else np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
ESTIMATORS: dict[str, type] = {
    "movenet": MoveNetEstimator,
    "mediapipe": MediaPipeEstimator,
    "mmpose": MMPoseEstimator,
}

# Which build_estimator options each backend takes (anything else set is a ConfigError).
_OPTIONS: dict[str, frozenset[str]] = {
    "movenet": frozenset({"model_path", "num_threads"}),
    "mediapipe": frozenset({"upscale_height"}),
    "mmpose": frozenset({"config", "checkpoint", "random_init", "seed"}),
}


def build_estimator(name: str, *, model_path: str | os.PathLike[str] | None = None,
                    config: str | None = None, checkpoint: str | os.PathLike[str] | None = None,
                    device: str = "cpu", random_init: bool = False, seed: int = 0,
                    upscale_height: int | None = None,
                    num_threads: int | None = None) -> PoseEstimator:
    """Build the backend ``name`` (a key of :data:`ESTIMATORS`).

    movenet: ``model_path`` (required), ``num_threads``. mediapipe: ``upscale_height``.
    mmpose: ``config`` (required), ``checkpoint`` or ``random_init=True``, ``seed``, ``device``.
    movenet and mediapipe run on the CPU whatever ``device`` says.
    """
    if name not in ESTIMATORS:
        raise unknown_name("pose backend", name, ESTIMATORS)
    given = {"model_path": model_path, "config": config, "checkpoint": checkpoint,
             "random_init": random_init or None, "seed": seed or None,
             "upscale_height": upscale_height, "num_threads": num_threads}
    extra = sorted(k for k, v in given.items() if v is not None and k not in _OPTIONS[name])
    if extra:
        raise ConfigError(
            f'pose backend "{name}" does not take {", ".join(extra)}; it takes '
            f"{', '.join(sorted(_OPTIONS[name]))}. Fix: remove {', '.join(extra)}."
        )
    if name == "movenet":
        if model_path is None:
            raise ConfigError('pose backend "movenet" needs model_path (a MoveNet SinglePose '
                              ".tflite file, e.g. ../shared/models/"
                              "movenet_singlepose_lightning_int8.tflite).")
        _cpu_only(name, device)
        return MoveNetEstimator(model_path, num_threads=num_threads)
    if name == "mediapipe":
        _cpu_only(name, device)
        return MediaPipeEstimator(upscale_height=upscale_height)
    if config is None:
        raise ConfigError('pose backend "mmpose" needs config: an mmpose config path or one of '
                          f"{', '.join(sorted(MMPOSE_CONFIG_ALIASES))}.")
    return MMPoseEstimator(config, checkpoint, device=device, random_init=random_init, seed=seed)
