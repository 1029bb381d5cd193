"""Atomic writes (the luigi rule): nothing ever opens a final path for writing.

Every output is written to ``.<name>.tmp-<pid>-<rand>`` in the same folder and moved into place
with ``os.replace``, so a file (or folder) that exists under its final name is complete. This is
the only module that spells the temp-name idiom; everything else calls it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from reidaug.errors import DataError
from reidaug.io import faults


def temp_path_for(final: Path, kind: str = "tmp") -> Path:
    """A unique hidden sibling of ``final`` (same folder, so ``os.replace`` is atomic).

    ``kind`` is ``tmp`` for what is being written, ``old`` for what is being replaced.
    """
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """True for the names :func:`temp_path_for` makes (a killed writer may leave them behind)."""
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)


def remove(path: Path) -> None:
    """Remove a file or folder if it is there (clean-up after a failed write)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, replace_dir: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success move it onto ``final``, on error remove it.

    Works for files and for folders. ``os.replace`` cannot overwrite a non-empty folder: with
    ``replace_dir=True`` an existing folder is first moved aside to an ``.old-`` name and deleted
    once the new one is in place, so the old folder stays whole until the new one is.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        faults.check_write(str(final))  # the fault suite's injected ENOSPC (inert otherwise)
        yield tmp
        if replace_dir and final.is_dir() and not final.is_symlink():
            old = temp_path_for(final, "old")
            os.replace(final, old)
            os.replace(tmp, final)
            remove(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


#: room kept free beyond what a write needs (HDF5 metadata, other writers): 1 MiB + 5 %
FREE_MARGIN = 1 << 20


def require_free(path: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Raise a clear :class:`DataError` unless the file system of ``path`` (a file to be written, or
    its folder) has ``nbytes`` plus :data:`FREE_MARGIN` free.

    Checked *before* writing: HDF5 and ``torch.save`` fail badly once a write hits ENOSPC (h5py
    printed a cascade of tracebacks, then segfaulted closing the file; torch raised ``unexpected
    pos``). The partial cache entry stays consistent, and a run resumes once space is freed.
    """
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    margin = FREE_MARGIN + nbytes // 20
    if free < nbytes + margin:
        raise DataError(f"no space left for {what}: writing {Path(path)} needs about {_mib(nbytes)} (+ "
                        f"{_mib(margin)} kept free), the file system of {folder} has {_mib(free)} free. "
                        "Fix: free disk space (e.g. `reidaug cache gc`) or run with a workspace elsewhere (-w), "
                        "then re-run the same command: finished work is kept")


def disk_full_error(path: str | os.PathLike[str], exc: BaseException, what: str) -> DataError | None:
    """The clear error for an ENOSPC that a write raised anyway (a race with another writer), or None."""
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
        return DataError(f"no space left on device while writing {what} to {Path(path)}. Fix: free disk space "
                         "or run with a workspace elsewhere (-w), then re-run the same command: finished work "
                         "is kept")
    return None


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``final`` atomically, fsynced before the rename."""
    try:  # small files: ENOSPC surfaces as a clean OSError here, translated below
        with atomic_path(final) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        raise (disk_full_error(final, e, "a file") or e) from None


def write_text(final: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text with ``\\n`` line ends, atomically."""
    write_bytes(final, text.encode("utf-8"))


def write_json(final: str | os.PathLike[str], obj: Any) -> None:
    """Indented JSON with sorted keys (stable bytes for equal objects), atomically."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def encode_png(rgb: np.ndarray) -> bytes:
    """RGB (or grey) uint8 ``(H, W[, 3])`` → PNG bytes with OpenCV (deterministic for equal pixels)."""
    import cv2

    arr = np.ascontiguousarray(rgb)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr)
    if not ok:
        raise DataError(f"OpenCV could not encode a PNG of shape {arr.shape} and dtype {arr.dtype}; "
                        "expected uint8 (H, W, 3) RGB or (H, W) grey.")
    return buf.tobytes()


def write_png(final: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """An RGB uint8 picture as a PNG file, atomically; returns the path."""
    write_bytes(final, encode_png(rgb))
    return Path(final)
