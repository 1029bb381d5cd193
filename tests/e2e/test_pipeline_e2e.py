"""Whole pipelines through the runner and the CLI: cache hits, SIGKILL resume, dask schedulers,
failure reports and the workspace lock. Uses the self-test stages (seconds on 2 cores)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES, selftest


def write_pipeline(tmp_path: Path, num_items=200, chunk_size=10, sleep_ms=0.0, extra="") -> Path:
    p = tmp_path / "pipe.yaml"
    p.write_text(textwrap.dedent(f"""\
        name: e2e
        execution: {{scheduler: threads, workers: 2}}
        stages:
          selftest-source:
            params: {{num_items: {num_items}, chunk_size: {chunk_size}, sleep_ms: {sleep_ms}}}
          selftest-map:
            params: {{scale: 2.0}}
          selftest-reduce: {{}}
        """) + extra)
    return p


def ran(tmp_path: Path, num_items: int) -> tuple[Path, Path]:
    """The selftest pipeline of ``num_items``, run once into ``tmp_path/ws``: ``(pipeline file, workspace)``."""
    pipe, ws = write_pipeline(tmp_path, num_items=num_items), tmp_path / "ws"
    assert cli("run", str(pipe), "-w", str(ws), cwd=tmp_path).returncode == 0
    return pipe, ws


def cli(*args: str, cwd: Path, check: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidaug.cli", *args], cwd=cwd, capture_output=True,
                          text=True, check=check, **kw)


def output_bytes(workspace: Path) -> dict[str, bytes]:
    """Every output file of every finished entry, by path relative to the cache (no meta.json)."""
    out = {}
    for f in sorted((workspace / "cache").rglob("*")):
        if f.is_file() and f.name != "meta.json":
            out[f.relative_to(workspace / "cache").as_posix()] = f.read_bytes()
    return out


def meta(workspace: Path, stage: str) -> dict:
    (path,) = (workspace / "cache" / stage).glob("*/*/meta.json")
    return json.loads(path.read_text())


def test_cache_hit_runs_no_stage_function(tmp_path):
    calls = {"plan": 0, "chunk": 0, "finalize": 0}

    def plan(ctx):
        calls["plan"] += 1
        return selftest.source_plan(ctx)

    def chunk(ctx, i):
        calls["chunk"] += 1
        selftest.source_chunk(ctx, i)

    spy = dataclasses.replace(selftest.SOURCE, plan=plan, run_chunk=chunk)
    registry = {**STAGES, "selftest-source": spy}
    loaded = load_pipeline(write_pipeline(tmp_path))
    graph = build_graph(loaded, registry)
    ws = tmp_path / "ws"
    first = run_pipeline(graph, ws, options=RunOptions(workers=2))
    assert calls["chunk"] == 20 and first.ran("selftest-source") == list(range(20))
    calls.update(plan=0, chunk=0)
    second = run_pipeline(graph, ws, options=RunOptions(workers=2))
    assert calls == {"plan": 0, "chunk": 0, "finalize": 0}
    assert [r.action for r in second.results] == ["skip", "skip", "skip"]


def test_sigkill_mid_stage_resumes_only_missing_chunks_with_identical_bytes(tmp_path):
    pipe = write_pipeline(tmp_path, num_items=400, chunk_size=10, sleep_ms=150)
    ws = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "reidaug.cli", "run", str(pipe), "-w", str(ws)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    chunks = None
    deadline = time.monotonic() + 240  # generous: a loaded 2-core machine starts python slowly
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((ws / "cache" / "selftest-source").glob("*/*.partial/chunks"))
        if found and len([p for p in found[0].iterdir() if not p.name.startswith(".")]) >= 8:
            chunks = found[0]
            break
        time.sleep(0.05)
    if chunks is None:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run never got going (exit {proc.returncode}): {err.decode()[-2000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunks.iterdir() if not p.name.startswith(".")}
    assert 8 <= len(before) < 40

    resumed = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming, {40 - len(before)}/40 chunks to do" in resumed.stderr
    m = meta(ws, "selftest-source")
    assert m["timings"]["chunks_run"] == 40 - len(before)
    entry_chunks = next((ws / "cache" / "selftest-source").glob("*/*/chunks"))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry_chunks.iterdir()}
    assert all(after[name] == before[name] for name in before), "a finished chunk was recomputed"
    assert not [p for p in entry_chunks.iterdir() if p.name.startswith(".")], "temp files leaked"

    clean = tmp_path / "clean"
    assert cli("run", str(pipe), "-w", str(clean), "--set", "stages.selftest-source.params.sleep_ms=0",
               cwd=tmp_path).returncode == 0
    assert output_bytes(clean) == output_bytes(ws)


@pytest.mark.parametrize("scheduler", ["processes", "distributed"])
def test_other_schedulers_give_byte_identical_outputs(tmp_path, scheduler):
    loaded = load_pipeline(write_pipeline(tmp_path, num_items=60))
    graph = build_graph(loaded, STAGES)
    run_pipeline(graph, tmp_path / "threads", options=RunOptions(scheduler="threads", workers=2))
    report = run_pipeline(graph, tmp_path / scheduler, options=RunOptions(scheduler=scheduler, workers=2))
    assert report.ran("selftest-source") == list(range(6))
    assert output_bytes(tmp_path / "threads") == output_bytes(tmp_path / scheduler)


def test_failed_chunk_reports_stage_chunk_log_and_resume_command(tmp_path):
    pipe = write_pipeline(tmp_path, num_items=100)
    ws = tmp_path / "ws"
    bad = cli("run", str(pipe), "-w", str(ws), "--set", "stages.selftest-map.params.fail_on_chunk=3", cwd=tmp_path)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    err = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert len(err) == 1
    assert "stage 'selftest-map'" in err[0] and "chunk 3" in err[0]
    assert "resume with: reidaug run" in err[0] and "run.log" in err[0]
    tb_file = next((ws / "cache" / "selftest-map").glob("*/*.partial/errors/chunk-00003.txt"))
    assert "selftest failure requested" in tb_file.read_text()
    # fail_on_chunk does not change the key: fixing it resumes the same partial entry
    ok = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert meta(ws, "selftest-map")["timings"]["chunks_run"] < 10
    assert "Stage 'selftest-source' didn't change, skipping" in ok.stderr


def test_second_run_on_a_workspace_fails_fast_naming_the_pid_and_stale_lock_is_taken_over(tmp_path):
    pipe = write_pipeline(tmp_path, num_items=400, sleep_ms=300)
    ws = tmp_path / "ws"
    first = subprocess.Popen([sys.executable, "-m", "reidaug.cli", "run", str(pipe), "-w", str(ws)], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (ws / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        second = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
        assert second.returncode == 3
        assert f"PID {first.pid}" in second.stderr and "--wait" in second.stderr
        assert time.monotonic() - t0 < 20
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert (ws / ".lock").exists()  # left behind by the killed run
    third = cli("run", str(pipe), "-w", str(ws), "--set", "stages.selftest-source.params.sleep_ms=0", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "taking it over" in third.stderr


def test_dry_run_and_status_explain_the_plan(tmp_path):
    pipe, ws = ran(tmp_path, 50)
    dry = cli("run", str(pipe), "-w", str(ws), "--dry-run", "--set", "stages.selftest-map.params.scale=5", cwd=tmp_path)
    assert dry.returncode == 0
    lines = {line.split()[0]: line for line in dry.stdout.splitlines() if line.startswith("  ")}
    assert "skip" in lines["selftest-source"]
    assert "run" in lines["selftest-map"] and "param scale: 2.0 -> 5.0" in lines["selftest-map"]
    assert "upstream selftest-map changed" in lines["selftest-reduce"]
    assert not list((ws / "cache" / "selftest-map").glob("*/*.partial"))  # nothing ran
    st = cli("status", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert st.returncode == 0 and st.stdout.count("cached") == 3
    # each run saves its resolved config, defaults included
    (cfg,) = list((ws / "runs").glob("*/config.yaml"))
    assert "num_items: 50" in cfg.read_text() and "noise: 0.01" in cfg.read_text()


def test_stage_command_runs_only_what_the_stage_needs(tmp_path):
    pipe = write_pipeline(tmp_path, num_items=50)
    ws = tmp_path / "ws"
    r = cli("stage", "selftest-map", "-c", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (ws / "state" / "selftest-map.json").exists()
    assert not (ws / "cache" / "selftest-reduce").exists()


def test_corrupted_entry_is_a_warning_and_a_recompute(tmp_path):
    pipe, ws = ran(tmp_path, 50)
    meta_file = next((ws / "cache" / "selftest-map").glob("*/*/meta.json"))
    meta_file.write_text("{not json")
    r = cli("run", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "corrupted" in r.stderr and "recompute" in r.stderr
    assert json.loads(meta_file.read_text())["stage"] == "selftest-map"


def test_cache_gc_removes_unreferenced_entries(tmp_path):
    pipe, ws = ran(tmp_path, 50)
    rerun = cli("run", str(pipe), "-w", str(ws), "--set", "stages.selftest-map.params.scale=3", cwd=tmp_path)
    assert rerun.returncode == 0
    assert len(list((ws / "cache" / "selftest-map").glob("*/*"))) == 2
    dry = cli("cache", "gc", "-w", str(ws), "--dry-run", cwd=tmp_path)
    assert dry.stdout.count("would remove") == 2  # the old map and reduce entries
    assert len(list((ws / "cache" / "selftest-map").glob("*/*"))) == 2
    assert cli("cache", "gc", "-w", str(ws), cwd=tmp_path).returncode == 0
    assert len(list((ws / "cache" / "selftest-map").glob("*/*"))) == 1
    again = cli("run", str(pipe), "-w", str(ws), "--set", "stages.selftest-map.params.scale=3", cwd=tmp_path)
    assert again.stderr.count("didn't change, skipping") == 3


def test_force_reruns_a_stage_whose_plan_writes_files(tmp_path):
    # ingest's plan() writes records.json into the partial folder: --force must not delete it after
    data = tmp_path / "data"
    assert cli("demo-data", str(data), "--num-ids", "4", "--images-per-id-per-cam", "2", cwd=tmp_path).returncode == 0
    pipe = tmp_path / "ingest.yaml"
    pipe.write_text(f"name: t\nstages:\n  ingest:\n    params: {{format: market1501, root: {data}, chunk_size: 4}}\n")
    ws = tmp_path / "ws"
    assert cli("run", str(pipe), "-w", str(ws), cwd=tmp_path).returncode == 0
    forced = cli("run", str(pipe), "-w", str(ws), "--force", "ingest", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "running, 4/4 chunks to do (forced)" in forced.stderr


def test_failed_forced_run_resumes_with_its_finished_chunks(tmp_path):
    pipe, ws = ran(tmp_path, 100)
    bad = cli("run", str(pipe), "-w", str(ws), "--force", "selftest-map", "--workers", "1",
              "--set", "stages.selftest-map.params.fail_on_chunk=7", cwd=tmp_path)
    assert bad.returncode != 0 and "--force selftest-map" in bad.stderr  # the printed resume command
    again = cli("run", str(pipe), "-w", str(ws), "--force", "selftest-map", "--workers", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr  # the chunks the failed forced run finished are kept
    assert 0 < meta(ws, "selftest-map")["timings"]["chunks_run"] < 10
    entry = next((ws / "cache" / "selftest-map").glob("*/*/meta.json")).parent
    assert not (entry / "errors").exists()  # a failed chunk's report does not end up in the entry


def test_status_is_read_only_on_a_corrupted_entry(tmp_path):
    pipe, ws = ran(tmp_path, 50)
    meta_file = next((ws / "cache" / "selftest-map").glob("*/*/meta.json"))
    meta_file.write_text("{not json")
    st = cli("status", str(pipe), "-w", str(ws), cwd=tmp_path)
    assert st.returncode == 0 and "missing" in st.stdout
    assert meta_file.read_text() == "{not json"  # status did not move or repair anything


def test_commit_refuses_an_entry_with_missing_chunks(tmp_path):
    from reidaug.errors import CacheError
    from reidaug.pipeline.cache import Cache

    cache = Cache(tmp_path)
    partial = cache.prepare("s", "k" * 64)
    cache.record_plan("s", "k" * 64, {"num_chunks": 3})
    (partial / "chunks" / "00000.h5").write_bytes(b"x")
    with pytest.raises(CacheError, match="2 of 3 chunk files are missing"):
        cache.commit("s", "k" * 64, {"key": "k" * 64, "num_chunks": 3})
    assert cache.state("s", "k" * 64).status == "partial"
