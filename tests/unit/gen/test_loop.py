"""reidaug.gen.loop: resume, cadence, phases and the test hook of the one training loop, on a toy model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reidaug.gen.common import pick_device
from reidaug.gen.loop import Phase, finish_run, train_loop


class Toy:
    """A "model" whose whole training state is a number and a step: enough to see what the loop does."""

    def __init__(self) -> None:
        self.w, self.step, self.lr_steps = 0.0, 0, 0

    def to(self, device):
        return self

    def state_dict(self):
        return {"w": self.w, "step": self.step, "lr_steps": self.lr_steps}

    def load_state_dict(self, state) -> None:
        self.w, self.step, self.lr_steps = state["w"], state["step"], state["lr_steps"]

    def train(self, batch: float, scale: float = 1.0) -> dict[str, float]:
        self.w += scale * batch
        self.step += 1
        return {"loss": self.w}


class Cadence:
    checkpoint_every, sample_every, log_every = 4, 5, 3  # checkpoints mid-window: the resumed log must not show it


def batch_for(t: int) -> float:
    return float(np.random.default_rng([7, t]).random())  # a function of (seed, t) only


def run(run_dir, model, phases=None, **kw):
    drawn = []
    out = train_loop(model, iterations=10, batch_for=batch_for, train_step=phases or model.train, run_dir=run_dir,
                     cadence=Cadence(), device=pick_device("cpu", "test"), where="toy",
                     checkpoint_extra={"name": "toy"}, sample=lambda png: drawn.append(png.name),
                     catch_up=lambda step: setattr(model, "lr_steps", step // 5), **kw)
    return out, drawn


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight, drawn = run(tmp_path / "a", Toy())
    assert straight.steps == 10 and straight.resumed_from is None and straight.steps_run == 10
    assert drawn == ["step_0000005.png", "step_0000010.png"]  # every sample_every, and at the end
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", Toy(), should_stop=lambda step: step == 8)
    with open(tmp_path / "b" / "losses.jsonl", "a") as f:  # lines past the checkpoint, one cut by the kill
        f.write('{"loss": 1.0, "step": 9}\n{"step": 10, "lo')
    model = Toy()
    resumed, drawn = run(tmp_path / "b", model)
    assert resumed.resumed_from == 8 and resumed.steps_run == 2 and drawn == ["step_0000010.png"]
    assert (tmp_path / "a" / "losses.jsonl").read_bytes() == (tmp_path / "b" / "losses.jsonl").read_bytes()
    log = [json.loads(x) for x in (tmp_path / "a" / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 10]  # every log_every, and at the end
    w = np.cumsum([batch_for(t) for t in range(10)])  # the toy's loss after each step
    assert log[0]["loss"] == pytest.approx(np.mean(w[0:3]))  # window mean
    assert log[2]["loss"] == pytest.approx(np.mean(w[6:9]))  # steps 7-9 span the resume at step 8
    assert model.lr_steps == 2 and resumed.last_losses == {"loss": log[-1]["loss"]}
    import torch

    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert ckpt == {"model": model.state_dict(), "loss_window": [], "name": "toy"}
    finish_run(tmp_path / "b", keep_checkpoint=False)
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_phases_label_the_log_and_end_with_a_line_and_a_grid(tmp_path):
    model = Toy()
    phases = [Phase("G1", 4, model.train), Phase("G2", 10, lambda b: model.train(b, scale=-1.0))]
    out, drawn = run(tmp_path, model, phases=phases)
    log = [json.loads(x) for x in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [(r["step"], r["phase"]) for r in log] == [(3, "G1"), (4, "G1"), (6, "G2"), (9, "G2"), (10, "G2")]
    assert drawn == ["step_0000004.png", "step_0000005.png", "step_0000010.png"]
    assert model.w == pytest.approx(sum(batch_for(t) for t in range(4)) - sum(batch_for(t) for t in range(4, 10)))
    assert "phase" not in out.last_losses


def test_a_garbled_checkpoint_is_set_aside_but_a_read_error_is_not(tmp_path, monkeypatch):
    from reidaug.errors import DataError
    from reidaug.io import checkpoint

    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a torch file")
    assert checkpoint.load_or_set_aside(ckpt, "toy") is None  # damaged: moved aside, start afresh
    assert not ckpt.exists() and (tmp_path / "checkpoint.pt.damaged").exists()

    ckpt.write_bytes(b"fine")

    def io_error(path, where, weights_only=False):
        raise DataError(f"{where}: cannot read") from OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint, "load_torch", io_error)
    with pytest.raises(DataError, match="cannot read"):  # EIO is not damage: the file stays
        checkpoint.load_or_set_aside(ckpt, "toy")
    assert ckpt.read_bytes() == b"fine"
