"""bench/seed_systems.sh, the real-data runs behind BENCHMARKS' seed-system tables: a name it does not know
is refused with the list before anything runs, and its dry mode shows what is left of a run."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def script(*args: str, **env: str) -> subprocess.CompletedProcess:
    if not (ROOT / ".venv" / "bin" / "reidaug").exists():
        pytest.skip("the script runs the project's .venv (scripts/setup.sh makes it)")
    return subprocess.run(["bash", "bench/seed_systems.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, timeout=300)


def test_an_unknown_run_is_refused_before_anything_runs():
    proc = script("fusion", "transfr", DRY="1")
    assert proc.returncode == 2
    assert "unknown run 'transfr'" in proc.stderr and all(n in proc.stderr for n in ("fusion", "transfer", "dgnet"))
    assert "==" not in proc.stdout  # fusion, named first, did not start


def test_the_dry_mode_shows_each_runs_stages_and_workspace(shared_dir):
    proc = script("fusion", DRY="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "configs/real/cuhk01_posegan.yaml" in proc.stdout
    rows = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"train-posegan", "reid-real", "evaluate-posefusion", "workspace:"} <= rows
