"""Stage ``ingest``: read a re-ID dataset folder into checked, chunked records.

A source stage. It parses the folder with a registered dataset format
(:data:`reidaug.data.datasets.PARSERS`: market1501, dukemtmc-reid, msmt17, cuhk03-np,
cuhk01, folder), following torchreid's contract (records ``(img_path, pid, camid)``,
cameras 0-based, junk ids dropped with a count, Zhou & Xiang, arXiv:1910.10093), then
decodes every image exactly once, in chunks. An image that cannot be used (unreadable,
truncated, zero-byte, not an image, too large, a bad name, an unknown camera) goes to a
quarantine report with its reason, never silently away; ``strict: true`` fails instead.

Each chunk stores, per usable image: the original bytes when they decode to 8-bit RGB as
they are (JPEG / PNG), else a lossless PNG of the converted pixels (grayscale, RGBA, 16-bit,
palette), with path, pid, camid, original camera and split. Later stages decode them with
:func:`reidaug.data.images.decode_stored`, never the loose files again.

The key of a folder source is its fingerprint: relative path, size and sha256 of every file,
so changing one byte re-ingests while a copied or re-synced dataset (new mtimes, same bytes) keeps
its cache. Digests are remembered by stat (:mod:`reidaug.io.hashcache`), so only new or changed
files are read at plan time.
When the dataset comes from another stage (``inputs: {source: demo-data.dataset}``) the
upstream key stands for it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterator

from pydantic import Field, field_validator, model_validator

from reidaug.errors import ConfigError, DataError
from reidaug.io.atomic import write_json
from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import Params, StageSpec

log = logging.getLogger(__name__)

RECORDS = "records.json"
RECORDS_DIR = "records"
QUARANTINE = "quarantine.json"


#: images under this (height, width) are kept but named in a warning: a 1 x 1 "person" is a broken
#: crop, not a hard example (min_size quarantines them)
TINY = (16, 8)


class IngestParams(Params):
    format: str = Field(description="dataset format: market1501, dukemtmc-reid, msmt17, cuhk03-np, cuhk01, folder")
    root: str | None = Field(None, description="dataset folder (relative to the YAML); or bind inputs.source")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="format options, e.g. {num_train_ids: 485}; listed below")
    chunk_size: int = Field(512, ge=1, le=100_000, description="images per chunk")
    strict: bool = Field(False, description="fail on the first bad file instead of quarantining it")
    content_hash: bool = Field(True, description=(
        "kept so older YAMLs load: the fingerprint is always the files' bytes now (false is refused)"))
    max_pixels: int = Field(50_000_000, ge=1, description="larger images are quarantined as too-large")
    min_size: tuple[int, int] | None = Field(None, description=(
        "[height, width]: smaller images are quarantined as too-small (default: kept, with a warning "
        f"for those under {TINY[0]} x {TINY[1]} px)"))

    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"min_size"})

    @field_validator("content_hash")
    @classmethod
    def _bytes_always(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "the fingerprint is always the files' bytes now (digests are remembered by stat, so a plan "
                "reads only new or changed files); a size + mtime key lost the cache whenever the dataset was "
                "copied. Delete content_hash from the YAML")
        return value

    @field_validator("min_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (min(value) < 1 or max(value) > 100_000):
            raise ValueError(f"expected [height, width] between 1 and 100000 px; found {list(value)}")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from reidaug.data.datasets import PARSERS
        from reidaug.errors import did_you_mean

        if value not in PARSERS:
            raise ValueError(f"expected one of {', '.join(PARSERS)}.{did_you_mean(value, PARSERS)}")
        return value

    @model_validator(mode="after")
    def _options_fit_format(self) -> "IngestParams":
        from reidaug.data.datasets import get_parser

        try:
            get_parser(self.format).make_options(self.options)
        except (ConfigError, TypeError) as e:
            raise ValueError(f"options: {e}") from None
        return self


def _check_bindings(params: IngestParams, bound: frozenset[str]) -> str | None:
    if params.root is None and "source" not in bound:
        return ("ingest needs a dataset: set params.root to the dataset folder, or bind inputs.source "
                "to an upstream dataset (e.g. `inputs: {source: demo-data.dataset}`)")
    if params.root is not None and "source" in bound:
        return "ingest has both params.root and inputs.source; keep one of them"
    return None


def _root(params: IngestParams, base_dir: Path, source=None) -> Path:
    # the graph checked this when the YAML loaded; the same check for direct callers
    problem = _check_bindings(params, frozenset({"source"}) if source is not None else frozenset())
    if problem:
        raise ConfigError(problem)
    if source is not None:
        return source.path
    root = Path(params.root).expanduser()
    root = root if root.is_absolute() else base_dir / root
    if not root.is_dir():
        raise DataError(
            f"dataset root not found: {root} (from ingest params.root = {params.root!r}, relative to "
            f"{base_dir}). Fix the path in the pipeline YAML or with --set stages.ingest.params.root=PATH"
        )
    return root


def fingerprint(params: IngestParams, base_dir: Path) -> Any:
    """Relative path, size and sha256 of every file under the root (digests remembered by stat),
    hashed as the folder is walked: the canonical JSON of ``{format, options, files: [[rel, size,
    sha256], ...], manifest_sha256}`` is never held whole, so planning a 1M-image set needs no
    more memory than a 1k one (the same digest as hashing it whole: the keys are those of before)."""
    if params.root is None:
        return None
    root = _root(params, base_dir)
    from reidaug.io.checkpoint import file_sha256
    from reidaug.io.hashcache import FileHashes
    from reidaug.pipeline.hashing import stable_hash_streamed

    head: dict[str, Any] = {"format": params.format, "options": params.options}
    manifest = params.options.get("manifest") if isinstance(params.options, dict) else None
    if manifest:  # may live outside the root (an absolute path): its content is part of the key either way
        path = Path(manifest).expanduser()
        path = path if path.is_absolute() else root / path
        head["manifest_sha256"] = file_sha256(path) if path.is_file() else None  # block-wise, the same digest
    hashes = FileHashes(root)
    try:
        digest = stable_hash_streamed(head, "files", _file_rows(root, hashes), "ingest input files")
    finally:
        hashes.save()
    if hashes.read:
        log.info("fingerprint of %s: read %d of %d files (the rest unchanged since the last plan)",
                 root, hashes.read, hashes.count)
    return digest


def _file_rows(root: Path, hashes: Any) -> Iterator[list[Any]]:
    """``[rel, size, sha256]`` per file under ``root`` in a fixed order (folders and names sorted)."""
    from reidaug.data.datasets import looks_like_image

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in dirnames:  # a folder named like an image is quarantined: it is part of the input
            if looks_like_image(name):  # (a row only where one exists, so other datasets keep their keys)
                yield [os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/") + "/", "dir", 0]
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                st = os.stat(full)
            except OSError:  # dangling symlink: still part of what the user gave us
                yield [rel, -1, 0]
                continue
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device under the root: part of the input, not read
                yield [rel, st.st_size, "special"]
                continue
            try:
                yield [rel, st.st_size, hashes.sha256(rel, st)]
            except OSError as e:  # unreadable: ingest quarantines it; its key row says so
                yield [rel, st.st_size, f"unreadable: {e.strerror}"]


def _strict_fail(items: list[dict[str, str]], where: str) -> DataError:
    first = items[0]
    counts = Counter(q["reason"] for q in items)
    by_reason = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items()))
    return DataError(
        f"params.strict is on and {len(items)} file(s) {where} are bad ({by_reason}); "
        f"first: {first['path']}: {first['reason']}: {first['detail']}. Fix or remove them, or set strict: false "
        "to quarantine them and go on"
    )


def plan(ctx: StageContext) -> int:
    from reidaug.data.datasets import check_splits, get_parser

    p: IngestParams = ctx.params
    root = _root(p, ctx.base_dir, ctx.inputs.get("source"))
    parser = get_parser(p.format)
    options = parser.make_options(p.options)
    result = parser(root, options)
    warning = check_splits(result, p.format, options)
    if warning:
        log.warning("%s", warning)
    quarantined = [{"path": q.path, "reason": q.reason, "detail": q.detail} for q in result.quarantined]
    if p.strict and quarantined:
        raise _strict_fail(quarantined, f"in {root}")
    records = [
        {"path": r.path, "pid": r.pid, "camid": r.camid, "orig_camid": r.orig_camid, "split": r.split}
        for r in result.records
    ]
    skipped = [{"path": q.path, "reason": q.reason, "detail": q.detail} for q in result.skipped]
    num_chunks = (len(records) + p.chunk_size - 1) // p.chunk_size
    # one records file per chunk: a chunk reads its own 512 rows, not the whole dataset's (at 100k images
    # every chunk parsing all records was most of ingest's time and held the list twice per worker)
    (ctx.work_dir / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    for index in range(num_chunks):
        write_json(_chunk_records(ctx, index), records[index * p.chunk_size:(index + 1) * p.chunk_size])
    write_json(ctx.work_dir / RECORDS, {"root": str(root), "num_records": len(records), "parse_quarantine": quarantined,
                                        "skipped": skipped, "counts": result.counts})
    return num_chunks


def _chunk_records(ctx: StageContext, index: int) -> Path:
    return ctx.work_dir / RECORDS_DIR / f"{index:05d}.json"


def _load_records(ctx: StageContext) -> dict[str, Any]:
    with open(ctx.work_dir / RECORDS, encoding="utf-8") as f:
        return json.load(f)


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.data.images import ImageCheckError, decode_image, encode_png

    p: IngestParams = ctx.params
    root = Path(_load_records(ctx)["root"])
    with open(_chunk_records(ctx, index), encoding="utf-8") as f:
        rows = json.load(f)
    keep: dict[str, list] = {k: [] for k in ("path", "pid", "camid", "orig_camid", "split", "image", "height",
                                             "width", "conversions", "record_index")}
    bad: list[dict[str, str]] = []
    tiny: list[str] = []
    for offset, row in enumerate(rows):
        try:
            img = decode_image(root / row["path"], max_pixels=p.max_pixels)
        except ImageCheckError as e:
            bad.append({"path": row["path"], "reason": e.reason, "detail": e.detail})
            continue
        h, w = img.rgb.shape[:2]
        if p.min_size is not None and (h < p.min_size[0] or w < p.min_size[1]):
            bad.append({"path": row["path"], "reason": "too-small",
                        "detail": f"{h} x {w} px is below min_size {p.min_size[0]} x {p.min_size[1]}"})
            continue
        if h < TINY[0] or w < TINY[1]:
            tiny.append(f"{row['path']} ({h} x {w})")
        as_is = not img.conversions and img.container in ("jpeg", "png") and img.rgb.dtype == np.uint8
        keep["image"].append(img.data if as_is else encode_png(img.rgb))
        for k in ("path", "pid", "camid", "orig_camid", "split"):
            keep[k].append(row[k])
        keep["height"].append(img.rgb.shape[0])
        keep["width"].append(img.rgb.shape[1])
        keep["conversions"].append(",".join(img.conversions))
        keep["record_index"].append(index * p.chunk_size + offset)
    if p.strict and bad:
        raise _strict_fail(bad, "of this chunk")
    arrays = {
        "path": keep["path"], "split": keep["split"], "conversions": keep["conversions"],
        "pid": np.asarray(keep["pid"], np.int64), "camid": np.asarray(keep["camid"], np.int16),
        "orig_camid": np.asarray(keep["orig_camid"], np.int16),
        "height": np.asarray(keep["height"], np.int32), "width": np.asarray(keep["width"], np.int32),
        "record_index": np.asarray(keep["record_index"], np.int64),
    }
    if keep["image"]:
        arrays["image"] = keep["image"]
    ctx.record(index, {"tiny": tiny[:20], "tiny_count": len(tiny)})  # a warning, not a result
    ctx.write_chunk(index, arrays, attrs={"quarantined": bad})


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.data.datasets import SPLITS

    data = _load_records(ctx)
    quarantined = list(data["parse_quarantine"])
    conversions: Counter[str] = Counter()
    per_split: dict[str, dict[str, set | int]] = {s: {"ids": set(), "cams": set(), "images": 0} for s in SPLITS}
    total = 0
    for arrays, attrs in ctx.iter_own_chunks():
        quarantined.extend(attrs.get("quarantined", []))
        for conv in arrays["conversions"]:
            for c in filter(None, conv.split(",")):
                conversions[c] += 1
        for split, pid, cam in zip(arrays["split"], arrays["pid"], arrays["camid"]):
            s = per_split[split]
            s["ids"].add(int(pid))
            s["cams"].add(int(cam))
            s["images"] += 1
            total += 1
    quarantined.sort(key=lambda q: (q["path"], q["reason"]))
    by_reason = Counter(q["reason"] for q in quarantined)
    write_json(ctx.work_dir / QUARANTINE, {
        "counts": dict(sorted(by_reason.items())),
        "skipped_counts": dict(Counter(s["reason"] for s in data["skipped"])),
        "quarantined": quarantined,
        "skipped": data["skipped"],
    })
    table = ["  subset  | # ids | # images | # cameras", "  --------+-------+----------+----------"]
    splits = {}
    for split in SPLITS:
        s = per_split[split]
        splits[split] = {"ids": len(s["ids"]), "images": s["images"], "cameras": len(s["cams"])}
        table.append(f"  {split:<7} | {len(s['ids']):>5} | {s['images']:>8} | {len(s['cams']):>9}")
    report = [f"{total} images ingested ({ctx.params.format}):", *table]
    if quarantined:
        report.append(f"{len(quarantined)} file(s) quarantined (paths and reasons in quarantine.json of this entry):")
        report.extend(f"  {reason:<20} {n:>6}  e.g. {next(q['path'] for q in quarantined if q['reason'] == reason)}"
                      for reason, n in sorted(by_reason.items()))
    else:
        report.append("no file quarantined")
    if conversions:
        report.append("converted: " + ", ".join(f"{c} {n}" for c, n in sorted(conversions.items())))
    stats = ctx.own_stats()
    tiny = [t for st in stats for t in st.get("tiny", [])]
    n_tiny = sum(int(st.get("tiny_count", len(st.get("tiny", [])))) for st in stats)
    if n_tiny:
        warning = (f"{n_tiny} image(s) smaller than {TINY[0]} x {TINY[1]} px were kept and will be upscaled "
                   f"(e.g. {', '.join(tiny[:3])}); set params.min_size: [{TINY[0]}, {TINY[1]}] to quarantine them")
        log.warning("%s", warning)
        report.append("WARNING: " + warning)
    (ctx.work_dir / RECORDS).unlink()  # the chunks hold everything; keep the entry lean
    shutil.rmtree(ctx.work_dir / RECORDS_DIR, ignore_errors=True)
    return {
        "images": total, "splits": splits, "quarantined": dict(sorted(by_reason.items())),
        "conversions": dict(sorted(conversions.items())), "parse_counts": data["counts"], "report": report,
        "tiny_images": n_tiny,
    }


SPEC = StageSpec(
    name="ingest", version=1,
    description="parse a re-ID dataset, decode and check every image once, quarantine bad files",
    params=IngestParams, plan=plan, run_chunk=run_chunk, finalize=finalize,
    inputs={"source": ""}, optional_inputs=frozenset({"source"}),
    outputs={"dataset": "chunks", "quarantine": QUARANTINE},
    nonsemantic=frozenset({"root", "content_hash"}), fingerprint=fingerprint, check_bindings=_check_bindings,
)
