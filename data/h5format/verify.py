"""Check a reidaug HDF5 file: every dataset's sha256, lengths and field invariants."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

import h5py
import numpy as np

from reidaug.data.h5format.reader import H5File, open_h5
from reidaug.data.h5format.schema import TRAIN_SPLIT, attr_str, dataset_sha256
from reidaug.errors import DataError


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (``/split/dataset``) and what."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _iter_datasets(h5: Any) -> Iterable[tuple[str, Any]]:
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
            if found != attr_str(expected):
                problems.append(Problem(
                    f"/{name}",
                    f"checksum mismatch: stored sha256 {attr_str(expected)[:16]}..., data hashes to "
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
    real_code = next((c for c, name in m.source_names.items() if name == "real"), 0)
    no_camera = (m.camid == -1) & (m.origin == -1) & (m.pid == -1) & (m.source != real_code)
    if np.any((m.camid < 0) & ~no_camera):
        out.append(Problem(f"/{split}/camid", "has negative camera ids (must be 0-based; -1 only for a fake with no "
                                              "identity)."))
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
