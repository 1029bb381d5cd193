"""Atomic writes (the luigi rule): nothing ever opens a final path for writing.

Every output is written to ``.<name>.tmp-<pid>-<rand>`` in the same folder and moved into place
with ``os.replace``, so a file (or folder) that exists under its final name is complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator


def temp_path_for(final: Path) -> Path:
    """A unique temporary sibling of ``final`` (same folder, so ``os.replace`` is atomic)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write; on success move it onto ``final``, on error remove it.

    Works for files and for folders (a folder target must not exist yet, or is replaced only
    when empty: ``os.replace`` cannot overwrite a non-empty directory).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(final: str | os.PathLike[str], text: str) -> None:
    write_bytes(final, text.encode("utf-8"))


def write_json(final: str | os.PathLike[str], obj: Any) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
