"""What a stage function sees: its parameters, its inputs, and where it may write.

Both classes are plain frozen dataclasses of paths and values, so they pickle to dask workers
(threads, processes or a distributed cluster) unchanged. What a stage loads once and reuses
across its chunks (a generator, an estimator, a table) lives in :meth:`StageContext.memo`, a
per-process cache outside the context, so the context itself stays small and picklable.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import h5py
import numpy as np

from reidaug.errors import CacheError
from reidaug.io.atomic import atomic_path, require_free
from reidaug.pipeline.hashing import seed_for
from reidaug.pipeline.stage import Params

CHUNK_DIR = "chunks"
#: per-chunk run statistics (timings, throughput, device, resume provenance): not results, so not
#: in the chunk files (which must be byte-identical between runs); folded into meta.json at commit
STATS_DIR = "stats"
T = TypeVar("T")

#: most memo entries a process keeps (least recently used go first): a long-lived dask worker
#: runs many stages, and the runner's release reaches only its own process
MEMO_LIMIT = 16
_memo: collections.OrderedDict[tuple[str, str, int], Any] = collections.OrderedDict()
_memo_lock = threading.Lock()


def release_memo(stage_key: str) -> int:
    """Drop this process's memo entries of the stage with cache key ``stage_key`` (the runner
    calls it when the stage is done); returns how many were dropped."""
    with _memo_lock:
        gone = [k for k in _memo if k[0] == stage_key]
        for k in gone:
            del _memo[k]
    return len(gone)


def chunk_name(index: int, suffix: str = ".h5") -> str:
    return f"{index:05d}{suffix}"


def write_h5_chunk(final: Path, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Path:
    """Write ``arrays`` to an HDF5 file atomically, with byte-stable output.

    Timestamps are off (``track_times=False``) so the same arrays give the same bytes;
    strings are stored as variable-length UTF-8; ``attrs`` values are stored as JSON text.
    """
    require_free(final, sum(_nbytes(v) for v in arrays.values()), "a chunk file")
    with atomic_path(final) as tmp:
        with h5py.File(tmp, "w", libver="earliest") as f:
            for name in sorted(arrays):
                value = arrays[name]
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, np.ndarray)):
                    # variable-length byte strings (encoded images): vlen uint8
                    data = np.empty(len(value), dtype=object)
                    data[:] = [np.frombuffer(v, np.uint8) if isinstance(v, bytes) else v for v in value]
                    f.create_dataset(name, data=data, dtype=h5py.vlen_dtype(np.uint8), track_times=False)
                elif isinstance(value, (list, tuple)) and (not value or isinstance(value[0], str)):
                    data = np.asarray(value, dtype=object)
                    f.create_dataset(name, data=data, dtype=h5py.string_dtype(), track_times=False)
                else:
                    f.create_dataset(name, data=np.asarray(value), track_times=False)
            for k in sorted(attrs or {}):
                f.attrs[k] = json.dumps((attrs or {})[k], sort_keys=True)
    return final


def _nbytes(value: Any) -> int:
    """About the bytes a chunk array takes on disk (encoded images: their lengths)."""
    if isinstance(value, (list, tuple)):
        return sum(len(v) if isinstance(v, (bytes, str)) else np.asarray(v).nbytes for v in value)
    return np.asarray(value).nbytes


def read_h5_chunk(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a chunk written by :func:`write_h5_chunk`: (arrays, attrs)."""
    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            for name, ds in f.items():
                if h5py.check_string_dtype(ds.dtype) is not None:
                    arrays[name] = ds.asstr()[()]
                else:
                    arrays[name] = ds[()]
            attrs = {k: json.loads(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise CacheError(f"cannot read chunk file {path}: {e}. Remove it and re-run to recompute it.") from e
    return arrays, attrs


@dataclasses.dataclass(frozen=True)
class InputHandle:
    """One resolved input: an upstream stage's output inside its finished cache entry."""

    stage: str  # upstream instance name
    output: str
    key: str
    entry_dir: Path
    relpath: str
    meta: Mapping[str, Any]

    @property
    def path(self) -> Path:
        return self.entry_dir / self.relpath

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.meta.get("summary") or {}

    def chunk_paths(self) -> list[Path]:
        d = self.entry_dir / CHUNK_DIR
        n = int(self.meta.get("num_chunks", 0))
        paths = [d / chunk_name(i) for i in range(n)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise CacheError(
                f"cache entry {self.entry_dir} of stage {self.stage} lacks {len(missing)} chunk "
                f"file(s), e.g. {missing[0].name}. Re-run with --force {self.stage}."
            )
        return paths

    def iter_chunks(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        for p in self.chunk_paths():
            yield read_h5_chunk(p)


@dataclasses.dataclass(frozen=True)
class StageContext:
    """Everything a stage's ``plan`` / ``run_chunk`` / ``finalize`` may use."""

    stage: str  # instance name in the pipeline
    spec_name: str
    key: str
    params: Params
    inputs: Mapping[str, InputHandle | None]
    work_dir: Path  # <key>.partial while running; becomes the cache entry when complete
    base_dir: Path  # folder of the pipeline YAML: relative paths in params resolve here
    num_chunks: int = 0
    lineage: Mapping[str, str] = dataclasses.field(default_factory=dict)  # this stage and its ancestors -> key
    numerics: str | None = None  # what the key was made with (graph.key_material): None = CPU fp32

    def input(self, slot: str) -> InputHandle:
        handle = self.inputs.get(slot)
        if handle is None:
            raise CacheError(f"stage {self.stage}: input {slot!r} is not bound")
        return handle

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def chunk_path(self, index: int, suffix: str = ".h5") -> Path:
        return self.work_dir / CHUNK_DIR / chunk_name(index, suffix)

    def write_chunk(self, index: int, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> Path:
        return write_h5_chunk(self.chunk_path(index), arrays, attrs)

    def iter_own_chunks(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """For ``finalize``: this stage's finished chunks, in order."""
        for i in range(self.num_chunks):
            yield read_h5_chunk(self.chunk_path(i))

    def record(self, index: int, stats: Mapping[str, Any]) -> None:
        """Keep chunk ``index``'s run statistics — how long it took, how fast, on which device, from
        which checkpoint it resumed — beside the chunk, never in it: two runs of a chunk give the
        same chunk file, not the same timings. Call it before :meth:`write_chunk` (a finished chunk
        then always has its record); the cache folds the records into ``meta.json``
        (``chunk_stats``) when the entry is committed."""
        from reidaug.io.atomic import write_json

        write_json(self.work_dir / STATS_DIR / chunk_name(index, ".json"), dict(stats))

    def own_stats(self) -> list[dict[str, Any]]:
        """For ``finalize``: each chunk's :meth:`record` (``{}`` for a chunk that has none, e.g. one
        finished by an older version before a resume)."""
        return [read_stats(self.work_dir / STATS_DIR / chunk_name(i, ".json")) for i in range(self.num_chunks)]


    def seed(self, index: int) -> int:
        """The seed of chunk ``index``: a function of the cache key only, so resume is exact."""
        return seed_for(self.key, index)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(self.seed(index))

    def memo(self, name: str, factory: Callable[[], T]) -> T:
        """``factory()``'s result, built once per (this stage's key, ``name``, calling thread) in
        this process and reused by later chunks: loading a model per chunk would dominate. Per
        thread, since models (TFLite, MediaPipe, torch with autocast) must not be shared between
        threads. ``name`` must say everything the value depends on beyond the stage's key (e.g. a
        nonsemantic device). Freed by :func:`release_memo` when the stage ends, and beyond
        :data:`MEMO_LIMIT` entries, least recently used first."""
        key = (self.key, name, threading.get_ident())
        with _memo_lock:
            if key in _memo:
                _memo.move_to_end(key)
                return _memo[key]
        value = factory()  # outside the lock: slow, and only this thread builds this key
        with _memo_lock:
            _memo[key] = value
            while len(_memo) > MEMO_LIMIT:
                _memo.popitem(last=False)
        return value


def read_stats(path: Path) -> dict[str, Any]:
    """A chunk's run record, or ``{}`` where there is none or it cannot be read (it is never a result)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
