"""Deterministic hashing for cache keys (the DVC recipe).

A cache key is the sha256 of canonical JSON (sorted keys, no whitespace, UTF-8) of what gives
an output its meaning. Only values with one obvious canonical form are accepted: None, bool,
int, finite float, str, lists/tuples, dicts with str keys, pydantic models and dataclasses of
those, and :class:`FileRef` (a file hashed by content, not by path). Anything else raises
:class:`~reidaug.errors.HashError` instead of falling back to a random token, as dask's
``tokenize`` would (dask#6555): a key that changes from run to run silently disables the cache.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from pathlib import Path, PurePath
from typing import Any, Iterable, Mapping

from reidaug.errors import HashError
from reidaug.io.checkpoint import file_sha256



@dataclasses.dataclass(frozen=True)
class FileRef:
    """A parameter that names a file (checkpoint, model config): hashed by content, not path.

    Moving a checkpoint keeps the key; changing one byte of it changes the key.
    """

    path: Path

    def canonical(self) -> dict[str, str]:
        p = Path(self.path)
        if not p.is_file():
            raise HashError(
                f"cannot hash file parameter: {p} does not exist or is not a file. "
                "Fix the path in the pipeline YAML (paths are relative to the YAML's folder)."
            )
        return {"__file_sha256__": file_sha256(p)}


def canonicalize(value: Any, where: str = "value") -> Any:
    """Turn ``value`` into plain JSON types, or raise HashError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HashError(f"cannot hash {where}={value!r}: NaN and infinity have no canonical form")
        # repr round-trips exactly; 1.0 and 1 stay distinct on purpose (different types).
        return {"__float__": repr(value)}
    if isinstance(value, enum.Enum):
        return canonicalize(value.value, where)
    if isinstance(value, FileRef):
        return value.canonical()
    if isinstance(value, PurePath):
        return {"__path__": value.as_posix()}
    if isinstance(value, (list, tuple)):
        return [canonicalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise HashError(f"cannot hash {where}: dict key {k!r} is not a string")
            out[k] = canonicalize(v, f"{where}.{k}")
        return out
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):  # pydantic v2
        return canonicalize({k: getattr(value, k) for k in type(value).model_fields}, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonicalize({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    raise HashError(
        f"cannot hash {where} of type {type(value).__name__}: only None, bool, int, float, str, "
        "paths, lists, str-keyed dicts, dataclasses and pydantic models of these, and FileRef "
        "have a deterministic form. Convert it to one of these in the stage's parameters."
    )


def canonical_json(value: Any, where: str = "value") -> str:
    """Canonical JSON text: sorted keys, compact separators, ASCII-safe."""
    return json.dumps(canonicalize(value, where), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(value: Any, where: str = "value") -> str:
    """sha256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(value, where).encode("ascii")).hexdigest()


class Digest(str):
    """A value already reduced to its :func:`stable_hash` (a fingerprint too large to hold whole,
    hashed while it was made, by :func:`stable_hash_streamed`): the key uses it as it is."""


def stable_hash_streamed(head: Mapping[str, Any], list_key: str, items: Iterable[Any],
                         where: str = "value") -> Digest:
    """``stable_hash({**head, list_key: list(items)})`` without ever holding the list or its JSON:
    the canonical JSON is fed to sha256 piece by piece (the same bytes, so the same digest and keys).
    For a dataset's per-file fingerprint, whose list grows with the dataset."""
    if list_key in head:
        raise HashError(f"cannot hash {where}: {list_key!r} is both the streamed list and a head key")
    h = hashlib.sha256(b"{")
    for i, key in enumerate(sorted([*head, list_key])):
        h.update((("," if i else "") + json.dumps(key, ensure_ascii=True) + ":").encode("ascii"))
        if key != list_key:
            h.update(canonical_json(head[key], f"{where}.{key}").encode("ascii"))
            continue
        h.update(b"[")
        for j, item in enumerate(items):
            h.update(((b"," if j else b"") + canonical_json(item, f"{where}.{key}[{j}]").encode("ascii")))
        h.update(b"]")
    h.update(b"}")
    return Digest(h.hexdigest())


def seed_for(key: str, chunk: int) -> int:
    """A 63-bit seed derived from a cache key and a chunk index (resumed chunks are bit-identical)."""
    digest = hashlib.sha256(f"{key}:{chunk}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
