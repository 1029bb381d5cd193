"""sha256 of a dataset's files, remembered by their stat (the git index rule).

A folder source is keyed by the bytes of its files, not by their mtimes: a dataset that is
copied, restored from a backup or re-synced without ``-t`` gets new mtimes and the same bytes,
and must keep its cache (a re-provisioned ../shared once cost this project an hour of PG2
training). Hashing every byte at every plan would be slow for large sets (MSMT17 is ~2.5 GB),
so each file's digest is remembered beside its ``(size, mtime_ns, ctime_ns, inode)``: a file
whose stat is unchanged is not read again; any change of the four (``os.utime`` changes ctime,
so even a write that restores the old mtime is seen) re-reads it.

The memory lives outside the workspace, one JSON file per dataset root, under
``$REIDAUG_HASH_CACHE`` (default ``$XDG_CACHE_HOME/reidaug/file-hashes``, i.e.
``~/.cache/reidaug/file-hashes``). Losing it only costs one re-read; an unwritable folder is
logged and skipped, never an error. It never decides a key on its own: a digest is used only when
the file's current stat equals the remembered one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from reidaug.io.atomic import write_text

log = logging.getLogger(__name__)

BLOCK = 1 << 20


def cache_dir() -> Path:
    env = os.environ.get("REIDAUG_HASH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reidaug" / "file-hashes"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class FileHashes:
    """Digests of the files under one root, read back from and saved to the stat cache.

    >>> hashes = FileHashes(root); digest = hashes.sha256("0001/a.jpg", os.stat(...)); hashes.save()
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        real = os.path.realpath(self.root)
        self.path = cache_dir() / f"{hashlib.sha256(real.encode()).hexdigest()[:24]}.json"
        self.old: dict[str, list] = {}
        self.new: dict[str, list] = {}
        self.read = 0  # files whose bytes were read this time (the rest came from the cache)
        try:
            data = json.loads(self.path.read_text())
            if data.get("root") == real and isinstance(data.get("files"), dict):
                self.old = data["files"]
        except (OSError, ValueError, AttributeError):
            pass  # no cache yet, or a damaged one: everything is read
        self._real = real

    def sha256(self, rel: str, st: os.stat_result) -> str:
        sig = _signature(st)
        hit = self.old.get(rel)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == sig:
            digest = hit[4]
        else:
            digest = sha256_file(self.root / rel)
            self.read += 1
        self.new[rel] = [*sig, digest]
        return digest

    def save(self) -> None:
        """Remember this walk's files (files gone since the last walk are forgotten)."""
        if self.new == self.old:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps({"root": self._real, "files": self.new}, separators=(",", ":")))
        except OSError as e:  # a read-only home: hashing still works, it is just not remembered
            log.debug("file-hash cache not written to %s: %s", self.path, e)
