"""The reidaug HDF5 format's vocabulary: names, enums, defaults, and the per-dataset checksum.

What every part of the format (writer, reader, verify) agrees on; see docs/hdf5-format.md.
"""
from __future__ import annotations

import hashlib
import struct
from typing import Any, Iterator

import h5py
import numpy as np

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
#: Enum members added after files existed. A file's enum holds one only when its writer declared it
#: (``H5Writer(later_members=...)``), so the files of pipelines that never use them keep their bytes.
LATER_SOURCES: dict[str, int] = {
    "dgnet": 4,  # DG-Net appearance / structure swap (Zheng et al., CVPR 2019); origin = the appearance source
}
LATER_LABEL_SCHEMES: dict[str, int] = {
    "structure": 4,  # DG-Net's fine-grained target: LSR on the identity of the swap's structure source
}


def enum_members(base: dict[str, int], later: dict[str, int], declared: Any) -> dict[str, int]:
    """``base`` plus the members of ``later`` named in ``declared``."""
    return {**base, **{k: v for k, v in later.items() if k in set(declared)}}
ENCODINGS: tuple[str, ...] = ("raw", "jpeg", "png")
TARGET_STORAGES: tuple[str, ...] = ("sparse", "dense")
#: Keypoints are COCO-17 (x, y, score) in the stored image's pixel frame.
NUM_KEYPOINTS = 17

#: Default image storage, chosen from the CUHK01 measurements in docs/hdf5-format.md.
DEFAULT_ENCODING = "raw"
DEFAULT_COMPRESSION = "none"
DEFAULT_IMAGE_SIZE = (256, 128)  # (H, W), the usual re-ID model input
# how an image reaches image_size: stretch (each axis on its own) or pad (aspect kept, margins filled)
RESIZE_MODES = ("stretch", "pad")
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 3
DEFAULT_TARGET_TOPK = 5

# Tolerance on a target row's total mass as given by the caller (before float16 storage).
MASS_TOL = 1e-3
META_CHUNK = 4096
_HASH_ROWS_IMAGES = 256
_HASH_ROWS_META = 65536

# Attributes the writer owns; callers cannot set them through ``attrs``.
RESERVED_ATTRS = frozenset(
    {
        "format", "format_version", "created_by", "label_smoothing", "num_classes",
        "image_encoding", "image_size", "image_compression", "jpeg_quality", "png_level",
        "target_storage", "target_topk", "checksum_algorithm", "splits", "stage_keys",
        "pipeline_key", "image_resize",
    }
)

# Per-sample datasets present in every split, with their on-disk dtypes.
COMMON_FIELDS: dict[str, Any] = {
    "pid": np.int64,
    "label": np.int64,
    "camid": np.int16,
    "origin": np.int64,
    "gen_target_camid": np.int16,
    "gen_pose_id": np.int32,
    "gen_checksum": np.int32,
    "native_hw": np.int32,  # (N, 2)
}
# Datasets every split must hold (a reader refuses a file without them).
REQUIRED_DATASETS = ("images", "pid", "label", "camid", "source", "origin", "gen_target_camid",
                     "gen_pose_id", "gen_checksum", "native_hw", "path")


def element_bytes(arr: Any, vlen: bool) -> Iterator[bytes]:
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


def dataset_sha256(ds: Any) -> str:
    """sha256 (hex) of an h5py dataset's contents, read in blocks of rows.

    Recipe ``sha256-elements-v1``: fixed-size data hashes as its little-endian bytes in C order;
    a variable-length dataset hashes, per element in order, its byte length as uint64
    little-endian then its bytes (strings as UTF-8). Enum data hashes as its integer codes.
    """
    h = hashlib.sha256()
    vlen = h5py.check_vlen_dtype(ds.dtype) is not None or ds.dtype.kind == "O"
    n = ds.shape[0] if ds.shape else 0
    rows = _HASH_ROWS_IMAGES if ds.ndim > 2 or vlen else _HASH_ROWS_META
    for start in range(0, n, rows):
        block = ds[start : start + rows]
        for part in element_bytes(block, vlen):
            h.update(part)
    return h.hexdigest()


def enum_names(ds: Any) -> dict[int, str]:
    """Code -> name of an HDF5 enum dataset, read from the file's own dtype."""
    mapping = h5py.check_enum_dtype(ds.dtype) or {}
    return {int(v): k for k, v in mapping.items()}


def attr_str(v: Any) -> str:
    """An HDF5 attribute as ``str`` (h5py gives ``bytes`` for some string attributes)."""
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)
