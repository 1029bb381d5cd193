"""The one resumable training loop of every generator (CamStyle, PG2, Deformable GAN, and the next).

A generator's training module supplies the model and three pure pieces; :func:`train_loop` does
the rest, the same way for every model:

- **resume** — if ``run_dir/checkpoint.pt`` exists, ``model.load_state_dict(state["model"])``
  and the loss log is truncated to the checkpoint's step, so a killed-and-resumed run writes the
  same log (and, on the CPU, the same weights) as an uninterrupted one: the losses of the steps
  since the last log line are in the checkpoint too, so a line that spans a resume averages the
  same steps;
- **step-seeded batches** — ``batch_for(t)`` returns the batch of step ``t`` as a pure function
  of ``(seed, t)`` (e.g. ``np.random.default_rng([seed, t])``), so resume needs no RNG state;
- **one step** — ``train_step(batch)`` runs one optimisation step (device transfer and autocast
  inside) and returns ``{loss name: float}``; it advances the model's step by one;
- **cadence** — every ``log_every`` steps one JSON line ``{"step", **log_extra(step), **mean
  losses since the last line}``; every ``sample_every`` steps ``sample(png_path)`` draws a grid
  into ``run_dir/samples/step_NNNNNNN.png``; every ``checkpoint_every`` steps (and at the end)
  ``{"model": model.state_dict(), **checkpoint_extra}`` is saved atomically; a log line and a
  grid are also written at the end of every phase;
- **catch-up** — ``catch_up(step)`` (e.g. stepping learning-rate schedulers until they match the
  step) runs once after loading and after every step;
- **phases** — a model trained in stages (PG2: G1 alone, then G2 with the discriminator) passes
  ``[Phase("G1", until=k, train_step=...), Phase("G2", until=n, train_step=...)]``: step ``t``
  runs the first phase with ``t < until``; each log line then names its phase;
- **test hook** — ``should_stop(step)`` is asked right after each checkpoint; True raises
  ``KeyboardInterrupt`` there, as a kill at that moment would.

A new generator (DCGAN, PTGAN/SPGAN, DG-Net) needs: a model whose ``state_dict`` holds the whole
training state (nets, optimisers, schedulers, step, any RNG), a ``batch_for``, a ``train_step``,
optionally a ``sample``; then it writes its generator weights with :func:`save_generator`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from reidaug.gen.common import to_device
from reidaug.io.checkpoint import load_torch, state_checksum
from reidaug.io import faults
from reidaug.io.checkpoint import load_or_set_aside, remove_checkpoint, save_torch
from reidaug.io.jsonl import JsonlLog

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.jsonl"
SAMPLES = "samples"
WINDOW = "loss_window"  # checkpoint entry: the per-step losses not yet averaged into a log line

Losses = Mapping[str, float]


class Cadence(Protocol):
    """How often (in steps) the loop writes: any settings object with these three fields."""

    checkpoint_every: int
    sample_every: int
    log_every: int


@dataclasses.dataclass(frozen=True)
class Phase:
    """Steps ``[previous phase's until, until)`` run ``train_step``; ``name`` labels their log lines."""

    name: str
    until: int
    train_step: Callable[[Any], Losses]


@dataclasses.dataclass(frozen=True)
class LoopOutcome:
    steps: int  # the model's step at the end (= iterations)
    resumed_from: int | None  # the checkpoint's step, or None for a fresh start
    steps_run: int  # steps this call ran (steps - resumed_from)
    seconds: float  # wall time of those steps, samples and checkpoints included
    last_losses: dict[str, float]  # the last log line without "step" / "phase"


def train_loop(model: Any, *, iterations: int, batch_for: Callable[[int], Any],
               train_step: Callable[[Any], Losses] | Sequence[Phase], run_dir: Path, cadence: Cadence,
               device: "torch.device", where: str,  # noqa: F821
               checkpoint_extra: Mapping[str, Any] | None = None,
               step_of: Callable[[Any], int] = lambda m: m.step,
               catch_up: Callable[[int], None] | None = None,
               log_extra: Callable[[int], Mapping[str, Any]] | None = None,
               sample: Callable[[Path], None] | None = None,
               should_stop: Callable[[int], bool] | None = None) -> LoopOutcome:
    """Train ``model`` up to step ``iterations`` in ``run_dir``, resuming from its checkpoint
    (see the module docstring for what each argument is). ``where`` names the run in messages
    (e.g. ``"train-camstyle cyclegan_c0-c1"``); ``step_of(model)`` reads the model's step."""
    phases = list(train_step) if not callable(train_step) else [Phase("", iterations, train_step)]
    labelled = len(phases) > 1
    ckpt_path = run_dir / CHECKPOINT
    loss_log = JsonlLog(run_dir / LOSSES)
    resumed_from = None
    window: list[Losses] = []  # the losses since the last log line (checkpointed: a resume continues it)
    state = load_or_set_aside(ckpt_path, where) if ckpt_path.exists() else None
    if state is not None:
        model.load_state_dict(state["model"])
        window = list(state.get(WINDOW, []))
        resumed_from = step_of(model)
        log.info("%s: resuming at step %d of %d", where, resumed_from, iterations)
    loss_log.truncate(resumed_from or 0)
    to_device(model, device)
    if catch_up is not None:
        catch_up(step_of(model))  # a checkpoint is always caught up; this only guards the invariant

    ends = {p.until for p in phases} | {iterations}
    t0 = time.perf_counter()
    start = t = step_of(model)
    while t < iterations:
        phase = next((p for p in phases if t < p.until), phases[-1])
        window.append(phase.train_step(batch_for(t)))
        step = t = t + 1
        if catch_up is not None:
            catch_up(step)
        if step % cadence.log_every == 0 or step in ends:
            keys = sorted({k for w in window for k in w})
            mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in keys}
            extra = {"phase": phase.name} if labelled else {}
            loss_log.append({"step": step, **extra, **(log_extra(step) if log_extra else {}), **mean})
            window = []
        if sample is not None and (step % cadence.sample_every == 0 or step in ends):
            sample(run_dir / SAMPLES / f"step_{step:07d}.png")
        if step % cadence.checkpoint_every == 0 or step == iterations:
            save_torch(ckpt_path, {"model": model.state_dict(), WINDOW: [dict(w) for w in window],
                                   **(checkpoint_extra or {})}, progress={"step": step, "of": iterations})
            faults.point("checkpoint", where)
            if should_stop is not None and should_stop(step):
                raise KeyboardInterrupt(f"stopped after the checkpoint of step {step} (test hook)")
    seconds = time.perf_counter() - t0
    records = loss_log.records()
    last = records[-1] if records else {}
    return LoopOutcome(steps=step_of(model), resumed_from=resumed_from, steps_run=step_of(model) - start,
                       seconds=seconds, last_losses={k: v for k, v in last.items() if k not in ("step", "phase")})


def generator_weights(model: Any) -> dict[str, Any]:
    """The generator nets' weights (names starting with ``G``), cloned onto the CPU: what
    inference needs of a trained GAN, without discriminators or optimiser state."""
    nets = model.nets.state_dict()
    return {k: v.detach().cpu().clone() for k, v in nets.items() if k.startswith("G")}


def load_generator(model: Any, state: Mapping[str, Any], file: Path, device: "torch.device",  # noqa: F821
                   where: str, retrain: str) -> Any:
    """The inverse of :func:`save_generator` for inference: drop the discriminator from ``model`` (built from
    the file's config), load ``state["weights"]`` (a file that does not match its config is a DataError
    naming the stage to re-run, ``retrain``), move it to ``device`` in eval mode; returns the model."""
    from reidaug.errors import DataError

    del model.nets["D"]  # inference needs the generator(s) only
    result = model.nets.load_state_dict(state["weights"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(f"{where}: {file} does not match its config (missing {result.missing_keys[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]}). Fix: re-run {retrain}.")
    to_device(model, device)
    model.eval()
    return model


def generator_file(folder: Path, model: str, trainer: str) -> Path:
    """``<folder>/<model>.pt``, the one generator file a single-model training stage (``trainer``) writes; a
    folder without it is a DataError naming the binding to fix."""
    from reidaug.errors import DataError

    f = Path(folder) / f"{model}.pt"
    if not f.is_file():
        raise DataError(f"no {model}.pt in {folder}. Fix: bind models to a {trainer} output "
                        f"(models: {trainer}.models).")
    return f


def read_generator_file(file: Path, model: str, trainer: str, where: str) -> dict[str, Any]:
    """The state :func:`save_generator` wrote to ``file`` for ``model``; another model's file, or one
    without weights, is a DataError naming ``trainer``."""
    from reidaug.errors import DataError

    state = load_torch(file, where)
    if state.get("model") != model or "weights" not in state:
        raise DataError(f"{where}: {file} is not a {trainer} generator file (model = {state.get('model')!r}). "
                        f"Fix: bind models to a {trainer} output ({trainer}.models).")
    return state


def save_generator(path: Path, state: dict[str, Any]) -> str:
    """Add ``checksum`` (:func:`state_checksum` of ``state["weights"]``) to ``state``, save it
    atomically to ``path`` and return the checksum: the generator file every fake cites."""
    state["checksum"] = state_checksum(state["weights"])
    save_torch(path, state)
    return state["checksum"]


def finish_run(run_dir: Path, keep_checkpoint: bool) -> None:
    """After a finished training: drop ``run_dir``'s full checkpoint unless ``keep_checkpoint``
    (the generator file is what later stages read), and copy the last sample grid to
    ``samples/final.png``."""
    from reidaug.io.atomic import write_bytes

    if not keep_checkpoint:
        remove_checkpoint(run_dir / CHECKPOINT)
    (run_dir / (CHECKPOINT + ".damaged")).unlink(missing_ok=True)  # set aside on a resume: done with it
    grids = sorted((run_dir / SAMPLES).glob("step_*.png"))
    if grids:
        write_bytes(run_dir / SAMPLES / "final.png", grids[-1].read_bytes())
