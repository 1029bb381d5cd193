"""bench/gpu/run_all.sh, the one prepared GPU call, in its CPU dry-run mode: the speed step (a generation
benchmark, the evaluation benchmark and the re-ID trainer's speed) runs and writes its JSON, so the script is
known to work before a GPU is lent. The whole dry run (every step, every generator) is the slow test."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the dry run uses the project's .venv (scripts/setup.sh makes it)")
    full = {**os.environ, "REIDAUG_GPU_DRYRUN": "1", "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", "bench/gpu/run_all.sh"], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=1500)


def test_the_speed_step_runs_in_the_dry_run(tmp_path):
    proc = dry_run(tmp_path, STEPS_TO_RUN="3", GENERATORS="pg2")
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "3. speed" in log and "1. tests marked gpu" not in log and "done" in log
    gen = json.loads((out / "generate_pg2.json").read_text())
    assert gen, "bench/generate.py wrote nothing"
    ev = json.loads((out / "eval.json").read_text())
    assert all(not r.get("failed") for r in ev["runs"])
    assert {r["method"] for r in ev["runs"]} == {"naive", "blocked", "disk"}
    runs = json.loads((out / "train_speed.json").read_text())["runs"]
    assert set(runs) == {"cpu 32x16", "cpu amp 32x16"}, runs.keys()
    assert all(r["rows"][0]["images_per_s_median"] > 0 and r["rows"][0]["steps"] == 2 * r["rows"][0]["steps_per_epoch"]
               for r in runs.values())


def test_the_dgnet_step_trains_and_scores_on_cuhk01_in_the_dry_run(tmp_path):
    """Step 4 (issue 19's DG-Net at 256 x 128 on a GPU) at 64 x 32 with a tiny encoder on the CPU: the timing
    run, the step count it gives, the run until score-dgnet-heldout on CUHK01's held-out query identities, and
    what comes back (scores, swap matrix, loss log), each stage in its own folder; no weights."""
    if not (ROOT.parent / "shared" / "data" / "cuhk01").is_dir():
        pytest.skip("needs ../shared/data/cuhk01 beside the checkout")
    proc = dry_run(tmp_path, STEPS_TO_RUN="4")
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "dgnet timing: 4 steps in" in log and "failed" not in log, log[-2000:]
    scores = json.loads((out / "dgnet" / "score-dgnet" / "metrics.json").read_text())
    assert scores["split"] == "query" and scores["num_images"] == 16
    assert 0 < scores["ssim_self_reconstruction"]["mean"] < 1
    assert (out / "dgnet" / "score-dgnet" / "swaps.png").is_file()
    assert (out / "dgnet" / "train-dgnet" / "train" / "dgnet" / "losses.jsonl").is_file()
    assert not list(out.rglob("*.pt")) and not (out / "dgnet-ws").exists()


@pytest.mark.slow
def test_the_whole_dry_run(tmp_path):
    proc = dry_run(tmp_path)
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("pytest_gpu.txt", "check_cuda.json", "generate_camstyle.json", "generate_pg2.json",
                 "generate_deformable.json", "eval.json", "train_speed.json", "dgnet/score-dgnet/metrics.json"):
        assert (out / name).is_file(), name
