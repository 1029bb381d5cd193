"""The fault suite (issue 14): a real pipeline killed at points spread over every stage kind,
damaged cache entries and checkpoints, an injected full disk, two runs on one workspace, and a
fuzzer over the config loader. The default run takes a quick subset; ``make test-all`` (``-m ""``)
and ``bench/faults.py`` the rest. Each test states the property a user relies on."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faultlib
from faultlib import KILL_POINTS, fuzz_loader, kill_point_run, mutations, reidaug_run, result_bytes

QUICK_POINTS = [
    "kill:chunk:ingest:2",
    "kill:chunk:extract-pose:1",
    "kill:checkpoint:train-camstyle*:2",
    "kill:chunk:generate-poseguided:2",
    "kill:chunk:export-hdf5:1",
    "kill:checkpoint:train-reid:1",
]


def _assert_kill_report(rep) -> None:
    assert all(p["killed"] for p in rep.points), [p for p in rep.points if not p["killed"]]
    assert rep.final_rc == 0
    assert rep.tracebacks == 0
    assert rep.identical, f"differ after the kills: {rep.differing[:10]}"


def test_killed_at_points_over_the_stage_kinds_resumes_to_identical_bytes(tmp_path):
    """SIGKILL at 6 points (source chunks, pose, mid-GAN training, generation, export, mid re-ID
    training): after the last resume every chunk file, generator, model and the export equal an
    uninterrupted run's."""
    _assert_kill_report(kill_point_run(tmp_path, QUICK_POINTS))


@pytest.mark.slow
def test_killed_at_every_point_resumes_to_identical_bytes(tmp_path):
    """All 13 kill points, one after another on one workspace."""
    assert len(KILL_POINTS) >= 10
    _assert_kill_report(kill_point_run(tmp_path, KILL_POINTS))


def _finished(ws: Path, stage: str) -> Path:
    return next(p for p in (ws / "cache" / stage).glob("*/*") if ".partial" not in p.name and p.is_dir())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("faults") / "clean"
    r = reidaug_run(ws)
    assert r.returncode == 0, r.stderr[-3000:]
    return ws


def test_a_garbled_gan_checkpoint_restarts_that_model_and_ends_identical(clean_run, tmp_path):
    """A killed training whose checkpoint was then damaged: the re-run warns, sets the file aside,
    trains that model from step 0 and ends with the same generator as an uninterrupted run."""
    ws = tmp_path / "ws"
    r = reidaug_run(ws, "kill:checkpoint:train-camstyle*:2")
    assert r.returncode == -signal.SIGKILL
    (ckpt,) = (ws / "cache" / "train-camstyle").glob("*/*.partial/train/*/checkpoint.pt")
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated mid-file
    r = reidaug_run(ws, extra=["--until", "train-camstyle"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cannot be read" in r.stderr and "training starts from step 0" in r.stderr
    assert "Traceback" not in r.stderr
    a, b = _finished(clean_run, "train-camstyle"), _finished(ws, "train-camstyle")
    assert [p.read_bytes() for p in sorted((a / "models").iterdir())] == \
        [p.read_bytes() for p in sorted((b / "models").iterdir())]


def test_damaged_chunks_and_meta_are_detected_and_only_they_recompute(clean_run, tmp_path):
    """Truncate one chunk of a finished entry and garble another entry's meta.json: the next run
    names the damage, recomputes only that, and every result byte equals the clean run's."""
    ws = tmp_path / "ws"
    shutil.copytree(clean_run, ws)
    gen = _finished(ws, "generate-camstyle") / "chunks"
    victim = sorted(gen.glob("*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    kept = {p.name: p.stat().st_mtime_ns for p in gen.glob("*.h5") if p != victim}
    meta = _finished(ws, "cluster-poses") / "meta.json"
    meta.write_text("{not json")
    r = reidaug_run(ws)
    assert r.returncode == 0, r.stderr[-2000:]
    assert victim.name in r.stderr and "Traceback" not in r.stderr
    gen = _finished(ws, "generate-camstyle") / "chunks"
    assert {p.name: p.stat().st_mtime_ns for p in gen.glob("*.h5") if p.name != victim.name} == kept
    assert result_bytes(ws) == result_bytes(clean_run)


def test_an_injected_full_disk_is_one_line_and_the_run_resumes(clean_run, tmp_path):
    """ENOSPC on the first chunk written by a generation stage (injected in the ground-floor
    writer, as a full disk would fail it): one line naming the file and the fix, exit non-zero,
    no traceback; the same command afterwards finishes with the clean run's bytes."""
    ws = tmp_path / "ws"
    r = reidaug_run(ws, "enospc:write:*generate-camstyle*chunks*:1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    err = [x for x in r.stderr.splitlines() if x.startswith("Error:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "generate-camstyle" in err[0], r.stderr[-2000:]
    r = reidaug_run(ws)
    assert r.returncode == 0, r.stderr[-2000:]
    assert result_bytes(ws) == result_bytes(clean_run)


def test_a_second_run_on_a_busy_workspace_is_refused_and_waits_with_wait(clean_run, tmp_path):
    """Two pipelines on one workspace: the second fails at once naming the first's PID; with
    --wait it waits, then finds everything cached."""
    ws = tmp_path / "ws"
    shutil.copytree(clean_run, ws)
    env = {**os.environ, "REIDAUG_FAULT": ""}
    first = subprocess.Popen([sys.executable, "-m", "reidaug.cli", "run", str(faultlib.DEMO), "-w", str(ws),
                              *faultlib.set_args(faultlib.SMALL), "--force", "train-reid"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((ws / "runs").glob("*/run.log"))[1:]:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could meet it: nothing was tested"
    second = reidaug_run(ws)
    waited = reidaug_run(ws, extra=["--wait"])
    first.wait(timeout=600)
    assert second.returncode != 0 and str(first.pid) in second.stderr and "Traceback" not in second.stderr
    assert waited.returncode == 0 and "Traceback" not in waited.stderr
    assert first.returncode == 0


def _check_fuzz(res) -> None:
    assert res.crashes == [], res.crashes[:10]
    assert res.invalid_accepted == [], res.invalid_accepted[:10]
    assert res.slowest_s < 5 and res.peak_mb < 500
    assert res.refused > 0.5 * res.tried  # the mutations mostly break the file: the fuzzer is not idle


def test_config_fuzzer_quick(tmp_path):
    """200 mutations of configs/demo.yaml (10 kinds): no exception but the project's own errors,
    none of the surely-invalid ones accepted, each within 5 s and 500 MB."""
    _check_fuzz(fuzz_loader(tmp_path, mutations(200, seed=1)))


@pytest.mark.slow
def test_config_fuzzer_1200_mutations(tmp_path):
    _check_fuzz(fuzz_loader(tmp_path, mutations(1200, seed=2)))


@pytest.mark.parametrize("kind", ["retype", "unknown-name", "dangling-ref", "cycle", "encoding", "size-bomb"])
def test_the_cli_refuses_an_invalid_pipeline_in_one_line(tmp_path, kind):
    """As a user meets them: `reidaug run --dry-run` exits non-zero with one 'Error:' line (plus
    the line snippet), never a traceback, never exit 0."""
    mut = next(m for m in mutations(60, seed=3) if m.kind == kind and m.invalid)
    path = tmp_path / "p.yaml"
    path.write_bytes(mut.text)
    r = subprocess.run([sys.executable, "-m", "reidaug.cli", "run", str(path), "--dry-run", "-w", str(tmp_path / "w")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert sum(x.startswith("Error:") for x in r.stderr.splitlines()) == 1, r.stderr[-2000:]
