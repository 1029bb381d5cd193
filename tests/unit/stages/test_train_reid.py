"""Stage train-reid: through `reidaug run` on a tiny synthetic pipeline it trains, evaluates, is
cached (a second run and a nonsemantic change skip it), resumes a killed training from the
trainer's checkpoint in the partial cache folder, and trains the same weights as `train()`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from reidaug.stages.train_reid import TrainReidParams

ROOT = Path(__file__).resolve().parents[3]

PIPELINE = """\
name: train-reid-test
execution:
  scheduler: threads
  workers: 2
stages:
  demo-data:
    params: {{num_ids: 8, num_cams: 2, images_per_id_per_cam: 4, height: 64, width: 32, seed: 0}}
  ingest:
    params: {{format: market1501, chunk_size: 64}}
    inputs: {{source: demo-data.dataset}}
  export-hdf5:
    params: {{encoding: raw, image_height: 64, image_width: 32}}
  train-reid:
    params: {{backbone: tiny, pretrained: none, height: 64, width: 32, sampler: pk, p: 4, k: 4, loss: both,
             schedule: step, epochs: {epochs},
             warmup_epochs: 1, milestones: [2], lr: 0.001, log_every: 2, num_workers: 2}}
"""


def _write(tmp: Path, epochs: int) -> Path:
    y = tmp / "pipeline.yaml"
    y.write_text(PIPELINE.format(epochs=epochs))
    return y


def _cmd(yaml: Path, ws: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reidaug.cli", "run", str(yaml), "-w", str(ws), *extra]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _entry(ws: Path, stage: str) -> Path:
    (entry,) = [p for p in (ws / "cache" / stage).glob("*/*") if p.is_dir() and "." not in p.name]
    return entry


def test_runs_evaluates_and_is_cached(tmp_path: Path) -> None:
    yaml, ws = _write(tmp_path, epochs=3), tmp_path / "ws"
    first = subprocess.run(_cmd(yaml, ws), capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    entry = _entry(ws, "train-reid")
    run = entry / "run"
    assert {"model.pt", "config.json", "train_log.jsonl", "curves.png", "metrics.json", "cmc.png"} <= {
        p.name for p in run.iterdir()}
    assert not (run / "checkpoint.pt").exists()
    m = json.loads((run / "metrics.json").read_text())
    h5 = _entry(ws, "export-hdf5") / "dataset.h5"
    from reidaug.data.h5format import open_h5

    with open_h5(h5) as f:
        assert m["data"]["pipeline_key"] == f.info.pipeline_key != ""
    assert m["protocol"] == "market" and m["num_queries"] == 8 and m["model"]["path"] == "model.pt"
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["summary"]["steps"] == 6 and meta["outputs"]["model"] == "run"
    assert f"model: {run / 'model.pt'}" in first.stdout and "rank-1" in first.stdout
    # the run folder moved out of <key>.partial: its own files still point inside it
    assert json.loads((run / "result.json").read_text())["model_path"] == "model.pt"

    second = subprocess.run(_cmd(yaml, ws), capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert second.returncode == 0 and "Stage 'train-reid' didn't change, skipping" in second.stderr
    # nonsemantic: skip; semantic: run
    dry = subprocess.run(_cmd(yaml, ws, "--dry-run", "--set", "stages.train-reid.params.num_workers=0",
                              "--set", "stages.train-reid.params.log_every=7"), capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert dry.returncode == 0 and "0 of 4 stages to run" in dry.stdout, dry.stdout + dry.stderr
    dry = subprocess.run(_cmd(yaml, ws, "--dry-run", "--set", "stages.train-reid.params.epochs=4"),
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert "1 of 4 stages to run" in dry.stdout, dry.stdout + dry.stderr


def test_a_killed_training_resumes_from_its_checkpoint_with_the_weights_of_train(tmp_path: Path) -> None:
    from reidaug.train.trainer import train

    yaml, ws = _write(tmp_path, epochs=20), tmp_path / "ws"
    proc = subprocess.Popen(_cmd(yaml, ws), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                            cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        ckpt = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((ws / "cache" / "train-reid").glob("*/*.partial/run/checkpoint.pt"))
            if found:  # written under a temp name and renamed: complete once it has this name
                ckpt = found[0]  # kill now: the other 19 epochs are still to come
                break
            time.sleep(0.02)
        assert ckpt is not None, "training finished or failed before its first checkpoint"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its DataLoader workers
        proc.wait()
    partial_run = ckpt.parent
    assert not (partial_run / "model.pt").exists()

    again = subprocess.run(_cmd(yaml, ws), capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr and "0/1 chunks to do" not in again.stderr
    run = _entry(ws, "train-reid") / "run"
    result = json.loads((run / "result.json").read_text())
    assert result["resumed_from_step"] is not None and 0 < result["resumed_from_step"] < result["steps"] == 40

    # the same options through train() (no workers here): bit-identical weights
    torch.set_num_threads(1)
    params = TrainReidParams(backbone="tiny", pretrained="none", height=64, width=32, sampler="pk", p=4, k=4,
                             loss="both", schedule="step", epochs=20,
                             warmup_epochs=1, milestones=[2], lr=0.001, log_every=2, num_workers=0)
    train(params.train_config(), _entry(ws, "export-hdf5") / "dataset.h5", tmp_path / "direct")
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "direct" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_a_bad_parameter_is_a_config_error_at_load(tmp_path: Path) -> None:
    yaml = _write(tmp_path, epochs=3)
    yaml.write_text(yaml.read_text().replace("backbone: tiny", "backbone: resnet5"))
    out = subprocess.run(_cmd(yaml, tmp_path / "ws", "--dry-run"), capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "backbone" in out.stderr and "resnet50" in out.stderr and "pipeline.yaml:" in out.stderr, out.stderr
    # a combination the trainer refuses fails at load too, before any upstream stage runs
    yaml.write_text(_write(tmp_path, epochs=3).read_text().replace("epochs: 3,", "epochs: 3, head: triplet,"))
    out = subprocess.run(_cmd(yaml, tmp_path / "ws", "--dry-run"), capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "head='triplet' has none" in out.stderr and "pipeline.yaml:" in out.stderr
    assert not (tmp_path / "ws" / "cache").exists()
