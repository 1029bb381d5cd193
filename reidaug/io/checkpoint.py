"""Checkpoints: atomic ``torch.save``, a ``torch.load`` that fails with a clear error, and
:func:`state_checksum`, the digest of a state_dict's tensors (the "generator checksum" every fake
carries; unlike hashing a ``torch.save`` file, it does not depend on the pickle or zip layout), and
:func:`file_sha256` (content digests: file params in cache keys, model files in run reports).

torch is imported inside the functions, so importing this module stays cheap (planning a cached
pipeline imports every stage module, and they import this).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from reidaug.errors import DataError
from reidaug.io.atomic import atomic_path, disk_full_error, require_free, write_json


def save_torch(path: str | os.PathLike[str], obj: Any, progress: dict[str, Any] | None = None) -> None:
    """``torch.save`` to a temp name in the same folder, fsync, then rename onto ``path``:
    a kill never leaves a half checkpoint under the final name. ``progress`` (e.g. ``{"step": 500,
    "of": 2000}``) is written beside it as ``<path>.json`` (:func:`checkpoint_progress`), so a plan
    can say where a training will resume without loading torch."""
    import torch

    require_free(path, _tensor_bytes(obj), "a checkpoint")
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch reports ENOSPC as RuntimeError("... unexpected pos ...")
        full = disk_full_error(path, e, "a checkpoint")
        if full is None and isinstance(e, RuntimeError) and "unexpected pos" in str(e):
            full = DataError(f"writing the checkpoint {path} failed ({e}); the disk is probably full. Fix: free "
                             "disk space, then re-run the same command: training resumes from the last checkpoint")
        raise (full or e) from None
    if progress is not None:
        write_json(progress_path(path), progress)


def progress_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_torch` keeps a checkpoint's progress: ``checkpoint.pt`` -> ``checkpoint.pt.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint and its progress file (a finished training drops its full checkpoint)."""
    Path(path).unlink(missing_ok=True)
    progress_path(path).unlink(missing_ok=True)


def checkpoint_progress(folder: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(path relative to folder, progress)`` of every checkpoint under ``folder`` that has a
    progress file and still exists, sorted by path (what a ``--dry-run`` reports for a partial entry)."""
    import json

    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob("*.pt.json")) if folder.is_dir() else []:
        ckpt = p.with_name(p.name[: -len(".json")])
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if ckpt.is_file() and isinstance(info, dict):
            out.append((str(ckpt.relative_to(folder)), info))
    return out


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state: what ``torch.save`` writes, give or take the pickle."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_torch(path: str | os.PathLike[str], where: str, *, weights_only: bool = False) -> Any:
    """Load what :func:`save_torch` wrote, on the CPU; a missing or damaged file is a
    :class:`DataError` that names ``where`` and the fix."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{where}: checkpoint {path} does not exist. Fix: check the path, or run the stage "
                        "that writes it.")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise DataError(f"{where}: checkpoint {path} cannot be read ({type(e).__name__}: {e}). It was not "
                        "written by this version or is damaged; delete it to start that model afresh.") from e


def load_or_set_aside(path: str | os.PathLike[str], where: str, *, weights_only: bool = False) -> Any | None:
    """A training's own checkpoint, to resume from: what :func:`load_torch` returns, or — when the
    file is there but cannot be read (truncated, garbled) — ``None`` after moving it to
    ``<name>.damaged`` with a warning, so the training starts that model afresh instead of failing
    every re-run (a checkpoint is only a shortcut: the result does not depend on it)."""
    import logging

    path = Path(path)
    try:
        return load_torch(path, where, weights_only=weights_only)
    except DataError as e:
        if not path.is_file() or isinstance(e.__cause__, OSError):
            raise  # a read error (EIO, permissions, a stale mount) is not damage: keep the file, say so
        aside = path.with_name(path.name + ".damaged")
        try:
            os.replace(path, aside)
        except OSError as moved:
            raise DataError(f"{where}: the checkpoint {path} cannot be read ({e}) nor moved aside ({moved}). Fix: "
                            "delete it to train that model afresh") from None
        progress_path(path).unlink(missing_ok=True)
        logging.getLogger(__name__).warning("%s: the checkpoint %s cannot be read (%s); moved to %s, training "
                                            "starts from step 0", where, path, str(e.__cause__ or e)[:200], aside)
        return None


def state_checksum(state_dict: dict[str, Any]) -> str:
    """sha256 over the sorted tensor names, dtypes, shapes and bytes of a (nested) state_dict."""
    import torch

    h = hashlib.sha256()

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                visit(f"{prefix}.{k}" if prefix else str(k), value[k])
        elif isinstance(value, torch.Tensor):
            # reshape(-1), not contiguous(): a channels_last (C, K, 1, 1) weight counts as contiguous
            # with a last stride of K, and a byte view needs stride 1 (it failed on CUDA, where
            # channels_last is on); reshape copies any other layout into logical order
            t = value.detach().cpu().reshape(-1)
            h.update(f"{prefix}|{value.dtype}|{tuple(value.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{prefix}|{value!r}|".encode())

    visit("", state_dict)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
