"""Read a reidaug HDF5 file: :func:`open_h5` → :class:`H5File` (metadata, images, soft targets)."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from reidaug import __version__
from reidaug.data.h5format.schema import (
    COMMON_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    REQUIRED_DATASETS,
    RESERVED_ATTRS,
    RESIZE_MODES,
    SOURCES,
    TRAIN_SPLIT,
    attr_str,
    enum_names,
)
from reidaug.data.h5format.targets import densify_targets, normalize_dense
from reidaug.errors import DataError, unknown_name


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
    image_resize: str = "stretch"  # stretch | pad (the writer's resize; absent in files before it)



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
        gc = h5["gen_checksums"][:] if "gen_checksums" in h5 else []
        self.gen_checksums: list[str] = [attr_str(x) for x in gc]

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
                **{name: g[name][:] for name in (*COMMON_FIELDS, "source")},
                source_names=enum_names(g["source"]),
                path=list(g["path"].asstr()[:]),
                label_scheme=scheme[:] if scheme is not None else None,
                label_scheme_names=enum_names(scheme) if scheme is not None else {},
                keypoints=g["keypoints"][:] if "keypoints" in g else None,
            )
        return self._meta[split]

    def rows(self, split: str, start: int, stop: int, fields: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of the per-sample ``fields`` of ``split``, read from disk without the rest.

        For chunked stages that need a slice of a large split: :meth:`meta` decodes every path and
        reads every field of the whole split. ``path`` comes back as a list of str; ``keypoints`` is
        an error if the split has none (optional fields are not padded here).
        """
        g = self._group(split)
        n = int(g["pid"].shape[0])
        if not 0 <= start <= stop <= n:
            raise IndexError(f"{self.path}: {split} has {n} rows; rows {start}:{stop} are out of range.")
        known = (*COMMON_FIELDS, "source", "path", "label_scheme", "keypoints")
        out: dict[str, Any] = {}
        for name in fields:
            if name not in known:
                raise unknown_name(f"per-sample field of {self.path}", name, known)
            if name not in g:
                raise DataError(f"{self.path}: split {split!r} has no {name!r} dataset (an optional one, absent from "
                                "this export: keypoints need export-hdf5's inputs.keypoints, label_scheme exists in "
                                "the train split only). Fix: read a field the split has, or re-export.")
            ds = g[name].asstr() if name == "path" else g[name]
            out[name] = list(ds[start:stop]) if name == "path" else ds[start:stop]
        return out

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
        if self.info.image_encoding == "raw":
            return data
        import cv2

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


def _read_info(path: Path, h5: Any) -> FileInfo:
    a = h5.attrs
    fmt = attr_str(a.get("format", ""))
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
    splits = tuple(json.loads(attr_str(a.get("splits", "[]"))))
    for s in splits:
        if s not in h5:
            raise DataError(f"{path}: attribute splits lists {s!r} but the file has no group {s!r}.")
        missing = [d for d in REQUIRED_DATASETS if d not in h5[s]]
        if missing:
            raise DataError(f"{path}: split {s!r} lacks datasets {missing}; the file is incomplete.")
    size = tuple(int(x) for x in a.get("image_size", (0, 0)))
    resize = attr_str(a.get("image_resize", "stretch"))
    if resize not in RESIZE_MODES:
        raise DataError(f"{path}: attribute image_resize is {resize!r}, expected one of {', '.join(RESIZE_MODES)}; "
                        "the file was written by another reidaug or edited. Fix: re-export it (`reidaug run`).")
    return FileInfo(
        format_version=int(ver),
        created_by=attr_str(a.get("created_by", "")),
        pipeline_key=attr_str(a.get("pipeline_key", "")),
        stage_keys=json.loads(attr_str(a.get("stage_keys", "{}"))),
        label_smoothing=attr_str(a.get("label_smoothing", "")),
        num_classes=int(a.get("num_classes", 0)),
        image_encoding=attr_str(a.get("image_encoding", "raw")),
        image_size=None if size == (0, 0) else (size[0], size[1]),
        image_compression=attr_str(a.get("image_compression", "none")),
        target_storage=attr_str(a.get("target_storage", "sparse")),
        target_topk=int(a.get("target_topk", 0)),
        splits=splits,
        image_resize=resize,
        extra={k: (attr_str(v) if isinstance(v, bytes) else v) for k, v in a.items() if k not in RESERVED_ATTRS},
    )


def open_h5(path: str | os.PathLike[str]) -> H5File:
    """Open a reidaug HDF5 file for reading; checks format name and version first.

    Raises :class:`DataError` naming the file and the expected vs found format/version.
    """
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
