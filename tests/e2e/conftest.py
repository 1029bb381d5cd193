"""The demo pipeline, run once per test session at a small budget, for the tests that read its results."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The demo's own YAML with smaller training budgets (the README runs it as written, ~minutes).
QUICK = ["--set", "stages.train-camstyle.params.iterations=20", "--set", "stages.train-posegan.params.iterations=12",
         "--set", "stages.train-reid.params.epochs=1"]


@dataclasses.dataclass
class DemoRun:
    cmd: list[str]
    cwd: Path
    workspace: Path
    first: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> DemoRun:
    cwd = tmp_path_factory.mktemp("demo")
    ws = cwd / "ws"
    cmd = [sys.executable, "-m", "reidaug.cli", "run", str(ROOT / "configs" / "demo.yaml"), "-w", str(ws), *QUICK]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert first.returncode == 0, first.stderr
    return DemoRun(cmd, cwd, ws, first)
