"""The reidaug HDF5 dataset format, version 1: one writer, one reader, one verifier.

This file is the contract between the pipeline (the ``export-hdf5`` stage writes it) and the
trainer (it reads it). Its full specification is ``docs/hdf5-format.md``; in short:

- Root attributes name the format (``format="reidaug-hdf5"``, ``format_version=1``), who wrote
  it, the pipeline and stage cache keys, ``label_smoothing="precomputed"``, ``num_classes`` and
  how images are stored.
- One group per split (``train``, ``query``, ``gallery``) with one dataset per field, all of
  length N: ``images``, ``pid``, ``label``, ``camid``, ``source``, ``origin``, the generator
  fields, ``native_hw``, ``path``, optional ``keypoints``; ``train`` also holds the soft
  targets (``label_scheme`` plus sparse top-k or dense float16 probabilities).
- Every dataset carries the sha256 of its contents (attribute ``sha256``), checked by
  :func:`verify`.

The record follows torchreid's data contract ``(img_path, pid, camid)`` with 0-based cameras
(Zhou et al., "Torchreid", 2019). The label schemes are one-hot, label-smoothing regularisation
(LSR, Szegedy et al. 2016, used for CamStyle fakes by Zhong et al., CVPR 2018), LSRO (uniform
over all classes for unlabeled GAN images, Zheng et al., ICCV 2017) and teacher soft labels
(knowledge distillation, Hinton et al. 2015). The targets are stored *already smoothed*: the
trainer turns a stored target into a probability vector with :func:`densify_target` and must
never smooth again.

Writing is atomic (the luigi rule): :class:`H5Writer` writes ``.<name>.tmp-<pid>-<rand>`` in
the target folder and ``os.replace``s it onto the final name only after a successful close, so a
file that exists under its final name is complete. There is exactly one writer per file (dask's
rule for HDF5); files are never appended to in place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from reidaug import __version__
from reidaug.errors import ConfigError, DataError, DependencyError, unknown_name

log = logging.getLogger(__name__)

FORMAT_NAME = "reidaug-hdf5"
FORMAT_VERSION = 1
#: Version of the per-dataset checksum recipe (see :func:`dataset_sha256`).
CHECKSUM_ALGORITHM = "sha256-elements-v1"

SPLITS: tuple[str, ...] = ("train", "query", "gallery")
#: Split that holds training labels and soft targets.
TRAIN_SPLIT = "train"

#: ``source`` enum: where an image came from. The mapping is stored in the file's enum dtype;
#: readers must map codes through the file's dtype (``h5py.check_enum_dtype``), not this dict.
SOURCES: dict[str, int] = {
    "real": 0,  # an image of the original dataset
    "camstyle": 1,  # camera-style transfer (CycleGAN per camera pair; Zhong et al., CVPR 2018)
    "pose": 2,  # pose-guided generation (e.g. PN-GAN, Qian et al., ECCV 2018)
    "dcgan": 3,  # unconditional GAN sample with no identity (Zheng et al., ICCV 2017)
    "other": 255,  # any other generator; say which in gen_checksum's string table
}
#: ``label_scheme`` enum: how a training sample's soft target was made.
LABEL_SCHEMES: dict[str, int] = {"onehot": 0, "lsr": 1, "lsro": 2, "teacher": 3}
ENCODINGS: tuple[str, ...] = ("raw", "jpeg", "png")
TARGET_STORAGES: tuple[str, ...] = ("sparse", "dense")
#: Keypoints are COCO-17 (x, y, score) in the stored image's pixel frame.
NUM_KEYPOINTS = 17

#: Default image storage, chosen from the CUHK01 measurements in docs/hdf5-format.md.
DEFAULT_ENCODING = "raw"
DEFAULT_COMPRESSION = "none"
DEFAULT_IMAGE_SIZE = (256, 128)  # (H, W), the usual re-ID model input
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 3
DEFAULT_TARGET_TOPK = 5

# Tolerance on a target row's total mass as given by the caller (before float16 storage).
_MASS_TOL = 1e-3
_META_CHUNK = 4096
_HASH_ROWS_IMAGES = 256
_HASH_ROWS_META = 65536

# Attributes the writer owns; callers cannot set them through ``attrs``.
_RESERVED_ATTRS = frozenset(
    {
        "format", "format_version", "created_by", "label_smoothing", "num_classes",
        "image_encoding", "image_size", "image_compression", "jpeg_quality", "png_level",
        "target_storage", "target_topk", "checksum_algorithm", "splits", "stage_keys",
        "pipeline_key",
    }
)

# Per-sample datasets present in every split, with their on-disk dtypes.
_COMMON_FIELDS: dict[str, Any] = {
    "pid": np.int64,
    "label": np.int64,
    "camid": np.int16,
    "origin": np.int64,
    "gen_target_camid": np.int16,
    "gen_pose_id": np.int32,
    "gen_checksum": np.int32,
    "native_hw": np.int32,  # (N, 2)
}


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a hard dependency
        raise DependencyError(
            "h5py is not installed; the reidaug HDF5 format needs it. Fix: pip install h5py"
        ) from exc
    return h5py


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a hard dependency
        raise DependencyError(
            "opencv-python is not installed; encoding/decoding images needs it. "
            "Fix: pip install opencv-python"
        ) from exc
    return cv2


# --------------------------------------------------------------------------------------------
# Soft targets
# --------------------------------------------------------------------------------------------


def densify_target(
    index: np.ndarray, value: np.ndarray, rest: float, num_classes: int
) -> np.ndarray:
    """Turn one stored sparse target into its dense probability vector, float32 (C,).

    ``index`` (K,) int32 holds class ids (``-1`` = unused slot), ``value`` (K,) their
    probabilities, ``rest`` the leftover mass, spread *uniformly over the classes not listed in
    ``index``*. So LSR with smoothing eps is index=[y], value=[1-eps+eps/C], rest=eps-eps/C;
    LSRO is no index at all and rest=1 (uniform over all C classes). The result sums to 1
    (within float32 rounding); it is the final training target: do not smooth it again.
    """
    index = np.asarray(index).reshape(-1)
    value = np.asarray(value, dtype=np.float32).reshape(-1)
    out = np.zeros(num_classes, dtype=np.float32)
    used = index >= 0
    idx = index[used].astype(np.int64)
    out[idx] = value[used]
    others = num_classes - idx.size
    if others > 0 and rest > 0:
        mask = np.ones(num_classes, dtype=bool)
        mask[idx] = False
        out[mask] += np.float32(rest) / np.float32(others)
    return out


def densify_targets(
    index: np.ndarray, value: np.ndarray, rest: np.ndarray, num_classes: int
) -> np.ndarray:
    """Batched :func:`densify_target`: (B, K), (B, K), (B,) -> float32 (B, C)."""
    index = np.asarray(index)
    value = np.asarray(value, dtype=np.float32)
    rest = np.asarray(rest, dtype=np.float32)
    b = index.shape[0]
    used = index >= 0
    n_used = used.sum(axis=1)
    others = num_classes - n_used  # (B,)
    share = np.where(others > 0, rest / np.maximum(others, 1), 0.0).astype(np.float32)
    out = np.repeat(share[:, None], num_classes, axis=1)  # (B, C)
    rows = np.repeat(np.arange(b), index.shape[1])[used.reshape(-1)]
    out[rows, index[used]] = value[used]
    return out


def normalize_dense(rows: np.ndarray) -> np.ndarray:
    """Dense float16 rows -> float32 rows divided by their sum (undoes float16 rounding only)."""
    rows = np.asarray(rows, dtype=np.float32)
    total = rows.sum(axis=-1, keepdims=True)
    return rows / np.where(total > 0, total, 1.0)


def make_targets(
    scheme: str,
    labels: Sequence[int] | np.ndarray,
    num_classes: int,
    *,
    epsilon: float = 0.1,
    probs: np.ndarray | None = None,
    topk: int = DEFAULT_TARGET_TOPK,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse (index (B, K) int32, value (B, K) float32) targets for one label scheme.

    onehot: [y] -> [1]; lsr: [y] -> [1 - eps + eps/C] (the rest, eps - eps/C, spreads as eps/C
    over the other classes); lsro: nothing listed (uniform over all classes); teacher: the
    ``topk`` largest of ``probs`` (B, C) (the rest mass spreads over the other classes).
    The writer derives the rest mass itself, so these two arrays are all it needs.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    b = labels.size
    if scheme not in LABEL_SCHEMES:
        raise unknown_name("label scheme", scheme, LABEL_SCHEMES)
    if scheme in ("onehot", "lsr"):
        if b and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"{scheme} targets need labels in 0..{num_classes - 1}; found "
                f"{labels.min()}..{labels.max()}. Fix: relabel pids contiguously first."
            )
        if scheme == "lsr" and not 0.0 <= epsilon < 1.0:
            raise ConfigError(f"lsr epsilon must be in [0, 1); found {epsilon}.")
        top = 1.0 if scheme == "onehot" else 1.0 - epsilon + epsilon / num_classes
        return labels.astype(np.int32)[:, None], np.full((b, 1), top, dtype=np.float32)
    if scheme == "lsro":
        return np.full((b, 1), -1, dtype=np.int32), np.zeros((b, 1), dtype=np.float32)
    if probs is None:
        raise ConfigError("teacher targets need probs (B, C) from the teacher's softmax.")
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape != (b, num_classes):
        raise DataError(
            f"teacher probs must have shape ({b}, {num_classes}); found {probs.shape}."
        )
    k = min(topk, num_classes)
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int32), np.take_along_axis(probs, idx, axis=1)


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def _element_bytes(arr: Any, vlen: bool) -> Iterator[bytes]:
    """Canonical bytes of a block of rows: little-endian C-order, or len+bytes per vlen row."""
    if vlen:
        for item in arr:
            if isinstance(item, str):
                b = item.encode("utf-8")
            elif isinstance(item, (bytes, bytearray)):
                b = bytes(item)
            else:
                b = np.ascontiguousarray(item, dtype=np.uint8).tobytes()
            yield struct.pack("<Q", len(b))
            yield b
    else:
        a = np.asarray(arr)
        yield np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def _is_vlen(ds: Any) -> bool:
    h5py = _h5py()
    return h5py.check_vlen_dtype(ds.dtype) is not None or ds.dtype.kind == "O"


def dataset_sha256(ds: Any) -> str:
    """sha256 (hex) of an h5py dataset's contents, read in blocks of rows.

    Recipe ``sha256-elements-v1``: fixed-size data hashes as its little-endian bytes in C order;
    a variable-length dataset hashes, per element in order, its byte length as uint64
    little-endian then its bytes (strings as UTF-8). Enum data hashes as its integer codes.
    """
    h = hashlib.sha256()
    vlen = _is_vlen(ds)
    n = ds.shape[0] if ds.shape else 0
    rows = _HASH_ROWS_IMAGES if ds.ndim > 2 or vlen else _HASH_ROWS_META
    for start in range(0, n, rows):
        block = ds[start : start + rows]
        for part in _element_bytes(block, vlen):
            h.update(part)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _parse_compression(compression: str) -> tuple[str | None, int | None]:
    if compression == "none":
        return None, None
    if compression == "lzf":
        return "lzf", None
    if compression.startswith("gzip-"):
        level = compression[5:]
        if level.isdigit() and 0 <= int(level) <= 9:
            return "gzip", int(level)
    raise ConfigError(
        f'unknown image compression "{compression}"; expected "none", "lzf" or "gzip-0".."gzip-9".'
    )


def _as_column(
    name: str, value: Any, n: int, dtype: Any, default: Any = None
) -> np.ndarray:
    """Broadcast a scalar or check a per-sample sequence has n entries."""
    if value is None:
        if default is None:
            raise DataError(f"append: field {name!r} is required.")
        value = default
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr.item())
    if arr.shape[0] != n:
        raise DataError(
            f"append: field {name!r} has {arr.shape[0]} entries but the batch has {n} images."
        )
    if np.issubdtype(np.dtype(dtype), np.integer) and arr.size and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"append: field {name!r} must hold integers; found {arr[:5]}...")
    return arr.astype(dtype, copy=False)


def _enum_codes(name: str, value: Any, n: int, mapping: Mapping[str, int]) -> np.ndarray:
    if isinstance(value, str):
        value = [value] * n
    codes = []
    for v in value:
        if isinstance(v, str):
            if v not in mapping:
                raise unknown_name(name, v, mapping)
            codes.append(mapping[v])
        else:
            raise DataError(f"append: {name} must be given by name (one of {sorted(mapping)}); found {v!r}.")
    if len(codes) != n:
        raise DataError(f"append: {name} has {len(codes)} entries but the batch has {n} images.")
    return np.asarray(codes, dtype=np.uint8)


@dataclasses.dataclass
class _SplitState:
    group: Any
    n: int = 0
    hashers: dict[str, Any] = dataclasses.field(default_factory=dict)
    has_keypoints: bool = False


class H5Writer:
    """Write a reidaug HDF5 file (format v1) atomically, in batches.

    ::

        with H5Writer(path, image_size=(256, 128), encoding="raw", attrs={...}) as w:
            w.append("train", images=batch, pid=pids, camid=cams, label=labels,
                     source="real", label_scheme="onehot", path=paths)

    ``image_size`` (H, W): every image is resized to it (bilinear; keypoints scaled with it).
    Required for ``raw``; for ``jpeg``/``png`` ``None`` keeps each image's native size.
    ``compression`` applies to ``raw`` only: ``none``, ``lzf`` or ``gzip-0``..``gzip-9``.
    ``attrs`` may hold ``pipeline_key`` (str), ``stage_keys`` (mapping stage -> key) and other
    scalar/str attributes not reserved by the format.
    Soft targets of the train split are stored ``sparse`` (top ``target_topk`` classes plus the
    leftover mass) or ``dense`` (needs ``num_classes`` up front). Checksums and cross-field
    checks run at close; only then is the temp file moved onto ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
        encoding: str = DEFAULT_ENCODING,
        compression: str = DEFAULT_COMPRESSION,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        png_level: int = DEFAULT_PNG_LEVEL,
        attrs: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        target_storage: str = "sparse",
        target_topk: int = DEFAULT_TARGET_TOPK,
    ) -> None:
        h5py = _h5py()
        if encoding not in ENCODINGS:
            raise unknown_name("image encoding", encoding, ENCODINGS)
        if target_storage not in TARGET_STORAGES:
            raise unknown_name("target storage", target_storage, TARGET_STORAGES)
        if encoding == "raw" and image_size is None:
            raise ConfigError(
                "encoding='raw' stores a fixed (N, H, W, 3) array, so it needs image_size=(H, W). "
                "Fix: pass image_size=(256, 128), or use encoding='png'/'jpeg' to keep native sizes."
            )
        if image_size is not None:
            image_size = (int(image_size[0]), int(image_size[1]))
            if min(image_size) <= 0:
                raise ConfigError(f"image_size must be positive (H, W); found {image_size}.")
        if target_storage == "dense" and not num_classes:
            raise ConfigError("target_storage='dense' needs num_classes up front.")
        if target_topk < 1:
            raise ConfigError(f"target_topk must be >= 1; found {target_topk}.")
        if not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100; found {jpeg_quality}.")
        if not 0 <= png_level <= 9:
            raise ConfigError(f"png_level must be in 0..9; found {png_level}.")
        self._comp = _parse_compression(compression) if encoding == "raw" else (None, None)
        self.path = Path(path)
        self.image_size = image_size
        self.encoding = encoding
        self.compression = compression if encoding == "raw" else "none"
        self.jpeg_quality = jpeg_quality
        self.png_level = png_level
        self.num_classes = num_classes
        self.target_storage = target_storage
        self.target_topk = target_topk
        self._attrs = self._check_attrs(attrs or {})
        self._splits: dict[str, _SplitState] = {}
        self._gen_table: dict[str, int] = {}
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_name(self.path)
        self._f = h5py.File(self._tmp, "w", libver=("v110", "latest"), track_order=True)
        log.debug("writing %s via %s", self.path, self._tmp.name)

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public API ----------------------------------------------------------------------------

    def append(
        self,
        split: str,
        *,
        images: Sequence[np.ndarray] | np.ndarray,
        pid: Any,
        camid: Any,
        label: Any = None,
        source: str | Sequence[str] = "real",
        origin: Any = -1,
        path: str | Sequence[str] | None = None,
        gen_target_camid: Any = -1,
        gen_pose_id: Any = -1,
        gen_checksum: str | Sequence[str | None] | None = None,
        keypoints: np.ndarray | None = None,
        label_scheme: str | Sequence[str] | None = None,
        target_index: np.ndarray | None = None,
        target_value: np.ndarray | None = None,
        target_probs: np.ndarray | None = None,
    ) -> None:
        """Append a batch of B samples to ``split``; scalars broadcast to the batch.

        images: B RGB uint8 arrays (H, W, 3) (or one (B, H, W, 3) array). label: contiguous
        0..C-1 in ``train`` (-1 only for fakes with no identity), omitted (-1) elsewhere.
        origin: index in the same split of the real image a fake came from, -1 for real images.
        gen_checksum: per-sample generator checkpoint digest (str) or None; stored as an index
        into the root string table ``gen_checksums``. keypoints: (B, 17, 3) float32 (x, y, score)
        in the input image's pixel frame (rescaled with the image); NaN rows mean "none".
        Train only: ``label_scheme`` and either ``target_index``/``target_value`` (B, k<=K),
        or ``target_probs`` (B, C); one-hot targets are built from ``label`` when omitted.
        """
        if self._closed:
            raise DataError(f"append after close on {self.path}.")
        if split not in SPLITS:
            raise unknown_name("split", split, SPLITS)
        imgs = list(images) if not isinstance(images, np.ndarray) else list(images)
        n = len(imgs)
        if n == 0:
            return
        where = f"{self.path} split {split!r} rows {self._splits[split].n if split in self._splits else 0}.."
        paths = [path] * n if isinstance(path, str) else (list(path) if path is not None else [""] * n)
        if len(paths) != n:
            raise DataError(f"append ({where}): {len(paths)} paths for {n} images.")
        stored, native_hw, scale = self._prepare_images(imgs, paths, where)
        cols: dict[str, np.ndarray] = {
            "pid": _as_column("pid", pid, n, np.int64),
            "camid": _as_column("camid", camid, n, np.int16),
            "origin": _as_column("origin", origin, n, np.int64),
            "gen_target_camid": _as_column("gen_target_camid", gen_target_camid, n, np.int16),
            "gen_pose_id": _as_column("gen_pose_id", gen_pose_id, n, np.int32),
            "native_hw": native_hw,
        }
        is_train = split == TRAIN_SPLIT
        if is_train:
            if label is None:
                raise DataError(
                    f"append ({where}): the train split needs label (contiguous 0..C-1). "
                    "Fix: relabel train pids (sorted unique pid -> 0..C-1) and pass label=."
                )
            cols["label"] = _as_column("label", label, n, np.int64)
        else:
            cols["label"] = _as_column("label", label, n, np.int64, default=-1)
            if np.any(cols["label"] != -1):
                raise DataError(
                    f"append ({where}): labels must be -1 outside train; found "
                    f"{np.unique(cols['label'])[:5]}. Fix: leave label out for {split}."
                )
        if np.any(cols["camid"] < 0):
            raise DataError(f"append ({where}): camid must be 0-based (>= 0); found {cols['camid'].min()}.")
        src = _enum_codes("source", source, n, SOURCES)
        real = src == SOURCES["real"]
        if np.any(cols["origin"][real] != -1):
            raise DataError(f"append ({where}): real images must have origin -1.")
        cols["gen_checksum"] = self._intern_checksums(gen_checksum, n, where)

        state = self._split(split, stored[0])
        if keypoints is not None:
            kp = np.asarray(keypoints, dtype=np.float32)
            if kp.shape != (n, NUM_KEYPOINTS, 3):
                raise DataError(
                    f"append ({where}): keypoints must have shape ({n}, {NUM_KEYPOINTS}, 3); found {kp.shape}."
                )
            kp = kp.copy()
            kp[:, :, 0] *= scale[:, 1:2]  # x scales with width
            kp[:, :, 1] *= scale[:, 0:1]  # y with height
            if not state.has_keypoints:
                self._create_keypoints(state)
        elif state.has_keypoints:
            kp = np.full((n, NUM_KEYPOINTS, 3), np.nan, dtype=np.float32)
        else:
            kp = None

        if is_train:
            schemes = _enum_codes("label_scheme", label_scheme if label_scheme is not None else "onehot", n, LABEL_SCHEMES)
            if label_scheme is None and (target_index is not None or target_probs is not None):
                raise DataError(f"append ({where}): targets given without label_scheme.")
            tcols = self._targets(cols["label"], schemes, target_index, target_value, target_probs, n, where)
            cols.update(tcols)
            cols["label_scheme"] = schemes
            bad = (cols["label"] < 0) & ~np.isin(schemes, [LABEL_SCHEMES["lsro"], LABEL_SCHEMES["teacher"]])
            if np.any(bad):
                raise DataError(
                    f"append ({where}): {int(bad.sum())} train samples have label -1 with a scheme that "
                    "needs a label (onehot/lsr). Fix: give them a label, or use lsro/teacher targets."
                )
        elif any(v is not None for v in (label_scheme, target_index, target_value, target_probs)):
            raise DataError(f"append ({where}): soft targets belong to the train split only.")

        cols["source"] = src
        cols["path"] = np.asarray(paths, dtype=object)
        cols["images"] = stored
        if kp is not None:
            cols["keypoints"] = kp
        self._write(state, cols)

    def abort(self) -> None:
        """Close and delete the temp file; the final path is left untouched."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # the file may already be broken; we delete it anyway
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        log.debug("aborted %s; removed %s", self.path, self._tmp.name)

    def close(self) -> None:
        """Check cross-field invariants, write checksums and attributes, move into place."""
        if self._closed:
            return
        try:
            self._finalize()
            self._f.close()
            with open(self._tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        log.info("wrote %s (%s)", self.path, ", ".join(f"{s}: {st.n}" for s, st in self._splits.items()))

    # -- internals -----------------------------------------------------------------------------

    def _check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in attrs.items():
            if key == "pipeline_key":
                out[key] = str(val)
            elif key == "stage_keys":
                if not isinstance(val, Mapping):
                    raise ConfigError(f"attrs['stage_keys'] must map stage name -> key; found {type(val).__name__}.")
                out[key] = json.dumps({str(k): str(v) for k, v in val.items()}, sort_keys=True)
            elif key in _RESERVED_ATTRS:
                raise ConfigError(f"attribute {key!r} is set by the writer itself; remove it from attrs.")
            elif isinstance(val, (str, int, float, bool, np.integer, np.floating)):
                out[key] = val
            else:
                raise ConfigError(
                    f"attribute {key!r} must be a str or number; found {type(val).__name__}. "
                    "Fix: json.dumps it first."
                )
        return out

    def _prepare_images(
        self, imgs: list[np.ndarray], paths: list[str], where: str
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        cv2 = _cv2()
        n = len(imgs)
        native = np.zeros((n, 2), dtype=np.int32)
        scale = np.ones((n, 2), dtype=np.float32)
        out: list[Any] = []
        for i, img in enumerate(imgs):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise DataError(
                    f"append ({where}): image {i} ({paths[i] or 'no path'}) must be RGB uint8 (H, W, 3); "
                    f"found {img.dtype} {img.shape}."
                )
            h, w = img.shape[:2]
            native[i] = (h, w)
            if self.image_size is not None and (h, w) != self.image_size:
                th, tw = self.image_size
                img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR)
                scale[i] = (th / h, tw / w)
            if self.encoding == "raw":
                out.append(np.ascontiguousarray(img))
            else:
                ext = ".jpg" if self.encoding == "jpeg" else ".png"
                params = (
                    [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
                    if self.encoding == "jpeg"
                    else [cv2.IMWRITE_PNG_COMPRESSION, self.png_level]
                )
                ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
                if not ok:
                    raise DataError(f"append ({where}): cannot encode image {i} ({paths[i]}) as {self.encoding}.")
                out.append(buf.reshape(-1))
        stored: Any = np.stack(out) if self.encoding == "raw" else out
        return stored, native, scale

    def _intern_checksums(self, value: Any, n: int, where: str) -> np.ndarray:
        if value is None:
            return np.full(n, -1, dtype=np.int32)
        vals = [value] * n if isinstance(value, str) else list(value)
        if len(vals) != n:
            raise DataError(f"append ({where}): gen_checksum has {len(vals)} entries for {n} images.")
        out = np.empty(n, dtype=np.int32)
        for i, v in enumerate(vals):
            if v is None or v == "":
                out[i] = -1
            else:
                out[i] = self._gen_table.setdefault(str(v), len(self._gen_table))
        return out

    def _targets(
        self,
        labels: np.ndarray,
        schemes: np.ndarray,
        index: np.ndarray | None,
        value: np.ndarray | None,
        probs: np.ndarray | None,
        n: int,
        where: str,
    ) -> dict[str, np.ndarray]:
        k_max = self.target_topk
        if index is None and value is None and probs is None:
            if np.any(schemes != LABEL_SCHEMES["onehot"]):
                raise DataError(
                    f"append ({where}): label schemes other than onehot need explicit targets. "
                    "Fix: pass target_index/target_value (see make_targets) or target_probs."
                )
            index, value = make_targets("onehot", labels, int(labels.max()) + 1 if n else 1)
        if probs is not None:
            if index is not None or value is not None:
                raise DataError(f"append ({where}): give target_probs or target_index/value, not both.")
            probs = np.asarray(probs, dtype=np.float32)
            if probs.ndim != 2 or probs.shape[0] != n:
                raise DataError(f"append ({where}): target_probs must be (B={n}, C); found {probs.shape}.")
            self._check_mass(probs, probs.sum(axis=1), where)
            if self.target_storage == "dense":
                return {"target_dense": self._dense_width(probs, where).astype(np.float16)}
            k = min(k_max, probs.shape[1])
            index = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int32)
            value = np.take_along_axis(probs, index, axis=1)
        if index is None or value is None:
            raise DataError(f"append ({where}): target_index and target_value go together.")
        index = np.asarray(index, dtype=np.int64)
        value = np.asarray(value, dtype=np.float32)
        if index.ndim == 1:
            index, value = index[:, None], value[:, None]
        if index.shape != value.shape or index.shape[0] != n:
            raise DataError(
                f"append ({where}): target_index {index.shape} and target_value {value.shape} must both be (B={n}, k)."
            )
        if index.shape[1] > k_max:
            raise DataError(
                f"append ({where}): targets list {index.shape[1]} classes but target_topk is {k_max}. "
                f"Fix: H5Writer(..., target_topk={index.shape[1]})."
            )
        used = index >= 0
        value = np.where(used, value, 0.0).astype(np.float32)
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise DataError(f"append ({where}): target values must be finite and >= 0.")
        if self.num_classes is not None and np.any(index >= self.num_classes):
            raise DataError(f"append ({where}): target class {index.max()} >= num_classes {self.num_classes}.")
        srt = np.sort(np.where(used, index, -1 - np.arange(index.shape[1])), axis=1)
        if np.any(srt[:, 1:] == srt[:, :-1]):
            raise DataError(f"append ({where}): a target row lists the same class twice.")
        self._check_mass(value, value.sum(axis=1), where, upper_only=True)
        if self.target_storage == "dense":
            c = self.num_classes
            dense = densify_targets(
                np.where(used, index, -1), value, np.clip(1.0 - value.sum(axis=1), 0, None), c
            )
            return {"target_dense": dense.astype(np.float16)}
        pad = k_max - index.shape[1]
        index = np.pad(np.where(used, index, -1), ((0, 0), (0, pad)), constant_values=-1).astype(np.int32)
        v16 = np.pad(value, ((0, 0), (0, pad))).astype(np.float16)
        # The rest is derived from the *stored* float16 values, so each row sums to 1 in float32.
        rest = np.clip(1.0 - v16.astype(np.float32).sum(axis=1), 0.0, None).astype(np.float32)
        return {"target_index": index, "target_value": v16, "target_rest": rest}

    def _dense_width(self, probs: np.ndarray, where: str) -> np.ndarray:
        if probs.shape[1] != self.num_classes:
            raise DataError(
                f"append ({where}): target_probs has {probs.shape[1]} classes; num_classes is {self.num_classes}."
            )
        return probs

    @staticmethod
    def _check_mass(value: np.ndarray, total: np.ndarray, where: str, upper_only: bool = False) -> None:
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise DataError(f"append ({where}): target probabilities must be finite and >= 0.")
        bad = total > 1 + _MASS_TOL if upper_only else np.abs(total - 1) > _MASS_TOL
        if np.any(bad):
            i = int(np.argmax(bad))
            raise DataError(
                f"append ({where}): target row {i} has total mass {total[i]:.4f}; expected "
                f"{'<= 1' if upper_only else '1'} (tolerance {_MASS_TOL})."
            )

    def _split(self, split: str, first_image: Any) -> _SplitState:
        if split in self._splits:
            state = self._splits[split]
            if self.encoding == "raw" and first_image.shape != state.group["images"].shape[1:]:
                raise DataError(f"append: {split} image shape {first_image.shape} differs from the file's.")
            return state
        h5py = _h5py()
        g = self._f.create_group(split, track_order=True)
        state = _SplitState(group=g)
        if self.encoding == "raw":
            h, w = self.image_size  # type: ignore[misc]
            comp, opts = self._comp
            g.create_dataset(
                "images", shape=(0, h, w, 3), maxshape=(None, h, w, 3), dtype=np.uint8,
                chunks=(1, h, w, 3), compression=comp, compression_opts=opts,
            )
        else:
            g.create_dataset(
                "images", shape=(0,), maxshape=(None,), dtype=h5py.vlen_dtype(np.uint8),
                chunks=(1024,),
            )
        meta = dict(compression="gzip", compression_opts=4, shuffle=True)
        for name, dt in _COMMON_FIELDS.items():
            shape = (0, 2) if name == "native_hw" else (0,)
            chunks = (_META_CHUNK, 2) if name == "native_hw" else (_META_CHUNK,)
            g.create_dataset(name, shape=shape, maxshape=(None,) + shape[1:], dtype=dt, chunks=chunks, **meta)
        g.create_dataset(
            "source", shape=(0,), maxshape=(None,), chunks=(_META_CHUNK,),
            dtype=h5py.enum_dtype(SOURCES, basetype=np.uint8), **meta,
        )
        g.create_dataset(
            "path", shape=(0,), maxshape=(None,), chunks=(_META_CHUNK,),
            dtype=h5py.string_dtype("utf-8"), **meta,
        )
        if split == TRAIN_SPLIT:
            g.create_dataset(
                "label_scheme", shape=(0,), maxshape=(None,), chunks=(_META_CHUNK,),
                dtype=h5py.enum_dtype(LABEL_SCHEMES, basetype=np.uint8), **meta,
            )
            if self.target_storage == "sparse":
                k = self.target_topk
                g.create_dataset("target_index", shape=(0, k), maxshape=(None, k), dtype=np.int32,
                                 chunks=(_META_CHUNK, k), **meta)
                g.create_dataset("target_value", shape=(0, k), maxshape=(None, k), dtype=np.float16,
                                 chunks=(_META_CHUNK, k), **meta)
                g.create_dataset("target_rest", shape=(0,), maxshape=(None,), dtype=np.float32,
                                 chunks=(_META_CHUNK,), **meta)
            else:
                c = int(self.num_classes)  # type: ignore[arg-type]
                g.create_dataset("target_dense", shape=(0, c), maxshape=(None, c), dtype=np.float16,
                                 chunks=(max(1, min(_META_CHUNK, (1 << 20) // (2 * c))), c), **meta)
        for name in g:
            state.hashers[name] = hashlib.sha256()
        self._splits[split] = state
        return state

    def _create_keypoints(self, state: _SplitState) -> None:
        g = state.group
        g.create_dataset(
            "keypoints", shape=(state.n, NUM_KEYPOINTS, 3), maxshape=(None, NUM_KEYPOINTS, 3),
            dtype=np.float32, chunks=(1024, NUM_KEYPOINTS, 3), compression="gzip",
            compression_opts=4, shuffle=True, fillvalue=np.nan,
        )
        h = hashlib.sha256()
        if state.n:  # earlier rows had no keypoints: they read back as NaN
            for part in _element_bytes(np.full((state.n, NUM_KEYPOINTS, 3), np.nan, np.float32), False):
                h.update(part)
        state.hashers["keypoints"] = h
        state.has_keypoints = True

    def _write(self, state: _SplitState, cols: dict[str, Any]) -> None:
        g = state.group
        n0 = state.n
        b = len(cols["pid"])
        for name, data in cols.items():
            ds = g[name]
            ds.resize(n0 + b, axis=0)
            if name == "images" and self.encoding != "raw":
                # One row at a time: h5py turns a block of equal-length buffers into a 2-D array
                # and refuses it (random-noise PNGs all have the same length, for one).
                for j, buf in enumerate(data):
                    ds[n0 + j] = buf
                vlen = True
            else:
                ds[n0 : n0 + b] = data
                vlen = name == "path"
            for part in _element_bytes(data, vlen):
                state.hashers[name].update(part)
        state.n = n0 + b

    def _finalize(self) -> None:
        h5py = _h5py()
        if not self._splits:
            raise DataError(
                f"nothing was appended to {self.path}; refusing to write an empty dataset file."
            )
        num_classes = self._check_train()
        for split, state in self._splits.items():
            g = state.group
            src = g["source"][:]
            origin = g["origin"][:]
            fake = src != SOURCES["real"]
            bad = fake & ((origin < -1) | (origin >= state.n))
            ok = fake & (origin >= 0) & (origin < state.n)
            if np.any(bad) or np.any(src[origin[ok]] != SOURCES["real"]):
                raise DataError(
                    f"{self.path} split {split!r}: origin must be -1 or the index of a *real* image "
                    "in the same split. Fix: append the real images first and use their row index."
                )
            for name, h in state.hashers.items():
                g[name].attrs["sha256"] = h.hexdigest()
            pid = g["pid"][:]
            g.attrs["num_samples"] = state.n
            g.attrs["num_ids"] = int(np.unique(pid[pid >= 0]).size)
            g.attrs["num_cameras"] = int(np.unique(g["camid"][:]).size)
        table = list(self._gen_table)
        ds = self._f.create_dataset("gen_checksums", data=np.array(table, dtype=object),
                                    dtype=h5py.string_dtype("utf-8"))
        ds.attrs["sha256"] = dataset_sha256(ds) if table else hashlib.sha256().hexdigest()
        a = self._f.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["created_by"] = f"reidaug {__version__}"
        a["pipeline_key"] = self._attrs.pop("pipeline_key", "")
        a["stage_keys"] = self._attrs.pop("stage_keys", "{}")
        a["label_smoothing"] = "precomputed"
        a["num_classes"] = num_classes
        a["image_encoding"] = self.encoding
        a["image_size"] = np.asarray(self.image_size or (0, 0), dtype=np.int32)
        a["image_compression"] = self.compression
        a["jpeg_quality"] = self.jpeg_quality if self.encoding == "jpeg" else 0
        a["png_level"] = self.png_level if self.encoding == "png" else -1
        a["target_storage"] = self.target_storage
        a["target_topk"] = self.target_topk if self.target_storage == "sparse" else 0
        a["checksum_algorithm"] = CHECKSUM_ALGORITHM
        a["splits"] = json.dumps([s for s in SPLITS if s in self._splits])
        for key, val in self._attrs.items():
            a[key] = val

    def _check_train(self) -> int:
        state = self._splits.get(TRAIN_SPLIT)
        if state is None:
            return int(self.num_classes or 0)
        g = state.group
        label = g["label"][:]
        pid = g["pid"][:]
        known = label >= 0
        c = int(label.max()) + 1 if np.any(known) else 0
        if self.num_classes is not None:
            if c > self.num_classes:
                raise DataError(f"{self.path}: train label {c - 1} >= num_classes {self.num_classes}.")
            c = int(self.num_classes)
        present = np.unique(label[known])
        if present.size != c:
            missing = np.setdiff1d(np.arange(c), present)[:10]
            raise DataError(
                f"{self.path}: train labels must be contiguous 0..{c - 1}; classes {missing.tolist()} "
                "have no sample. Fix: relabel the train pids after filtering."
            )
        pairs = np.unique(np.stack([label[known], pid[known]], axis=1), axis=0)
        if pairs.shape[0] != c or np.unique(pairs[:, 1]).size != c:
            raise DataError(
                f"{self.path}: train label <-> pid must be one-to-one; found {pairs.shape[0]} (label, pid) "
                f"pairs for {c} labels. Fix: give every image of a pid the same label."
            )
        if (pid[~known] != -1).any():
            raise DataError(f"{self.path}: train samples with label -1 must have pid -1 (no identity).")
        if "target_index" in g and g["target_index"].shape[0] and int(g["target_index"][:].max()) >= c:
            raise DataError(f"{self.path}: a train target lists a class >= num_classes {c}.")
        return c


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitMeta:
    """All per-sample metadata of one split, in memory (images excluded)."""

    split: str
    pid: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) int64, -1 outside train
    camid: np.ndarray  # (N,) int16, 0-based
    source: np.ndarray  # (N,) uint8 codes; names in source_names
    source_names: dict[int, str]
    origin: np.ndarray  # (N,) int64, -1 for real images
    gen_target_camid: np.ndarray  # (N,) int16
    gen_pose_id: np.ndarray  # (N,) int32
    gen_checksum: np.ndarray  # (N,) int32 index into H5File.gen_checksums, -1 none
    native_hw: np.ndarray  # (N, 2) int32
    path: list[str]
    label_scheme: np.ndarray | None  # (N,) uint8 codes (train only)
    label_scheme_names: dict[int, str]
    keypoints: np.ndarray | None  # (N, 17, 3) float32 or None

    def __len__(self) -> int:
        return int(self.pid.shape[0])

    @property
    def is_fake(self) -> np.ndarray:
        return self.source != SOURCES["real"]

    def source_name(self, i: int) -> str:
        return self.source_names[int(self.source[i])]


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """Root attributes of a reidaug HDF5 file."""

    format_version: int
    created_by: str
    pipeline_key: str
    stage_keys: dict[str, str]
    label_smoothing: str
    num_classes: int
    image_encoding: str
    image_size: tuple[int, int] | None  # None: native sizes (encoded images only)
    image_compression: str
    target_storage: str
    target_topk: int
    splits: tuple[str, ...]
    extra: dict[str, Any]


def _enum_names(ds: Any) -> dict[int, str]:
    mapping = _h5py().check_enum_dtype(ds.dtype) or {}
    return {int(v): k for k, v in mapping.items()}


def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


_REQUIRED_DATASETS = ("images", "pid", "label", "camid", "source", "origin", "gen_target_camid",
                      "gen_pose_id", "gen_checksum", "native_hw", "path")


class H5File:
    """An open reidaug HDF5 file (read-only). Use :func:`open_h5` to get one.

    Not fork-safe: open one per process (``ReidH5Dataset`` does this per DataLoader worker).
    """

    def __init__(self, path: Path, h5: Any) -> None:
        self.path = path
        self.h5 = h5
        self.info = _read_info(path, h5)
        self._meta: dict[str, SplitMeta] = {}
        self._sparse: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._images = {s: h5[s]["images"] for s in self.info.splits}
        self._encoded = self.info.image_encoding != "raw"
        gc = h5["gen_checksums"][:] if "gen_checksums" in h5 else []
        self.gen_checksums: list[str] = [_attr_str(x) for x in gc]

    def __enter__(self) -> H5File:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.h5.close()

    @property
    def splits(self) -> tuple[str, ...]:
        return self.info.splits

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def _group(self, split: str) -> Any:
        if split not in self.info.splits:
            raise unknown_name(f"split in {self.path}", split, self.info.splits)
        return self.h5[split]

    def __len__(self) -> int:
        return sum(self.num_samples(s) for s in self.splits)

    def num_samples(self, split: str) -> int:
        return int(self._group(split)["pid"].shape[0])

    def meta(self, split: str) -> SplitMeta:
        """Per-sample metadata arrays of ``split`` (read once, then cached)."""
        if split not in self._meta:
            g = self._group(split)
            scheme = g["label_scheme"] if "label_scheme" in g else None
            self._meta[split] = SplitMeta(
                split=split,
                pid=g["pid"][:],
                label=g["label"][:],
                camid=g["camid"][:],
                source=g["source"][:],
                source_names=_enum_names(g["source"]),
                origin=g["origin"][:],
                gen_target_camid=g["gen_target_camid"][:],
                gen_pose_id=g["gen_pose_id"][:],
                gen_checksum=g["gen_checksum"][:],
                native_hw=g["native_hw"][:],
                path=list(g["path"].asstr()[:]),
                label_scheme=scheme[:] if scheme is not None else None,
                label_scheme_names=_enum_names(scheme) if scheme is not None else {},
                keypoints=g["keypoints"][:] if "keypoints" in g else None,
            )
        return self._meta[split]

    def read_image(self, split: str, i: int) -> np.ndarray:
        """Image ``i`` of ``split`` as RGB uint8 (H, W, 3), decoded if stored as jpeg/png."""
        ds = self._images[split] if split in self._images else self._group(split)["images"]
        i = int(i)
        if not 0 <= i < ds.shape[0]:
            raise IndexError(f"{self.path}: {split} has {ds.shape[0]} images; index {i} is out of range.")
        try:
            data = ds[i]
        except OSError as exc:  # a corrupted chunk fails its filter
            raise DataError(
                f"cannot read {split} image {i} from {self.path}: {exc}. "
                "Fix: run `reidaug inspect --verify` on the file and re-export it."
            ) from exc
        if not self._encoded:
            return data
        cv2 = _cv2()
        bgr = cv2.imdecode(np.asarray(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(
                f"cannot decode {split} image {i} ({self.info.image_encoding}) in {self.path}. "
                "Fix: run `reidaug inspect --verify` on the file and re-export it."
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def sparse_targets(self, split: str = TRAIN_SPLIT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index (N, K) int32, value (N, K) float16, rest (N,) float32) of a sparse file."""
        if split not in self._sparse:
            g = self._group(split)
            if "target_index" not in g:
                raise DataError(
                    f"{self.path} split {split!r} has no sparse targets (target_storage="
                    f"{self.info.target_storage!r}, targets exist in train only)."
                )
            self._sparse[split] = (g["target_index"][:], g["target_value"][:], g["target_rest"][:])
        return self._sparse[split]

    def targets(self, split: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense soft targets float32 (B, C) of samples ``indices``: the final training targets."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        g = self._group(split)
        c = self.info.num_classes
        if "target_dense" in g:
            ds = g["target_dense"]
            rows = np.stack([ds[int(i)] for i in idx]) if idx.size else np.zeros((0, c), np.float16)
            return normalize_dense(rows)
        ti, tv, tr = self.sparse_targets(split)
        return densify_targets(ti[idx], tv[idx], tr[idx], c)

    def target(self, split: str, i: int) -> np.ndarray:
        """Dense soft target float32 (C,) of one sample."""
        return self.targets(split, [i])[0]


def _read_info(path: Path, h5: Any) -> FileInfo:
    a = h5.attrs
    fmt = _attr_str(a.get("format", ""))
    if fmt != FORMAT_NAME:
        raise DataError(
            f"{path} is not a reidaug dataset file: attribute format is {fmt or '(missing)'!r}, "
            f"expected {FORMAT_NAME!r}. Fix: create it with `reidaug run` (export-hdf5 stage)."
        )
    ver = a.get("format_version")
    if ver is None or int(ver) != FORMAT_VERSION:
        hint = (
            "it was written by a newer reidaug; upgrade reidaug to read it"
            if ver is not None and int(ver) > FORMAT_VERSION
            else "re-export it with this reidaug version (`reidaug run` re-runs export-hdf5)"
        )
        raise DataError(
            f"{path}: unsupported {FORMAT_NAME} format_version {ver if ver is not None else '(missing)'}; "
            f"this reidaug ({__version__}) reads format_version {FORMAT_VERSION}. Fix: {hint}."
        )
    splits = tuple(json.loads(_attr_str(a.get("splits", "[]"))))
    for s in splits:
        if s not in h5:
            raise DataError(f"{path}: attribute splits lists {s!r} but the file has no group {s!r}.")
        missing = [d for d in _REQUIRED_DATASETS if d not in h5[s]]
        if missing:
            raise DataError(f"{path}: split {s!r} lacks datasets {missing}; the file is incomplete.")
    size = tuple(int(x) for x in a.get("image_size", (0, 0)))
    known = _RESERVED_ATTRS
    return FileInfo(
        format_version=int(ver),
        created_by=_attr_str(a.get("created_by", "")),
        pipeline_key=_attr_str(a.get("pipeline_key", "")),
        stage_keys=json.loads(_attr_str(a.get("stage_keys", "{}"))),
        label_smoothing=_attr_str(a.get("label_smoothing", "")),
        num_classes=int(a.get("num_classes", 0)),
        image_encoding=_attr_str(a.get("image_encoding", "raw")),
        image_size=None if size == (0, 0) else (size[0], size[1]),
        image_compression=_attr_str(a.get("image_compression", "none")),
        target_storage=_attr_str(a.get("target_storage", "sparse")),
        target_topk=int(a.get("target_topk", 0)),
        splits=splits,
        extra={k: (_attr_str(v) if isinstance(v, bytes) else v) for k, v in a.items() if k not in known},
    )


def open_h5(path: str | os.PathLike[str]) -> H5File:
    """Open a reidaug HDF5 file for reading; checks format name and version first.

    Raises :class:`DataError` naming the file and the expected vs found format/version.
    """
    h5py = _h5py()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset file not found: {p}. Fix: check the path or run the pipeline to create it.")
    if not h5py.is_hdf5(p):
        raise DataError(f"{p} is not an HDF5 file (bad signature). Fix: point at a reidaug .h5 file.")
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:  # a valid signature but a damaged file (e.g. cut short by a copy)
        raise DataError(f"cannot open {p} as HDF5: {exc}. Fix: re-create or re-copy the file.") from exc
    try:
        return H5File(p, h5)
    except BaseException:
        h5.close()
        raise


# --------------------------------------------------------------------------------------------
# Verify
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (``/split/dataset``) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _iter_datasets(h5: Any) -> Iterable[tuple[str, Any]]:
    h5py = _h5py()
    out: list[tuple[str, Any]] = []
    h5.visititems(lambda name, obj: out.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return out


def verify(path: str | os.PathLike[str]) -> list[Problem]:
    """Check a file: format/version, every dataset's sha256, lengths and field invariants.

    Returns the problems found (empty list: the file is sound). A file that cannot be opened as
    a reidaug file gives one problem instead of raising.
    """
    problems: list[Problem] = []
    try:
        f = open_h5(path)
    except DataError as exc:
        return [Problem("/", str(exc))]
    with f:
        for name, ds in _iter_datasets(f.h5):
            expected = ds.attrs.get("sha256")
            if expected is None:
                problems.append(Problem(f"/{name}", "has no sha256 attribute (written by an unfinished writer?)"))
                continue
            try:
                found = dataset_sha256(ds)
            except (OSError, ValueError) as exc:
                problems.append(Problem(f"/{name}", f"cannot be read: {exc}"))
                continue
            if found != _attr_str(expected):
                problems.append(Problem(
                    f"/{name}",
                    f"checksum mismatch: stored sha256 {_attr_str(expected)[:16]}..., data hashes to "
                    f"{found[:16]}... The data is corrupted; re-export the file.",
                ))
        for split in f.splits:
            problems.extend(_check_split(f, split))
    return problems


def _check_split(f: H5File, split: str) -> list[Problem]:
    out: list[Problem] = []
    g = f.h5[split]
    n = g["pid"].shape[0]
    for name, ds in g.items():
        if ds.shape[0] != n:
            out.append(Problem(f"/{split}/{name}", f"has {ds.shape[0]} rows; the split has {n} (pid)."))
    if out:
        return out
    try:
        m = f.meta(split)
    except (OSError, ValueError) as exc:
        return [Problem(f"/{split}", f"metadata cannot be read: {exc}")]
    if np.any(m.camid < 0):
        out.append(Problem(f"/{split}/camid", "has negative camera ids (must be 0-based)."))
    unknown = set(np.unique(m.source).tolist()) - set(m.source_names)
    if unknown:
        out.append(Problem(f"/{split}/source", f"has codes {sorted(unknown)} outside its enum."))
    fake = m.is_fake
    real = ~fake
    if np.any(m.origin[real] != -1):
        out.append(Problem(f"/{split}/origin", "real images must have origin -1."))
    o = m.origin[fake]
    if np.any((o < -1) | (o >= n)):
        out.append(Problem(f"/{split}/origin", "points outside the split."))
    else:
        ok = o[o >= 0]
        if np.any(fake[ok]):
            out.append(Problem(f"/{split}/origin", "points at a fake image; must point at a real one."))
    gc = m.gen_checksum
    if np.any((gc < -1) | (gc >= len(f.gen_checksums))):
        out.append(Problem(f"/{split}/gen_checksum", "indexes outside the gen_checksums table."))
    c = f.num_classes
    if split == TRAIN_SPLIT:
        lab = m.label
        if np.any((lab < -1) | (lab >= c)):
            out.append(Problem(f"/{split}/label", f"has labels outside -1..{c - 1}."))
        elif np.unique(lab[lab >= 0]).size != c:
            out.append(Problem(f"/{split}/label", f"labels do not cover 0..{c - 1} contiguously."))
        if "target_index" in g:
            ti, tv, tr = f.sparse_targets(split)
            if np.any(ti >= c):
                out.append(Problem(f"/{split}/target_index", f"lists classes >= num_classes {c}."))
            total = tv.astype(np.float32).sum(axis=1) + tr
            if n and np.max(np.abs(total - 1)) > 1e-3:
                out.append(Problem(f"/{split}/target_rest", "target rows do not sum to 1."))
        elif "target_dense" not in g:
            out.append(Problem(f"/{split}", "has no soft targets (target_index or target_dense)."))
    elif np.any(m.label != -1):
        out.append(Problem(f"/{split}/label", "labels must be -1 outside train."))
    return out
