"""The content-addressed stage cache.

Layout under a workspace::

    <workspace>/cache/<stage>/<key[:2]>/<key>/            a finished entry
        meta.json                                        params, versions, timings, chunk count
        chunks/00000.h5 ...                              one file per chunk
        <other outputs written by finalize>
    <workspace>/cache/<stage>/<key[:2]>/<key>.partial/   the same, while being computed
        plan.json                                        chunk count and key material

A chunk file that exists is a finished chunk (it was written under a temp name and moved
into place). An entry whose ``meta.json`` is missing or unreadable is moved aside to
``<key>.corrupt-<n>`` with a warning and recomputed; it never crashes a run.

``meta.json`` records every chunk file's size and sha256 (``chunk_files``). A run checks the sizes
of a finished entry before it skips it (a ``stat`` per chunk, so a cached re-run stays fast);
``reidaug cache verify`` checks the sha256 too. A damaged entry is reopened as a partial one
without its damaged chunks, so the run recomputes those chunks only (and finalize), with one
warning that names them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from reidaug.errors import CacheError
from reidaug.io.atomic import is_temp_name, write_json
from reidaug.pipeline.context import CHUNK_DIR, STATS_DIR, chunk_name, read_stats

log = logging.getLogger(__name__)

META = "meta.json"
PLAN = "plan.json"


@dataclasses.dataclass(frozen=True)
class EntryState:
    status: str  # "cached" | "partial" | "missing"
    done: int = 0  # finished chunks
    total: int | None = None  # planned chunks (None when never planned)
    meta: dict[str, Any] | None = None


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def chunk_manifest(chunks: Path) -> dict[str, dict[str, Any]]:
    """``{file name: {"size", "sha256"}}`` of the finished chunk files in ``chunks``."""
    out = {}
    for name in sorted(os.listdir(chunks)) if chunks.is_dir() else []:
        if is_temp_name(name):
            continue
        h = hashlib.sha256()
        with open(chunks / name, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out[name] = {"size": (chunks / name).stat().st_size, "sha256": h.hexdigest()}
    return out


def damaged_chunks(entry: Path, meta: dict[str, Any], *, full: bool = False) -> dict[str, str]:
    """``{chunk file: what is wrong}`` for a finished entry, against its ``meta.json``: a missing
    file or another size (a ``stat`` each), and with ``full`` another sha256. Entries written before
    ``chunk_files`` existed are not checked."""
    bad = {}
    for name, rec in (meta.get("chunk_files") or {}).items():
        path = entry / CHUNK_DIR / name
        try:
            size = path.stat().st_size
        except OSError:
            bad[name] = "missing"
            continue
        if size != rec["size"]:
            bad[name] = f"{size:,} bytes instead of {rec['size']:,}"
        elif full:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            if h.hexdigest() != rec["sha256"]:
                bad[name] = "contents changed (sha256 differs)"
    return bad


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class Cache:
    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self.root = self.workspace / "cache"

    # -- paths -------------------------------------------------------------------------------
    def entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def partial_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / f"{key}.partial"

    # -- state -------------------------------------------------------------------------------
    def load_meta(self, stage: str, key: str, *, repair: bool = False) -> dict[str, Any] | None:
        """``meta.json`` of a finished entry; None when absent or corrupt.

        With ``repair`` (only a run holding the workspace lock) a corrupt entry is moved aside
        so it can be recomputed; read-only commands (status, --dry-run) never change the cache.
        """
        entry = self.entry_dir(stage, key)
        if not entry.is_dir():
            return None
        meta = read_json_object(entry / META)
        if meta is None or meta.get("key") != key:
            if not repair:
                log.warning("cache entry %s is corrupted (meta.json missing or unreadable); a run will recompute it",
                            entry)
                return None
            aside = self._set_aside(entry)
            log.warning(
                "cache entry %s is corrupted (meta.json missing, unreadable or for another key); "
                "moved it to %s and will recompute it", entry, aside.name,
            )
            return None
        return meta

    def _set_aside(self, entry: Path) -> Path:
        n = 0
        while (aside := entry.with_name(f"{entry.name}.corrupt-{n}")).exists():
            n += 1
        os.replace(entry, aside)
        return aside

    def done_chunks(self, stage: str, key: str) -> set[int]:
        chunks = self.partial_dir(stage, key) / CHUNK_DIR
        if not chunks.is_dir():
            return set()
        done = set()
        for name in os.listdir(chunks):
            if is_temp_name(name):
                continue  # a chunk a killed run was writing: not finished
            stem, _, _suffix = name.partition(".")
            if stem.isdigit():
                done.add(int(stem))
        return done

    def read_plan(self, stage: str, key: str) -> dict[str, Any] | None:
        return read_json_object(self.partial_dir(stage, key) / PLAN)

    def state(self, stage: str, key: str, *, repair: bool = False) -> EntryState:
        meta = self.load_meta(stage, key, repair=repair)
        if meta is not None:
            n = int(meta.get("num_chunks", 0))
            bad = damaged_chunks(self.entry_dir(stage, key), meta)
            if not bad:
                return EntryState("cached", n, n, meta)
            what = ", ".join(f"{name} ({why})" for name, why in sorted(bad.items()))
            if not repair:
                log.warning("cache entry %s has damaged chunk files: %s; a run will recompute them",
                            self.entry_dir(stage, key), what)
                return EntryState("partial", n - len(bad), n)
            self.reopen(stage, key, sorted(bad), n)
            log.warning("cache entry %s had damaged chunk files: %s; reopened it, only those chunks are "
                        "recomputed", self.entry_dir(stage, key), what)
        partial = self.partial_dir(stage, key)
        if partial.is_dir():
            plan = self.read_plan(stage, key) or {}
            total = plan.get("num_chunks")
            done = self.done_chunks(stage, key)
            if total is not None:
                done = {i for i in done if i < total}
            return EntryState("partial", len(done), total)
        return EntryState("missing")

    # -- writes ------------------------------------------------------------------------------
    def reopen(self, stage: str, key: str, damaged: list[str], num_chunks: int) -> Path:
        """Turn a finished entry back into a partial one without the ``damaged`` chunk files (the
        caller holds the workspace lock), so the next run recomputes only those chunks."""
        entry, partial = self.entry_dir(stage, key), self.partial_dir(stage, key)
        if partial.exists():  # a forced run's leftovers: the finished entry's chunks are the better start
            shutil.rmtree(partial)
        os.replace(entry, partial)
        for name in damaged:
            (partial / CHUNK_DIR / name).unlink(missing_ok=True)
        old_stats = (read_json_object(partial / META) or {}).get("chunk_stats") or []
        for i, stats in enumerate(old_stats):  # the kept chunks keep their run records
            if stats and isinstance(stats, dict) and chunk_name(i) not in damaged:
                write_json(partial / STATS_DIR / chunk_name(i, ".json"), stats)
        (partial / META).unlink(missing_ok=True)
        write_json(partial / PLAN, {"num_chunks": num_chunks, "key": key, "forced": False, "reopened": damaged})
        return partial

    def prepare(self, stage: str, key: str, *, forced: bool = False) -> Path:
        """Create (or reuse) the partial folder before the stage plans; returns it.

        A forced run starts afresh unless the partial folder was itself made by a forced run
        of this key (then it resumes it: the resume command of a failed ``--force`` run keeps
        ``--force``). Temp files of a killed run and old error reports are removed.
        """
        partial = self.partial_dir(stage, key)
        if forced and partial.exists() and not (self.read_plan(stage, key) or {}).get("forced"):
            shutil.rmtree(partial)  # a partial folder is never an output
        (partial / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
        for folder in (partial, partial / CHUNK_DIR):
            for name in os.listdir(folder):
                if is_temp_name(name):  # half-written by a killed run (we hold the workspace lock)
                    stale = folder / name
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        shutil.rmtree(partial / "errors", ignore_errors=True)
        return partial

    def record_plan(self, stage: str, key: str, plan: dict[str, Any]) -> None:
        """Write plan.json; a different chunk count under the same key empties ``chunks/`` only."""
        partial = self.partial_dir(stage, key)
        old = self.read_plan(stage, key)
        if old is not None and old.get("num_chunks") != plan.get("num_chunks"):
            log.warning(
                "stage %s: the plan changed from %s to %s chunks under the same key; "
                "its finished chunks are discarded", stage, old.get("num_chunks"), plan.get("num_chunks"),
            )
            shutil.rmtree(partial / CHUNK_DIR)
            (partial / CHUNK_DIR).mkdir()
        write_json(partial / PLAN, plan)

    def missing_chunks(self, stage: str, key: str, num_chunks: int) -> list[int]:
        done = self.done_chunks(stage, key)
        return [i for i in range(num_chunks) if i not in done]

    def commit(self, stage: str, key: str, meta: dict[str, Any]) -> Path:
        """Write meta.json into the partial folder and move it into place in one rename."""
        partial = self.partial_dir(stage, key)
        final = self.entry_dir(stage, key)
        missing = self.missing_chunks(stage, key, int(meta["num_chunks"]))
        if missing:  # never let an incomplete entry look finished
            raise CacheError(
                f"stage {stage}: {len(missing)} of {meta['num_chunks']} chunk files are missing from {partial} "
                f"(e.g. {chunk_name(missing[0])}) at commit time; was the folder removed while running, or did a "
                "worker write elsewhere (a relative workspace on a remote cluster)? Re-run the same command."
            )
        shutil.rmtree(partial / "errors", ignore_errors=True)
        num = int(meta["num_chunks"])
        stats = [read_stats(partial / STATS_DIR / chunk_name(i, ".json")) for i in range(num)]
        meta = {**meta, "chunk_files": chunk_manifest(partial / CHUNK_DIR)}
        if any(stats):
            meta["chunk_stats"] = stats
        write_json(partial / META, meta)
        (partial / PLAN).unlink(missing_ok=True)
        shutil.rmtree(partial / STATS_DIR, ignore_errors=True)  # now in meta.json
        old = None
        if final.exists():  # --force: keep the old entry until the new one is in place
            old = final.with_name(f"{final.name}.old-{os.getpid()}-{int(time.time())}")
            os.replace(final, old)
        os.replace(partial, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # -- listing -----------------------------------------------------------------------------
    def iter_entries(self) -> Iterator[tuple[str, str, Path, str]]:
        """Yield (stage, key, path, kind) for every entry; kind = cached|partial|corrupt|stale."""
        if not self.root.is_dir():
            return
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for prefix in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                for entry in sorted(p for p in prefix.iterdir() if p.is_dir()):
                    name = entry.name
                    key, _, tail = name.partition(".")
                    kind = "cached" if not tail else tail.split("-")[0]
                    kind = {"partial": "partial", "corrupt": "corrupt", "old": "stale"}.get(kind, kind)
                    yield stage_dir.name, key, entry, kind
