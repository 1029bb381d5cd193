"""Records: the small, readable part of finished cache entries, kept where the cache cannot go.

A cache holds weights and images (gigabytes) on one machine. A measurement campaign that outlives the
machine (a table of 21 re-ID runs that takes longer than one session on two cores) keeps *records*:
for each finished entry of the measuring stages, its ``meta.json`` and its text reports (``.json``,
``.jsonl``, ``.md``, ``.csv``, ``.txt`` up to a size), under the cache's own key::

    <records>/<stage kind>/<key>/meta.json
    <records>/<stage kind>/<key>/run/config.json, run/metrics.json, run/train_log.jsonl, ...
    <records>/<stage kind>/<key>/record.json       which stage of which pipeline, when, what was left out

``reidaug archive PIPELINE --to DIR`` writes them (:func:`save_record`); ``reidaug compare PIPELINE
--records DIR`` reads a ``train-reid`` stage that is not in the cache from its record
(:func:`find_record`). A record is found only through its key, so a changed param, input or stage
version finds none: a table assembled from records of several machines is the table one machine
would have computed, provided the stages are deterministic on the machines involved: the re-ID trainer
gave the same digits on two VMs a day apart (2026-12-06 / 07), but a CycleGAN retrained on another VM
came out another model (the math library picks kernels by CPU, and a GAN amplifies the rounding), so a
record notes the machine it was archived on (``archived_on``), and the arms that use one GAN belong in
one session.
A record is written once: archiving an entry whose record exists keeps the record and compares their
metrics files, so a re-run on another machine that measured something else is reported (``differs``),
never silently replaced. Records are never cache entries: no stage reads one as an input, and a record
without its weights cannot resume or feed anything.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Iterable

from reidaug.io.atomic import atomic_path, write_json
from reidaug.pipeline.cache import read_json_object
from reidaug.pipeline.context import CHUNK_DIR

META = "meta.json"
RECORD = "record.json"
REPORT_SUFFIXES = (".json", ".jsonl", ".md", ".csv", ".txt")
MAX_FILE_BYTES = 2 << 20
# the stage kinds whose entries are measurements (what a results table is made of)
MEASURING_KINDS = ("train-reid", "score-fakes", "score-dgnet", "score-posegan", "evaluate-posefusion")


@dataclasses.dataclass(frozen=True)
class Saved:
    path: Path
    status: str  # "written" | "unchanged" (the record was there, same metrics) | "differs" (kept; see differs)
    files: tuple[str, ...]  # relative paths kept
    left_out: tuple[tuple[str, int], ...]  # report files over the size limit: (relative path, bytes)
    differs: tuple[str, ...] = ()  # metrics files whose content differs between the entry and its record


def record_dir(root: str | os.PathLike[str], kind: str, key: str) -> Path:
    return Path(root) / kind / key


def _report_files(entry: Path, max_bytes: int) -> tuple[list[str], list[tuple[str, int]]]:
    keep, left_out = [], []
    for dirpath, dirnames, filenames in os.walk(entry):
        rel_dir = Path(dirpath).relative_to(entry)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d != CHUNK_DIR]  # the chunk data is the cache's, not a report
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(REPORT_SUFFIXES) or name.startswith(".") or name == RECORD:
                continue
            rel = (rel_dir / name).as_posix()
            size = os.path.getsize(os.path.join(dirpath, name))
            if size > max_bytes:
                left_out.append((rel, size))
            else:
                keep.append(rel)
    return keep, left_out


def save_record(entry: str | os.PathLike[str], root: str | os.PathLike[str], kind: str, key: str, *,
                stage: str, pipeline: str, max_bytes: int = MAX_FILE_BYTES) -> Saved:
    """Copy the finished cache ``entry`` of ``kind`` / ``key``'s reports to ``root`` (atomically, whole),
    unless its record is there: then the record stays, and the metrics files that differ are named."""
    entry = Path(entry)
    meta_path = entry / META
    meta = read_json_object(meta_path)
    if meta is None:
        raise FileNotFoundError(f"{entry} is not a finished cache entry: it has no readable {META}")
    if meta.get("key") != key:
        raise ValueError(f"{meta_path} is the entry of key {meta.get('key')!r}, not {key!r}")
    dest = record_dir(root, kind, key)
    keep, left_out = _report_files(entry, max_bytes)
    if find_record(root, kind, key) is not None:
        differs = tuple(rel for rel in keep if Path(rel).name.startswith("metrics") and rel.endswith(".json")
                        and (not (dest / rel).is_file() or (dest / rel).read_bytes() != (entry / rel).read_bytes()))
        return Saved(dest, "differs" if differs else "unchanged", tuple(keep), tuple(left_out), differs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, replace_dir=True) as tmp:
        tmp.mkdir()
        for rel in keep:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / rel, tmp / rel)
        write_json(tmp / RECORD, {
            "stage": stage, "kind": kind, "key": key, "pipeline": pipeline,
            "archived": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "archived_on": machine(),
            "left_out": [{"file": rel, "bytes": size} for rel, size in left_out],
            "note": "reports of a finished cache entry (no weights, no chunk data); reidaug archive wrote it",
        })
    return Saved(dest, "written", tuple(keep), tuple(left_out))


def machine() -> dict[str, object]:
    """The CPU model and the vector extensions its math libraries choose kernels by (Linux), and Python's
    platform: what to compare when two records of one key differ."""
    import platform

    cpu, isa = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        info = ""
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name" and value.strip():
            cpu = value.strip()
        elif name.strip() == "flags":
            isa = sorted(x for x in value.split() if x.startswith(("avx", "fma", "amx", "sse4")))
            break
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "platform": platform.platform()}


def find_record(root: str | os.PathLike[str] | None, kind: str, key: str) -> Path | None:
    """The record of ``kind`` / ``key`` under ``root``, or None (no root, no record, or a record whose
    ``meta.json`` names another key)."""
    if root is None:
        return None
    dest = record_dir(root, kind, key)
    meta = read_json_object(dest / META)
    return dest if meta is not None and meta.get("key") == key else None


def kinds_or_default(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    return kinds or MEASURING_KINDS


def describe(saved: Saved) -> str:
    text = f"{len(saved.files)} files"
    if saved.left_out:
        big = ", ".join(f"{rel} ({size} bytes)" for rel, size in saved.left_out)
        text += f"; left out (over the size limit): {big}"
    return text

