"""sha256 of a dataset's files, remembered by their stat (the git index rule).

A folder source is keyed by the bytes of its files, not by their mtimes: a dataset that is
copied, restored from a backup or re-synced without ``-t`` gets new mtimes and the same bytes,
and must keep its cache (a re-provisioned ../shared once cost this project an hour of PG2
training). Hashing every byte at every plan would be slow for large sets (MSMT17 is ~2.5 GB),
so each file's digest is remembered beside its ``(size, mtime_ns, ctime_ns, inode)``: a file
whose stat is unchanged is not read again; any change of the four (``os.utime`` changes ctime,
so even a write that restores the old mtime is seen) re-reads it.

The memory is one SQLite file per dataset root, under ``$REIDAUG_HASH_CACHE`` (default
``$XDG_CACHE_HOME/reidaug/file-hashes``, i.e. ``~/.cache/reidaug/file-hashes``): looked up one file
at a time, so a plan's memory does not grow with the dataset. Losing it only costs one re-read; a
folder that cannot be written (or a damaged file) is logged and skipped, never an error. It never
decides a key on its own: a digest is used only when the file's current stat equals the remembered
one. Rows of files that were deleted stay (a few bytes each) and are never used again: a new file
at that path has another ctime.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path

from reidaug.io.checkpoint import file_sha256

log = logging.getLogger(__name__)

FLUSH = 2000  # digests read before they are written to the cache


def cache_dir() -> Path:
    env = os.environ.get("REIDAUG_HASH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reidaug" / "file-hashes"


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class FileHashes:
    """Digests of the files under one root, read from and written to the stat cache.

    >>> hashes = FileHashes(root)
    >>> digest = hashes.sha256("0001/a.jpg", os.stat(root / "0001/a.jpg"))
    >>> hashes.save()
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        real = os.path.realpath(self.root)
        self.path = cache_dir() / f"{hashlib.sha256(real.encode()).hexdigest()[:24]}.sqlite"
        self.read = 0  # files whose bytes were read (the rest came from the cache)
        self.count = 0  # files asked for
        self._pending: list[tuple] = []
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("CREATE TABLE IF NOT EXISTS files (rel TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                       "ctime_ns INTEGER, ino INTEGER, sha256 TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS root (path TEXT)")
            db.execute("INSERT INTO root SELECT ? WHERE NOT EXISTS (SELECT 1 FROM root)", (real,))
            db.commit()
            self._db = db
        except (OSError, sqlite3.Error) as e:  # read-only home, damaged file: hash, just do not remember
            log.debug("file-hash cache %s not used: %s", self.path, e)

    def sha256(self, rel: str, st: os.stat_result) -> str:
        sig = _signature(st)
        self.count += 1
        hit = None
        if self._db is not None:
            try:
                hit = self._db.execute("SELECT size, mtime_ns, ctime_ns, ino, sha256 FROM files WHERE rel = ?",
                                       (rel,)).fetchone()
            except sqlite3.Error as e:
                log.debug("file-hash cache %s: %s", self.path, e)
        if hit is not None and tuple(hit[:4]) == sig:
            return str(hit[4])
        digest = file_sha256(self.root / rel)
        self.read += 1
        self._pending.append((rel, *sig, digest))
        if len(self._pending) >= FLUSH:
            self._flush()
        return digest

    def _flush(self) -> None:
        if self._db is not None and self._pending:
            try:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", self._pending)
                self._db.commit()
            except sqlite3.Error as e:
                log.debug("file-hash cache %s not written: %s", self.path, e)
        self._pending.clear()

    def save(self) -> None:
        """Write what is left and close."""
        self._flush()
        if self._db is not None:
            self._db.close()
            self._db = None
