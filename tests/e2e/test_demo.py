"""The README's main command, as a newcomer runs it (CPU, local dask, embedded data)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_pipeline_runs_then_skips_everything(quick_demo, tmp_path):
    first, ws = quick_demo.first, quick_demo.workspace
    assert "Completed" in first.stderr
    assert "HDF5 dataset:" in first.stdout and "reidaug inspect" in first.stdout
    assert "CamStyle fakes" in first.stdout and "SSIM vs ground truth" in first.stdout
    assert "pose-guided fakes (pg2, targets canonical)" in first.stdout and "Held-out pose transfer" in first.stdout
    # quiet by default: mediapipe / TFLite / absl native lines go to the run log, not the terminal
    for native in ("W0000", "TensorFlow Lite", "absl::", "inference_feedback_manager"):
        assert native not in first.stderr, native
    assert first.stdout.rstrip().splitlines()[-1] == f"report: {ws / 'report.html'}"  # the run ends on its report
    assert next((ws / "cache" / "score-posegan").glob("*/*/pairs.png")).stat().st_size > 1000
    assert (next((ws / "cache" / "train-reid").glob("*/*/run")) / "metrics.json").is_file()
    h5 = next((ws / "cache" / "export-hdf5").glob("*/*/dataset.h5"))
    inspect = subprocess.run([sys.executable, "-m", "reidaug.cli", "inspect", str(h5), "--verify", "--grid",
                              str(tmp_path / "grid.png")], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert "every checksum and invariant holds" in inspect.stdout and (tmp_path / "grid.png").stat().st_size > 1000
    assert (tmp_path / "grid_fakes.png").stat().st_size > 1000  # origins beside their CamStyle fakes
    second = subprocess.run(quick_demo.cmd, capture_output=True, text=True, cwd=quick_demo.cwd)
    assert second.returncode == 0
    assert second.stderr.count("didn't change, skipping") == first.stderr.count("Completed")


def test_stages_command_lists_kinds_and_params(tmp_path):
    out = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages"], capture_output=True, text=True)
    assert out.returncode == 0 and "extract-pose" in out.stdout and "ingest" in out.stdout
    one = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages", "ingest"], capture_output=True, text=True)
    assert "format = (required)" in one.stdout and "chunk_size = 512" in one.stdout
    bad = subprocess.run([sys.executable, "-m", "reidaug.cli", "stages", "ingset"], capture_output=True, text=True)
    assert bad.returncode == 2 and 'Did you mean "ingest"' in bad.stderr and "Traceback" not in bad.stderr
