"""The reidaug HDF5 dataset format, version 1: one writer, one reader, one verifier.

This package is the contract between the pipeline (the ``export-hdf5`` stage writes it) and the
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
(Zhou et al., "Torchreid", 2019).

Modules, along the format's seams: :mod:`.schema` (names, enums, defaults, the checksum
recipe), :mod:`.targets` (soft targets), :mod:`.writer` (:class:`H5Writer`, atomic),
:mod:`.reader` (:func:`open_h5`), :mod:`.verify` (:func:`verify`). Import the names from here.
"""
from __future__ import annotations

from reidaug.data.h5format.reader import FileInfo, H5File, SplitMeta, open_h5
from reidaug.data.h5format.schema import (
    CHECKSUM_ALGORITHM,
    DEFAULT_COMPRESSION,
    DEFAULT_ENCODING,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_PNG_LEVEL,
    DEFAULT_TARGET_TOPK,
    ENCODINGS,
    FORMAT_NAME,
    FORMAT_VERSION,
    LABEL_SCHEMES,
    NUM_KEYPOINTS,
    SOURCES,
    SPLITS,
    TARGET_STORAGES,
    TRAIN_SPLIT,
    dataset_sha256,
)
from reidaug.data.h5format.targets import densify_target, densify_targets, make_targets, normalize_dense
from reidaug.data.h5format.verify import Problem, verify
from reidaug.data.h5format.writer import H5Writer

__all__ = [
    "CHECKSUM_ALGORITHM", "DEFAULT_COMPRESSION", "DEFAULT_ENCODING", "DEFAULT_IMAGE_SIZE",
    "DEFAULT_JPEG_QUALITY", "DEFAULT_PNG_LEVEL", "DEFAULT_TARGET_TOPK", "ENCODINGS", "FORMAT_NAME",
    "FORMAT_VERSION", "LABEL_SCHEMES", "NUM_KEYPOINTS", "SOURCES", "SPLITS", "TARGET_STORAGES",
    "TRAIN_SPLIT", "FileInfo", "H5File", "H5Writer", "Problem", "SplitMeta", "dataset_sha256",
    "densify_target", "densify_targets", "make_targets", "normalize_dense", "open_h5", "verify",
]
