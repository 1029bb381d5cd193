"""Three tiny stages that exercise the pipeline machinery, not re-ID.

``selftest-source -> selftest-map -> selftest-reduce`` draws seeded random numbers, transforms
them and sums them. They exist so that the cache, resume and distributed execution can be
tested and benchmarked in seconds (``configs/selftest.yaml``), and so that a user can check a
dask cluster end to end before sending it hours of GPU work:
``reidaug run configs/selftest.yaml --scheduler tcp://HOST:8786``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import Field

from reidaug.errors import StageError
from reidaug.io.atomic import write_json
from reidaug.pipeline.context import StageContext, read_h5_chunk
from reidaug.pipeline.stage import Params, StageSpec


class SourceParams(Params):
    num_items: int = Field(1000, ge=0, description="how many numbers to draw")
    chunk_size: int = Field(10, ge=1)
    dim: int = Field(4, ge=1, description="numbers per item")
    root: str | None = Field(None, description="optional folder whose files fingerprint this source")
    sleep_ms: float = Field(0.0, ge=0, description="simulated work per chunk (does not change results)")


class MapParams(Params):
    scale: float = 1.0
    noise: float = Field(0.01, ge=0)
    sleep_ms: float = Field(0.0, ge=0)
    fail_on_chunk: int | None = Field(None, description="raise in this chunk (tests failure reports)")


class ReduceParams(Params):
    pass


def _nchunks(n: int, size: int) -> int:
    return (n + size - 1) // size


def _fingerprint(params: SourceParams, base_dir: Path):
    """Relative path, size and mtime of each file under ``root`` (None when no root)."""
    if params.root is None:
        return None
    root = Path(params.root) if Path(params.root).is_absolute() else base_dir / params.root
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def source_plan(ctx: StageContext) -> int:
    return _nchunks(ctx.params.num_items, ctx.params.chunk_size)


def source_chunk(ctx: StageContext, i: int) -> None:
    p: SourceParams = ctx.params
    lo, hi = i * p.chunk_size, min((i + 1) * p.chunk_size, p.num_items)
    values = ctx.rng(i).standard_normal((hi - lo, p.dim)).astype(np.float32)  # (n, dim)
    if p.sleep_ms:
        time.sleep(p.sleep_ms / 1000)
    ctx.write_chunk(i, {"index": np.arange(lo, hi, dtype=np.int64), "values": values})


def map_plan(ctx: StageContext) -> int:
    return int(ctx.input("source").meta["num_chunks"])


def map_chunk(ctx: StageContext, i: int) -> None:
    p: MapParams = ctx.params
    if p.fail_on_chunk == i:
        raise RuntimeError(f"selftest failure requested in chunk {i} (fail_on_chunk={i})")
    arrays, _ = read_h5_chunk(ctx.input("source").chunk_paths()[i])
    values = arrays["values"] * np.float32(p.scale)
    values = values + ctx.rng(i).normal(0, p.noise, values.shape).astype(np.float32)
    if p.sleep_ms:
        time.sleep(p.sleep_ms / 1000)
    ctx.write_chunk(i, {"index": arrays["index"], "values": values})


def reduce_chunk(ctx: StageContext, i: int) -> None:
    total = np.zeros((), np.float64)
    count = 0
    for arrays, _ in ctx.input("values").iter_chunks():
        total += arrays["values"].astype(np.float64).sum()
        count += len(arrays["index"])
    ctx.write_chunk(i, {"total": total, "count": np.int64(count)})


def reduce_finalize(ctx: StageContext) -> dict:
    arrays, _ = read_h5_chunk(ctx.chunk_path(0))
    result = {"total": float(arrays["total"]), "count": int(arrays["count"])}
    if result["count"] < 0:
        raise StageError("negative count")
    write_json(ctx.work_dir / "total.json", result)
    return result


SOURCE = StageSpec(
    name="selftest-source", version=1, description="seeded random numbers (pipeline self-test)",
    params=SourceParams, plan=source_plan, run_chunk=source_chunk,
    nonsemantic=frozenset({"sleep_ms", "root"}), fingerprint=_fingerprint,
)
MAP = StageSpec(
    name="selftest-map", version=1, description="scale and jitter the numbers (pipeline self-test)",
    params=MapParams, plan=map_plan, run_chunk=map_chunk, inputs={"source": "selftest-source.chunks"},
    nonsemantic=frozenset({"sleep_ms", "fail_on_chunk"}),
)
REDUCE = StageSpec(
    name="selftest-reduce", version=1, description="sum the numbers (pipeline self-test)",
    params=ReduceParams, run_chunk=reduce_chunk, finalize=reduce_finalize,
    inputs={"values": "selftest-map.chunks"}, outputs={"chunks": "chunks", "total": "total.json"},
)

__all__ = ["SOURCE", "MAP", "REDUCE"]
