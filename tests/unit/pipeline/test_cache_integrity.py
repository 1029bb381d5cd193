"""A finished cache entry whose chunk file was damaged (issue 14, item 4): the next run notices it
before skipping, recomputes only the damaged chunk, and the result is byte-identical; `status`
and `--dry-run` report it without changing anything; `reidaug cache verify` finds a same-size
change by its sha256."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIPE = """\
name: t
stages:
  selftest-source:
    params: {num_items: 40, chunk_size: 10}
  selftest-map: {}
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidaug.cli", *args], cwd=cwd, text=True, capture_output=True)


def finished_run(tmp_path: Path) -> tuple[Path, Path]:
    """The pipeline file and its workspace after one successful run."""
    pipe = tmp_path / "p.yaml"
    pipe.write_text(PIPE)
    ws = tmp_path / "ws"
    assert cli("run", str(pipe), "-w", str(ws), cwd=tmp_path).returncode == 0
    return pipe, ws


def chunks_of(ws: Path, stage: str) -> dict[str, bytes]:
    (entry,) = (ws / "cache" / stage).glob("*/*[0-9a-f]")
    return {p.name: p.read_bytes() for p in sorted((entry / "chunks").iterdir())}


def test_a_truncated_chunk_is_found_and_only_it_recomputes(tmp_path):
    pipe, ws = finished_run(tmp_path)
    before = chunks_of(ws, "selftest-map")
    (entry,) = (ws / "cache" / "selftest-map").glob("*/*[0-9a-f]")
    meta = json.loads((entry / "meta.json").read_text())
    assert set(meta["chunk_files"]) == set(before) and all(r["size"] > 0 for r in meta["chunk_files"].values())
    victim = entry / "chunks" / "00002.h5"
    victim.write_bytes(victim.read_bytes()[:100])
    untouched = {p.name: p.stat().st_mtime_ns for p in (entry / "chunks").iterdir() if p.name != "00002.h5"}

    dry = cli("run", str(pipe), "-w", str(ws), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "00002.h5" in dry.stderr and "resume" in dry.stdout
    assert (entry / "meta.json").exists()  # read-only commands change nothing

    again = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "00002.h5 (100 bytes instead of" in again.stderr and "only those chunks are recomputed" in again.stderr
    assert "1/4 chunks to do" in again.stderr
    assert chunks_of(ws, "selftest-map") == before
    (entry,) = (ws / "cache" / "selftest-map").glob("*/*[0-9a-f]")
    assert {p.name: p.stat().st_mtime_ns for p in (entry / "chunks").iterdir() if p.name != "00002.h5"} == untouched


def test_cache_verify_finds_a_same_size_change_and_repairs_it(tmp_path):
    pipe, ws = finished_run(tmp_path)
    before = chunks_of(ws, "selftest-source")
    (entry,) = (ws / "cache" / "selftest-source").glob("*/*[0-9a-f]")
    victim = entry / "chunks" / "00001.h5"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert cli("run", str(pipe), "-w", str(ws), cwd=tmp_path).stderr.count("didn't change, skipping") == 2
    check = cli("cache", "verify", "-w", str(ws), cwd=tmp_path)
    assert check.returncode == 1 and "selftest-source" in check.stdout and "00001.h5" in check.stdout
    fixed = cli("cache", "verify", "-w", str(ws), "--repair", cwd=tmp_path)
    assert fixed.returncode == 1 and "reopened" in fixed.stdout
    rerun = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert rerun.returncode == 0 and "1/4 chunks to do" in rerun.stderr
    assert chunks_of(ws, "selftest-source") == before
    assert cli("cache", "verify", "-w", str(ws), cwd=tmp_path).returncode == 0
