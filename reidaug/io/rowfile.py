"""Row arrays on disk that are written and read a block at a time, so memory does not grow with N.

A :class:`RowFile` is a plain ``.npy`` file (numpy's format 1.0, C order), so any reader opens it
with ``np.load``; this module only adds the two things the evaluation needs at scale:

- :func:`write_rows` yields a :class:`RowWriter` that takes rows in order (``append``) and writes
  them with ordinary ``write`` calls: the rows never sit in the process's memory, and the file
  appears under its final name only when every declared row is there (:func:`atomic_path`).
- :meth:`RowFile.block` reads rows ``[start, stop)`` into a fresh array with ``readinto``, not a
  memory map: a mapped file's pages count in the reader's resident memory as they are touched, so
  a full pass over a 10 GB map shows as 10 GB of RSS even though the kernel may drop the pages.

Used for re-ID features (:func:`reidaug.train.features.extract_features` ``out=``) that
:func:`reidaug.eval.metrics.evaluate` ranks gallery block by gallery block.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from reidaug.errors import DataError
from reidaug.io.atomic import atomic_path


@dataclass(frozen=True)
class RowFile:
    """An (N, D) array in a ``.npy`` file, read a block of rows at a time."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    offset: int  # bytes of the .npy header

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RowFile":
        """The file's shape and dtype from its header; a missing or foreign file is a DataError."""
        p = Path(path)
        try:
            with open(p, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
        except FileNotFoundError:
            raise DataError(f"row file {p} does not exist. Fix: write it with reidaug.io.rowfile.write_rows "
                            "(or np.save an (N, D) array there).") from None
        except ValueError as err:
            raise DataError(f"{p} is not a .npy file ({err}). Fix: pass the file write_rows wrote.") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise DataError(f"{p}: expected a C-order (N, D) numeric array; found shape {shape}, "
                            f"{'Fortran' if fortran else 'C'} order, dtype {dtype}. Fix: save rows as (N, D).")
        return cls(p, (int(shape[0]), int(shape[1])), np.dtype(dtype), offset)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (clipped to N) as a new array; one ``readinto``, no memory map."""
        start, stop = max(0, start), min(stop, self.shape[0])
        out = np.empty((max(0, stop - start), self.shape[1]), self.dtype)
        if out.size:
            row = self.shape[1] * self.dtype.itemsize
            with open(self.path, "rb") as f:
                f.seek(self.offset + start * row)
                got = f.readinto(memoryview(out).cast("B"))
            if got != out.nbytes:
                raise DataError(f"{self.path}: rows {start}-{stop} are cut short ({got} of {out.nbytes} bytes): "
                                "the file is truncated. Fix: write it again.")
        return out

    def blocks(self, rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, rows)`` over the whole file, ``rows`` at a time."""
        for start in range(0, self.shape[0], rows):
            stop = min(start + rows, self.shape[0])
            yield start, stop, self.block(start, stop)

    def read(self) -> np.ndarray:
        """The whole array in memory (for what needs it whole, e.g. re-ranking)."""
        return self.block(0, self.shape[0])


class RowWriter:
    """Appends rows in order to an open ``.npy`` file whose header already declares N rows."""

    def __init__(self, f, shape: tuple[int, int], dtype: np.dtype) -> None:
        self._f, self.shape, self.dtype, self.written = f, shape, dtype, 0

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1]:
            raise DataError(f"expected rows of shape (n, {self.shape[1]}); got {rows.shape}")
        if self.written + rows.shape[0] > self.shape[0]:
            raise DataError(f"row file holds {self.shape[0]} rows; {self.written + rows.shape[0]} were written")
        self._f.write(memoryview(rows).cast("B"))
        self.written += rows.shape[0]


@contextlib.contextmanager
def write_rows(path: str | os.PathLike[str], shape: tuple[int, int], dtype=np.float32) -> Iterator[RowWriter]:
    """Write an (N, D) ``.npy`` file row block by row block; it appears at ``path`` only when all N
    rows are written (fewer is a DataError and nothing is left behind)."""
    n, d = int(shape[0]), int(shape[1])
    dt = np.dtype(dtype)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": (n, d)})
        writer = RowWriter(f, (n, d), dt)
        yield writer
        if writer.written != n:
            raise DataError(f"{path}: {writer.written} of {n} declared rows were written")
