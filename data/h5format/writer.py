"""The one writer of a reidaug HDF5 file: :class:`H5Writer` (format v1, atomic, in batches).

The file is written under a temp name (:func:`reidaug.io.atomic.atomic_path`) and moved onto
its final name only after a successful close, so a file that exists under its final name is
complete. There is exactly one writer per file (dask's rule for HDF5); files are never appended
to in place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from reidaug import __version__
from reidaug.data.h5format.schema import (
    CHECKSUM_ALGORITHM, COMMON_FIELDS, DEFAULT_COMPRESSION, DEFAULT_ENCODING, DEFAULT_IMAGE_SIZE,
    DEFAULT_JPEG_QUALITY, DEFAULT_PNG_LEVEL, DEFAULT_TARGET_TOPK, ENCODINGS, FORMAT_NAME,
    FORMAT_VERSION, LABEL_SCHEMES, LATER_LABEL_SCHEMES, LATER_SOURCES, MASS_TOL, META_CHUNK, NUM_KEYPOINTS,
    RESERVED_ATTRS, RESIZE_MODES, SOURCES, SPLITS, TARGET_STORAGES, TRAIN_SPLIT, dataset_sha256, element_bytes,
    enum_members,
)
from reidaug.data.h5format.targets import densify_targets, make_targets
from reidaug.data.images import letterbox
from reidaug.errors import ConfigError, DataError, unknown_name
from reidaug.io.atomic import atomic_path, require_free
from reidaug.pose.keypoints import letterbox_keypoints, rescale_keypoints

log = logging.getLogger(__name__)


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
        if not isinstance(v, str):
            raise DataError(f"append: {name} must be given by name (one of {sorted(mapping)}); found {v!r}.")
        if v not in mapping:
            if v in LATER_SOURCES or v in LATER_LABEL_SCHEMES:
                raise DataError(f"append: {name} {v!r} joined the format later, so a file holds it only when its "
                                f"writer declares it. Fix: H5Writer(..., later_members=[{v!r}]).")
            raise unknown_name(name, v, mapping)
        codes.append(mapping[v])
    if len(codes) != n:
        raise DataError(f"append: {name} has {len(codes)} entries but the batch has {n} images.")
    return np.asarray(codes, dtype=np.uint8)


@dataclasses.dataclass
class _SplitState:
    group: Any
    n: int = 0
    hashers: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: open handles of the split's datasets, held until close: a dataset whose last handle goes (whenever the
    #: garbage collector gets to it) is closed and its cached chunks placed in the file at that moment
    datasets: dict[str, Any] = dataclasses.field(default_factory=dict)
    has_keypoints: bool = False


class H5Writer:
    """Write a reidaug HDF5 file (format v1) atomically, in batches.

    ::

        with H5Writer(path, image_size=(256, 128), encoding="raw", attrs={...}) as w:
            w.append("train", images=batch, pid=pids, camid=cams, label=labels,
                     source="real", label_scheme="onehot", path=paths)

    ``image_size`` (H, W): every image is resized to it (bilinear; keypoints follow by the
    pixel-centre rule of :func:`reidaug.pose.keypoints.rescale_keypoints`). ``resize``:
    ``stretch`` (each axis on its own) or ``pad`` (:func:`reidaug.data.images.letterbox`: the aspect
    ratio kept, the margins in the ImageNet mean colour; recorded as the root attribute
    ``image_resize``, absent = stretch).
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
        resize: str = "stretch",
        later_members: Iterable[str] = (),
    ) -> None:
        unknown = sorted(set(later_members) - set(LATER_SOURCES) - set(LATER_LABEL_SCHEMES))
        if unknown:
            raise unknown_name("later enum member", unknown[0], {**LATER_SOURCES, **LATER_LABEL_SCHEMES})
        # the enums of this file: the base members, plus the later ones it declares it may hold
        self.sources = enum_members(SOURCES, LATER_SOURCES, later_members)
        self.label_schemes = enum_members(LABEL_SCHEMES, LATER_LABEL_SCHEMES, later_members)
        if encoding not in ENCODINGS:
            raise unknown_name("image encoding", encoding, ENCODINGS)
        if target_storage not in TARGET_STORAGES:
            raise unknown_name("target storage", target_storage, TARGET_STORAGES)
        if resize not in RESIZE_MODES:
            raise unknown_name("resize mode", resize, RESIZE_MODES)
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
        self.resize = resize
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
        # the temp name and the move into place are the ground floor's (removed again on abort)
        self._commit = atomic_path(self.path)
        self._tmp = self._commit.__enter__()
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
        imgs = list(images)
        n = len(imgs)
        if n == 0:
            return
        where = f"{self.path} split {split!r} rows {self._splits[split].n if split in self._splits else 0}.."
        paths = [path] * n if isinstance(path, str) else (list(path) if path is not None else [""] * n)
        if len(paths) != n:
            raise DataError(f"append ({where}): {len(paths)} paths for {n} images.")
        stored, native_hw = self._prepare_images(imgs, paths, where)
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
        src = _enum_codes("source", source, n, self.sources)
        real = src == SOURCES["real"]
        # -1: no camera, only for a fake with no identity (LSRO's unconditional samples)
        no_camera = (cols["camid"] == -1) & ~real & (np.asarray(cols["pid"]) == -1) & (cols["origin"] == -1)
        if np.any((cols["camid"] < 0) & ~no_camera):
            raise DataError(f"append ({where}): camid must be 0-based (>= 0; -1 only for a fake with no identity "
                            f"and no origin, pid -1 and origin -1); found {cols['camid'].min()}.")
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
            # the resized rows into the stored image's frame by the pixel-centre rule; the others
            # stay bit for bit (a ratio of 1 in float32 arithmetic could move their last bit)
            kp = kp.copy()
            moved = np.flatnonzero((native_hw != np.asarray(self.image_size or (0, 0))).any(1))  # (M,)
            if self.image_size is not None and moved.size:
                kp[moved] = (rescale_keypoints(kp[moved], native_hw[moved], self.image_size) if self.resize == "stretch"
                             else letterbox_keypoints(kp[moved], native_hw[moved], self.image_size))
            if not state.has_keypoints:
                self._create_keypoints(state)
        elif state.has_keypoints:
            kp = np.full((n, NUM_KEYPOINTS, 3), np.nan, dtype=np.float32)
        else:
            kp = None

        if is_train:
            schemes = _enum_codes("label_scheme", "onehot" if label_scheme is None else label_scheme, n,
                                  self.label_schemes)
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
        aborted = DataError(f"writing {self.path} was aborted")
        self._commit.__exit__(DataError, aborted, None)  # removes the temp file, leaves the final path
        log.debug("aborted %s; removed %s", self.path, self._tmp.name)

    def _flush_in_order(self) -> None:
        """HDF5 places a dirty chunk in the file when it is flushed; at close it flushes the open datasets in
        the order their handles happen to be held (the garbage collector's), so equal contents could be laid
        out two ways. Flushing every dataset by name first makes the file's bytes depend on its contents only."""
        import h5py

        names: list[str] = []
        self._f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(names):
            self._f[name].flush()

    def close(self) -> None:
        """Check cross-field invariants, write checksums and attributes, move into place."""
        if self._closed:
            return
        try:
            self._finalize()
            self._flush_in_order()
            self._f.close()
            with open(self._tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._commit.__exit__(None, None, None)  # os.replace onto the final name
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
            elif key in RESERVED_ATTRS:
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
    ) -> tuple[Any, np.ndarray]:
        """Check, resize and encode a batch: (stored images, native (B, 2) int32 as (h, w))."""
        import cv2

        n = len(imgs)
        native = np.zeros((n, 2), dtype=np.int32)
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
                img = (cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR) if self.resize == "stretch"
                       else letterbox(img, self.image_size))
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
        return stored, native

    def _intern_checksums(self, value: Any, n: int, where: str) -> np.ndarray:
        if value is None:
            return np.full(n, -1, dtype=np.int32)
        vals = [value] * n if isinstance(value, str) else list(value)
        if len(vals) != n:
            raise DataError(f"append ({where}): gen_checksum has {len(vals)} entries for {n} images.")
        # no digest (None or "") -> -1, else its row in the table (a new digest is appended to it)
        table = self._gen_table
        return np.asarray([-1 if v is None or v == "" else table.setdefault(str(v), len(table)) for v in vals],
                          dtype=np.int32)

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
                if probs.shape[1] != self.num_classes:
                    raise DataError(f"append ({where}): target_probs has {probs.shape[1]} classes; "
                                    f"num_classes is {self.num_classes}.")
                return {"target_dense": probs.astype(np.float16)}
            index, value = make_targets("teacher", labels, probs.shape[1], probs=probs, topk=k_max)
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

    @staticmethod
    def _check_mass(value: np.ndarray, total: np.ndarray, where: str, upper_only: bool = False) -> None:
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise DataError(f"append ({where}): target probabilities must be finite and >= 0.")
        bad = total > 1 + MASS_TOL if upper_only else np.abs(total - 1) > MASS_TOL
        if np.any(bad):
            i = int(np.argmax(bad))
            raise DataError(
                f"append ({where}): target row {i} has total mass {total[i]:.4f}; expected "
                f"{'<= 1' if upper_only else '1'} (tolerance {MASS_TOL})."
            )

    def _split(self, split: str, first_image: Any) -> _SplitState:
        if split in self._splits:
            state = self._splits[split]
            if self.encoding == "raw" and first_image.shape != state.group["images"].shape[1:]:
                raise DataError(f"append: {split} image shape {first_image.shape} differs from the file's.")
            return state
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

        def column(name: str, dtype: Any, width: tuple[int, ...] = (), rows: int = META_CHUNK) -> None:
            """An empty, growable per-sample dataset (N, *width), gzip-4 with byte shuffle."""
            g.create_dataset(name, shape=(0, *width), maxshape=(None, *width), dtype=dtype, chunks=(rows, *width),
                             compression="gzip", compression_opts=4, shuffle=True)

        for name, dt in COMMON_FIELDS.items():
            column(name, dt, (2,) if name == "native_hw" else ())
        column("source", h5py.enum_dtype(self.sources, basetype=np.uint8))
        column("path", h5py.string_dtype("utf-8"))
        if split == TRAIN_SPLIT:
            column("label_scheme", h5py.enum_dtype(self.label_schemes, basetype=np.uint8))
            if self.target_storage == "sparse":
                column("target_index", np.int32, (self.target_topk,))
                column("target_value", np.float16, (self.target_topk,))
                column("target_rest", np.float32)
            else:
                c = int(self.num_classes)  # type: ignore[arg-type]
                column("target_dense", np.float16, (c,), rows=max(1, min(META_CHUNK, (1 << 20) // (2 * c))))
        for name in g:
            state.hashers[name] = hashlib.sha256()
            state.datasets[name] = g[name]
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
            for part in element_bytes(np.full((state.n, NUM_KEYPOINTS, 3), np.nan, np.float32), False):
                h.update(part)
        state.hashers["keypoints"] = h
        state.datasets["keypoints"] = g["keypoints"]
        state.has_keypoints = True

    def _write(self, state: _SplitState, cols: dict[str, Any]) -> None:
        # before h5py writes: a write that hits ENOSPC leaves HDF5 unable to close the file (it
        # segfaulted); the estimate counts the images and the other columns
        require_free(self._tmp, sum(sum(len(b) for b in v) if k == "images" and self.encoding != "raw"
                                    else np.asarray(v).nbytes for k, v in cols.items() if v is not None),
                     "the HDF5 export")
        n0 = state.n
        b = len(cols["pid"])
        for name, data in cols.items():
            ds = state.datasets[name]
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
            for part in element_bytes(data, vlen):
                state.hashers[name].update(part)
        state.n = n0 + b

    def _finalize(self) -> None:
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
            camid = g["camid"][:]
            g.attrs["num_cameras"] = int(np.unique(camid[camid >= 0]).size)  # -1: a fake with no camera
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
        if self.resize != "stretch":  # absent = stretch, so files written before the option stay as they were
            a["image_resize"] = self.resize
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

