"""The README's main command, as a newcomer runs it (CPU, local dask, embedded data)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# The demo's own YAML with smaller training budgets (the README runs it as written, ~minutes).
QUICK = ["--set", "stages.train-camstyle.params.iterations=20", "--set", "stages.train-posegan.params.iterations=12",
         "--set", "stages.train-reid.params.epochs=1"]


def test_demo_pipeline_runs_then_skips_everything(tmp_path):
    cmd = [sys.executable, "-m", "reidaug.cli", "run", str(ROOT / "configs" / "demo.yaml"), "-w", str(tmp_path / "ws"),
           *QUICK]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Completed" in first.stderr
    assert "HDF5 dataset:" in first.stdout and "reidaug inspect" in first.stdout
    assert "CamStyle fakes" in first.stdout and "SSIM vs ground truth" in first.stdout
    assert "pose-guided fakes (pg2, targets canonical)" in first.stdout and "Held-out pose transfer" in first.stdout
    assert next((tmp_path / "ws" / "cache" / "score-posegan").glob("*/*/pairs.png")).stat().st_size > 1000
    assert (next((tmp_path / "ws" / "cache" / "train-reid").glob("*/*/run")) / "metrics.json").is_file()
    h5 = next((tmp_path / "ws" / "cache" / "export-hdf5").glob("*/*/dataset.h5"))
    inspect = subprocess.run([sys.executable, "-m", "reidaug.cli", "inspect", str(h5), "--verify", "--grid",
                              str(tmp_path / "grid.png")], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert "every checksum and invariant holds" in inspect.stdout and (tmp_path / "grid.png").stat().st_size > 1000
    assert (tmp_path / "grid_fakes.png").stat().st_size > 1000  # origins beside their CamStyle fakes
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0
    assert second.stderr.count("didn't change, skipping") == first.stderr.count("Completed")


def test_stages_command_lists_kinds_and_params(tmp_path):
    out = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages"], capture_output=True, text=True)
    assert out.returncode == 0 and "extract-pose" in out.stdout and "ingest" in out.stdout
    one = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages", "ingest"], capture_output=True, text=True)
    assert "format = (required)" in one.stdout and "chunk_size = 512" in one.stdout
    bad = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages", "ingset"], capture_output=True, text=True)
    assert bad.returncode == 2 and 'Did you mean "ingest"' in bad.stderr and "Traceback" not in bad.stderr
