"""The trainer end to end on tiny synthetic HDF5 files (CPU, seconds): it fits, it resumes
bit-identically after a SIGKILL, it refuses to mix runs, and features come out in file order."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reidaug.errors import ConfigError, UnknownNameError
from reidaug.train.config import TrainConfig
from reidaug.train.features import extract_features
from reidaug.train.model import load_model
from reidaug.train.trainer import train
from tiny_reid import H, W, tiny_config, write_reid_h5

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reid_h5(tmp_path_factory.mktemp("data") / "tiny.h5", layout="strided")


def _rank1_self(feats: np.ndarray, pids: np.ndarray) -> float:
    """Nearest neighbour (cosine) among the other images: the fraction with the same identity."""
    f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    d = -f @ f.T
    np.fill_diagonal(d, np.inf)
    return float((pids[d.argmin(1)] == pids).mean())


def test_fits_a_tiny_set_and_writes_its_run_folder(tiny_h5: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_config()
    res = train(cfg, tiny_h5, run)
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert {"loss", "loss_id", "loss_triplet", "acc", "lr", "images_per_s", "epoch"} <= set(rows[-1])
    assert np.mean([r["loss"] for r in rows[-3:]]) < 0.5 * np.mean([r["loss"] for r in rows[:3]])
    assert res.final_accuracy == 1.0 and res.steps == rows[-1]["step"] and res.num_classes == 5
    feats, pids, camids = extract_features(run, tiny_h5, "train", device="cpu")
    assert feats.dtype == np.float32 and feats.shape == (40, 128)
    assert _rank1_self(feats, pids) == 1.0

    saved = json.loads((run / "config.json").read_text())
    assert saved["train"] == cfg.to_dict() and saved["resolved"]["num_classes"] == 5
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "checkpoint.pt").exists()  # removed at the end (keep_checkpoint=False)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp files
    assert load_model(run).config.input_size == (H, W)

    # Same command again: nothing to do. Another config on this folder: refused.
    again = train(cfg, tiny_h5, run)
    assert again.skipped and again.steps == res.steps
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.01.*--out"):
        train(tiny_config(lr=1e-2), tiny_h5, run)


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from reidaug.train.config import TrainConfig
    from reidaug.train.trainer import train
    cfg = TrainConfig.from_user(__import__("json").loads(sys.argv[1]))
    def on_step(step, total):
        if step == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, sys.argv[2], sys.argv[3], on_step=on_step)
""")


def _kill_training_at(cfg: TrainConfig, data: Path, run: Path, step: int) -> None:
    """Train ``cfg`` on ``data`` into ``run`` in a subprocess that SIGKILLs itself at ``step``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, json.dumps(cfg.to_dict()), str(data), str(run),
                           str(step)], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_killed_run_resumes_at_its_checkpoint_and_ends_with_identical_weights(tiny_h5: Path, tmp_path: Path) -> None:
    # Dropout (IDE's fc1024), random erasing and the P x K sampler all draw random numbers.
    cfg = tiny_config(head="ide", loss="both", random_erasing=True, p=3, k=4, epochs=4,
                       checkpoint_unit="step", checkpoint_every=3, deterministic=True)
    killed = tmp_path / "killed"
    _kill_training_at(cfg, tiny_h5, killed, 7)
    assert (killed / "checkpoint.pt").is_file() and not (killed / "model.pt").exists()

    # Resume (with a DataLoader worker this time: worker count must not change the result).
    seen: list[int] = []
    resumed = train(TrainConfig.from_user({**cfg.to_dict(), "num_workers": 1}), tiny_h5, killed,
                    on_step=lambda s, t: seen.append(s))
    assert resumed.resumed_from_step == 6  # the last checkpoint before the kill at step 7
    assert seen[0] == 7 and seen[-1] == resumed.steps  # steps 1-6 were not run again

    straight = train(cfg, tiny_h5, tmp_path / "straight")
    assert straight.resumed_from_step is None and straight.steps == resumed.steps
    a = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    steps = [json.loads(x)["step"] for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # lines the killed run logged past step 6 were dropped


def test_a_kill_inside_a_loss_window_resumes_to_the_same_log_and_final_loss(tmp_path: Path) -> None:
    """The checkpoint at step 6 falls inside the window logged at step 8 (log_every 4): the resumed
    run must log the same means there and end with the same final loss and accuracy (the
    train-reid stage's chunk results), with realfake batches as the demo trains."""
    data = write_reid_h5(tmp_path / "fakes.h5", num_ids=4, per_cam=3, fakes=8, layout="strided", fake_scheme="lsr")
    cfg = tiny_config(sampler="realfake", train_batch_size=6, real_per_batch=4, fake_per_batch=2, loss="ide",
                      schedule="cosine", warmup_epochs=1, epochs=3, log_every=4, checkpoint_unit="step",
                      checkpoint_every=3)
    killed = tmp_path / "killed"
    _kill_training_at(cfg, data, killed, 7)
    resumed = train(cfg, data, killed)
    straight = train(cfg, data, tmp_path / "straight")
    assert resumed.resumed_from_step == 6 and resumed.steps == straight.steps
    assert (resumed.final_loss, resumed.final_accuracy) == (straight.final_loss, straight.final_accuracy)

    def logged(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"}
                for x in (run / "train_log.jsonl").read_text().splitlines()]

    assert logged(killed) == logged(tmp_path / "straight")


def test_resume_refuses_a_changed_config(tiny_h5: Path, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, checkpoint_unit="step", checkpoint_every=1, keep_checkpoint=True)
    train(cfg, tiny_h5, tmp_path / "r")
    (tmp_path / "r" / "model.pt").unlink()  # as if killed after its last checkpoint
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1.*original options"):
        train(tiny_config(epochs=2, seed=1, checkpoint_unit="step", checkpoint_every=1), tiny_h5, tmp_path / "r")


def test_realfake_batches_with_lsro_fakes_train(tmp_path: Path) -> None:
    data = write_reid_h5(tmp_path / "fakes.h5", num_ids=3, per_cam=2, fakes=4, layout="strided")
    cfg = tiny_config(sampler="realfake", train_batch_size=6, real_per_batch=4, fake_per_batch=2, epochs=2,
                       loss="ide", head="ide", warmup_epochs=0, milestones=())
    res = train(cfg, data, tmp_path / "rf")
    assert res.steps == 2 * (12 // 4)  # RealFakeSampler: one pass over the 12 real images per epoch
    assert np.isfinite(res.final_loss) and 0.0 <= res.final_accuracy <= 1.0
    real_only = train(tiny_config(sources=("real",), p=3, k=2, epochs=1), data, tmp_path / "real")
    assert json.loads((tmp_path / "real" / "config.json").read_text())["resolved"]["num_train_images"] == 12
    assert real_only.steps >= 1


def test_label_smoothing_smooths_plain_onehot_targets_and_leaves_assign_labels_targets(tmp_path: Path) -> None:
    """label_smoothing (the strong baseline's LSR from a plain export) acts on the rows stored as
    one-hot only: LSR targets that assign-labels made train to the same weights whatever its value."""
    from reidaug.data.torchdata import ReidH5Dataset

    data = write_reid_h5(tmp_path / "fakes.h5", num_ids=3, per_cam=2, fakes=6, layout="strided", fake_scheme="lsr")
    ds = ReidH5Dataset(data)
    assert ds.is_onehot.tolist() == [not f for f in ds.is_fake]  # real one-hot, the fakes LSR

    def weights(sources: tuple[str, ...], eps: float, pad: int = 10) -> dict[str, torch.Tensor]:
        cfg = tiny_config(sampler="random", train_batch_size=6, loss="ide", head="ide", dropout=0.0, epochs=2,
                          warmup_epochs=0, milestones=(), sources=sources, label_smoothing=eps, crop_pad=pad)
        run = tmp_path / f"{'-'.join(sources)}-{eps}-{pad}"
        train(cfg, data, run)
        return torch.load(run / "model.pt", weights_only=True)["state_dict"]

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(weights(("camstyle",), 0.0), weights(("camstyle",), 0.1))
    assert not same(weights(("real",), 0.0), weights(("real",), 0.1))
    assert not same(weights(("real",), 0.1), weights(("real",), 0.1, pad=2))  # crop_pad reaches the crop


def test_extract_features_order_and_flip(tiny_h5: Path) -> None:
    from reidaug.train.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny", num_classes=5, input_size=(H, W)), "none")
    f1, pids, camids = extract_features(model, tiny_h5, "query", flip=True, batch_size=3, device="cpu")
    f0, _, _ = extract_features(model, tiny_h5, "query", flip=False, batch_size=4, device="cpu")
    assert f1.shape == (10, 128) and model.training  # the caller's mode is restored
    assert pids.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and camids.tolist() == [0, 1] * 5
    assert not np.allclose(f0, f1, atol=1e-4)  # the flipped view was averaged in
    f2, _, _ = extract_features(model, tiny_h5, "query", flip=True, batch_size=10, device="cpu")
    np.testing.assert_allclose(f1, f2, rtol=1e-4, atol=1e-5)  # batch size does not matter
    # l2sum: the sum of the unit-length features of both views (each weighs the same under cosine)
    f3, _, _ = extract_features(model, tiny_h5, "query", flip=True, flip_fusion="l2sum", batch_size=10, device="cpu")
    ff = 2 * f1 - f0  # the flipped view's raw feature
    unit = f0 / np.linalg.norm(f0, axis=1, keepdims=True) + ff / np.linalg.norm(ff, axis=1, keepdims=True)
    np.testing.assert_allclose(f3, unit, rtol=1e-3, atol=1e-4)
    with pytest.raises(UnknownNameError, match="flip fusion"):
        extract_features(model, tiny_h5, "query", flip_fusion="max", device="cpu")


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown training option 'learning_rate'"):
        TrainConfig.from_user({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="head='triplet' has none"):
        TrainConfig.from_user({"head": "triplet", "loss": "both"})
    with pytest.raises(UnknownNameError, match='Did you mean "cosine"'):
        TrainConfig.from_user({"schedule": "cosin"})
    with pytest.raises(ConfigError, match="real_per_batch"):
        TrainConfig.from_user({"sampler": "realfake", "batch_size": 64, "real_per_batch": 40, "fake_per_batch": 16})


def test_a_validation_split_holds_out_identities_and_is_evaluated_without_the_test(tmp_path: Path) -> None:
    """val_fraction holds out seeded train identities — their real images and the fakes made from
    them — and evaluate_run(split="val") measures on them alone (metrics_val.json); the test split's
    metrics.json is not written."""
    from reidaug.data.h5format import open_h5
    from reidaug.data.torchdata import validation_ids
    from reidaug.eval.report import evaluate_run

    data = write_reid_h5(tmp_path / "d.h5", num_ids=8, per_cam=2, fakes=2, layout="strided")
    with open_h5(data) as f:
        meta = f.meta("train")
        real = meta.source == 0
        ids = validation_ids(meta.pid[real], 0.25, 3)
        held_rows = int(np.isin(meta.pid, ids).sum())
    assert len(ids) == 2 and ids == validation_ids(meta.pid[real], 0.25, 3) != validation_ids(meta.pid[real], 0.25, 4)
    cfg = tiny_config(val_fraction=0.25, val_seed=3, epochs=2, p=3, k=2)
    train(cfg, data, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert saved["pids"] == ids and saved["num_train_ids"] == 8
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["num_train_images"] == len(meta.pid) - held_rows  # their fakes went too
    rec = evaluate_run(tmp_path / "run", split="val", device="cpu", metric="cosine").record
    assert rec["split"] == "val" and rec["num_queries"] == 2 * 2 * 2  # 2 ids x 2 cameras x 2 images
    assert sorted(set(rec["validation"]["pids"])) == ids
    assert (tmp_path / "run" / "metrics_val.json").is_file() and not (tmp_path / "run" / "metrics.json").exists()
    train(tiny_config(epochs=1, p=3, k=2), data, tmp_path / "plain")
    with pytest.raises(ConfigError, match="without a validation split"):
        evaluate_run(tmp_path / "plain", split="val", device="cpu")
