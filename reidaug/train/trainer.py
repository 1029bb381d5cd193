"""Resumable re-ID training on a reidaug HDF5 file: ``train(config, data_path, run_dir)``.

The default recipe is the campaign's strong baseline (:class:`~reidaug.train.config.TrainConfig`):
BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification",
CVPRW 2019), soft cross-entropy on the file's targets with label smoothing of the one-hot ones,
random batches, Adam 3.5e-4 with a linear warm-up and a cosine decay, flip + pad-crop, random
erasing optional. Bag of Tricks' P x K batches (Hermans et al. 2017) with batch-hard triplet, the
IDE baseline (Zheng et al. 2016) and CamStyle's M real : N fake batches (Zhong et al., CVPR 2018)
are options (``sampler="pk", loss="both"``; ``head="ide"``; ``sampler="realfake"``).

Run folder (``run_dir``)::

    config.json       the resolved config (TrainConfig + what was resolved from data and machine)
    train_log.jsonl   one JSON object per logged step: step, epoch, loss parts, accuracy, lr, images/s
    checkpoint.pt     latest checkpoint while training (removed at the end unless keep_checkpoint)
    model.pt          final weights + model config (reidaug.train.model.load_model reads it)
    curves.png        loss and accuracy curves
    result.json       the TrainResult numbers

Resuming. Checkpoints are written atomically (temp name in the same folder, then ``os.replace``)
every ``checkpoint_every`` epochs or steps. Each holds the model, optimiser, LR schedule, AMP
scaler, the python / numpy / torch / CUDA RNG states, the epoch, the batches done in that epoch
and the global step. Running the same command again resumes from it, and ends with the same
weights as a run that was never interrupted (bit-identical on the CPU with ``num_workers`` any
value). What makes that hold:

- the batch order is a function of ``(seed, epoch)`` only (the samplers), and a resumed epoch
  skips the batches already done without reading them;
- the augmentation of a batch (flip, crop, erasing) is drawn from a torch generator seeded by
  ``(seed, epoch, batch index)``, never from a worker's running RNG, so it is the same whichever
  process makes the batch and wherever the run was resumed;
- the DataLoader gets its own generator, so the global torch RNG (dropout, stochastic depth)
  advances only with the model, and its state is in the checkpoint.

A finished run folder (``model.pt`` present) with the same config is not retrained.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from reidaug.errors import ConfigError, DataError
from reidaug.io.atomic import atomic_path, is_temp_name, write_json
from reidaug.io import faults
from reidaug.io.checkpoint import load_or_set_aside, remove_checkpoint, save_torch
from reidaug.io.jsonl import JsonlLog
from reidaug.train.backbones import pretrained_weights_path
from reidaug.train.config import LEGACY_VALUES, NONSEMANTIC, TrainConfig
from reidaug.train.features import resolve_device
from reidaug.train.losses import batch_hard_triplet, smooth_onehot, soft_cross_entropy, triplet_accuracy
from reidaug.train.model import ModelConfig, ReIDModel, build_model, save_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "reidaug-train-checkpoint"
CHECKPOINT_VERSION = 1

CONFIG_FILE = "config.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
PLOT_FILE = "curves.png"
RESULT_FILE = "result.json"
VALIDATION_FILE = "validation.json"  # the identities val_fraction held out (read by evaluate_run)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced."""

    run_dir: Path
    model_path: Path
    config_path: Path
    log_path: Path
    plot_path: Path
    steps: int
    epochs: int
    final_loss: float  # mean over the last logged window
    final_accuracy: float  # ID accuracy (triplet accuracy for loss="triplet"), last window
    images_per_s: float  # training throughput of this process (resumed part only)
    resumed_from_step: int | None  # None: started from scratch
    skipped: bool = False  # True: the run folder already held a finished run with this config
    num_classes: int = 0
    device: str = "cpu"
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------- LR schedule


class LRSchedule:
    """Warm-up + step / cosine decay as a function of the fractional epoch; sets group LRs.

    Stateless apart from the last progress set (kept for the checkpoint and the log).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.progress = 0.0

    def factor(self, progress: float) -> float:
        c = self.config
        if c.schedule == "step":
            f = c.gamma ** sum(progress >= m for m in c.milestones)
        else:
            span = max(c.epochs - c.warmup_epochs, 1e-9)
            t = min(max((progress - c.warmup_epochs) / span, 0.0), 1.0)
            f = 0.5 * (1.0 + math.cos(math.pi * t))
        if progress < c.warmup_epochs:
            alpha = progress / c.warmup_epochs
            f *= c.warmup_factor * (1 - alpha) + alpha
        return f

    def set_progress(self, progress: float) -> None:
        self.progress = float(progress)
        f = self.factor(self.progress)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.set_progress(float(state["progress"]))


# --------------------------------------------------------------------------- batches


class RandomBatchSampler(Sampler[list[int]]):
    """All positions in a random order per ``(seed, epoch)``, cut into batches (last dropped)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0) -> None:
        if n < batch_size:
            raise DataError(f"RandomBatchSampler: {n} samples < batch_size {batch_size}. Fix: lower batch_size.")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for b in range(len(self)):
            yield [int(i) for i in perm[b * self.batch_size : (b + 1) * self.batch_size]]


class SeededBatch(list):
    """A batch of dataset positions that carries the seed of its augmentation draws."""

    seed: int = 0


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """63-bit seed of batch ``index`` of ``epoch`` (independent of processes and resumes)."""
    ss = np.random.SeedSequence([int(seed), 0x7E1D, int(epoch), int(index)])
    words = ss.generate_state(2, dtype=np.uint32).astype(np.uint64)
    return int(words @ np.array([1 << 31, 1], np.uint64)) & (2**63 - 1)


class EpochBatches(Sampler[list[int]]):
    """Wraps a batch sampler: per-batch augmentation seeds, and skipping a resumed epoch's start."""

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner, self.seed = inner, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(len(self.inner) - self.start, 0)

    def __iter__(self) -> Iterator[SeededBatch]:
        for i, positions in enumerate(self.inner):
            if i < self.start:
                continue
            b = SeededBatch(positions)
            b.seed = batch_seed(self.seed, self.epoch, i)
            yield b


class SeededDataset(torch.utils.data.Dataset):
    """Runs the wrapped dataset's ``__getitems__`` with torch's CPU RNG seeded per batch.

    The global RNG state is restored afterwards (``fork_rng``), so in the main process
    (``num_workers=0``) the model's dropout draws are unaffected by data loading.
    """

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, pos: int) -> Any:  # pragma: no cover - the loader always batches
        return self.base[pos]

    def __getitems__(self, batch: Sequence[int]) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(getattr(batch, "seed", 0))
            return self.base.__getitems__(list(batch))


# --------------------------------------------------------------------------- helpers


def data_fingerprint(data_path: str | os.PathLike[str]) -> str:
    """sha256 over the stored checksums of every train dataset (images, labels, targets ...)."""
    import h5py

    from reidaug.data.h5format import open_h5

    with open_h5(data_path) as f:
        if "train" not in f.splits:
            raise DataError(f"{data_path} has no train split (splits: {list(f.splits)}). "
                            "Fix: export the training images into it.")
        g = f.h5["train"]
        h = hashlib.sha256()
        for name in sorted(g):
            if isinstance(g[name], h5py.Dataset):
                h.update(f"{name}={g[name].attrs.get('sha256', '')};".encode())
        return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    """Python / numpy / torch / CUDA RNG states in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The semantic options that differ; an option one side lacks (a run written before it
    existed) counts as what such a run did: its legacy value, else its default."""
    defaults = TrainConfig().to_dict() | LEGACY_VALUES
    keys = sorted((set(a) | set(b)) - NONSEMANTIC)
    a, b = {k: a.get(k, defaults.get(k)) for k in keys}, {k: b.get(k, defaults.get(k)) for k in keys}
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in keys if a[k] != b[k]]


def _validation_split(config: TrainConfig, data_path: Path, run: Path) -> list[int]:
    """The identities ``val_fraction`` holds out (none at 0), written to ``validation.json``."""
    from reidaug.data.h5format import SOURCES, open_h5
    from reidaug.data.torchdata import validation_ids

    if config.val_fraction <= 0:
        (run / VALIDATION_FILE).unlink(missing_ok=True)
        return []
    with open_h5(data_path) as f:
        meta = f.meta("train")
        real_pids = meta.pid[meta.source == SOURCES["real"]]
    ids = validation_ids(real_pids, config.val_fraction, config.val_seed)
    write_json(run / VALIDATION_FILE, {"fraction": config.val_fraction, "seed": config.val_seed,
                                       "num_train_ids": int(len(np.unique(real_pids))), "pids": ids})
    log.info("validation: %d of %d train identities held out (val_fraction %s, val_seed %d)", len(ids),
             len(np.unique(real_pids)), config.val_fraction, config.val_seed)
    return ids


def _remove_stale_temps(run_dir: Path) -> None:
    """Temp files a killed run left (``.checkpoint.pt.tmp-...``); never a finished file."""
    for p in run_dir.iterdir():
        if p.is_file() and is_temp_name(p.name):
            log.info("removing %s, left by an interrupted run", p)
            p.unlink(missing_ok=True)


def plot_curves(log_path: Path, out_path: Path) -> None:
    """PNG of loss (and its parts) and accuracy against the step, from a train_log.jsonl."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = JsonlLog(log_path).records()
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_l, ax_a = fig.subplots(1, 2)
    steps = [r["step"] for r in rows]
    panels = ((ax_l, "loss", (("loss", "total"), ("loss_id", "ID (soft CE)"), ("loss_triplet", "triplet"))),
              (ax_a, "accuracy (train batches)", (("acc", "ID accuracy"), ("triplet_acc", "triplet accuracy"))))
    for ax, ylabel, series in panels:
        for key, label in series:
            ys = [r.get(key) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(steps, [np.nan if y is None else y for y in ys], label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(alpha=0.3)
    ax_a.set_ylim(0, 1.02)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")


def init_from_model(model: ReIDModel, path: str | os.PathLike[str]) -> int:
    """Copy into ``model`` every weight of the trained model at ``path`` (a run folder or model.pt) but its
    identity classifier (another dataset's identities): pre-training on one dataset, fine-tuning on another.
    The two must share backbone, head and bottleneck; returns how many tensors were copied."""
    from reidaug.train.model import load_model

    src = load_model(path)
    mine, theirs = model.config.to_dict(), src.config.to_dict()
    differ = [k for k in ("backbone", "head", "bottleneck", "last_stride", "backbone_options")
              if mine.get(k) != theirs.get(k)]
    if differ:
        raise ConfigError(
            f"the model to fine-tune from ({path}) differs from this run in {', '.join(differ)} "
            f"({', '.join(f'{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here' for k in differ)}); its weights do not "
            "fit. Fix: train both with the same backbone, head and bottleneck options.")
    own = model.state_dict()
    take = {k: v for k, v in src.state_dict().items() if not k.startswith("classifier.") and k in own}
    model.load_state_dict(take, strict=False)
    return len(take)


def _make_batch_sampler(config: TrainConfig, ds: Any) -> Any:
    if config.sampler == "pk":
        from reidaug.data.torchdata import PKSampler

        unlabeled = int(np.count_nonzero(ds.labels < 0))
        if unlabeled:
            log.warning(
                "%d train images have no identity (label -1, e.g. LSRO fakes); the P x K sampler never "
                "draws them. Use sampler='realfake' (or 'random') to train on them.", unlabeled)
        return PKSampler(ds.labels, config.p, config.k, seed=config.seed)
    if config.sampler == "realfake":
        from reidaug.data.torchdata import RealFakeSampler

        return RealFakeSampler(ds.is_fake, config.train_batch_size, config.real_per_batch,
                               config.fake_per_batch, seed=config.seed)
    return RandomBatchSampler(len(ds), config.train_batch_size, seed=config.seed)


def _make_optimizer(config: TrainConfig, model: ReIDModel) -> torch.optim.Optimizer:
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": backbone, "lr": config.lr * config.backbone_lr_mult},
              {"params": head, "lr": config.lr}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.momentum > 0)


@dataclass
class _Window:
    """Running sums between two log lines."""

    n: int = 0
    images: int = 0
    t0: float = field(default_factory=time.perf_counter)
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a window cut by a kill logs the same means when resumed
        (timing starts again: images/s is a measurement, not a result)."""
        return {"n": self.n, "images": self.images, "sums": dict(self.sums), "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> _Window:
        w = cls()
        if state:  # (a checkpoint written before windows were kept: the window restarts)
            w.n, w.images = int(state["n"]), int(state["images"])
            w.sums, w.counts = dict(state["sums"]), {k: int(v) for k, v in state["counts"].items()}
        return w


# --------------------------------------------------------------------------- train


def train(
    config: TrainConfig,
    data_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    on_step: Callable[[int, int], None] | None = None,
    init_from: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train a re-ID model on the train split of ``data_path``; outputs in ``run_dir``.

    Resumes from ``run_dir/checkpoint.pt`` when present (same result-relevant config and same
    data required); returns at once when ``run_dir`` already holds a finished run of this
    config. ``on_step(step, total_steps)`` is called after each optimiser step (and after that
    step's checkpoint, if one was due); ``total_steps`` is an estimate for progress bars.
    """
    run = Path(run_dir)
    data_path = Path(data_path).resolve()
    # What can be checked without a model or a run folder fails first: the weights, the data.
    pretrained_weights_path(config.backbone, config.pretrained)
    fingerprint = data_fingerprint(data_path)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"run folder {run} exists and is not a folder. Fix: pass another output folder (--out).")
    run.mkdir(parents=True, exist_ok=True)
    paths = {k: run / v for k, v in (("config", CONFIG_FILE), ("log", LOG_FILE), ("ckpt", CHECKPOINT_FILE),
                                      ("model", MODEL_FILE), ("plot", PLOT_FILE), ("result", RESULT_FILE))}
    cfg_dict = config.to_dict()

    done = _finished_result(paths, cfg_dict, fingerprint)
    if done is not None:
        log.info("%s already holds a finished run of this config; didn't change, skipping", run)
        return done
    _remove_stale_temps(run)

    device = resolve_device(config.device)
    if config.threads is not None and device.type == "cpu":
        torch.set_num_threads(config.threads)  # the weights depend on it: pinned, not the machine's count
    amp = bool(config.amp and device.type == "cuda")
    if config.amp and not amp:
        log.warning("amp=True needs CUDA; training on %s in float32", device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        return _train(config, cfg_dict, data_path, run, paths, fingerprint, device, amp, on_step, init_from)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench


def _finished_result(paths: dict[str, Path], cfg_dict: dict[str, Any], fingerprint: str) -> TrainResult | None:
    if not (paths["model"].is_file() and paths["result"].is_file() and paths["config"].is_file()):
        return None
    saved = json.loads(paths["config"].read_text())
    diff = _config_diff(saved.get("train", {}), cfg_dict)
    if diff or saved.get("resolved", {}).get("data_fingerprint") != fingerprint:
        what = "; ".join(diff) if diff else "the training data changed (different checksums)"
        raise ConfigError(
            f"{paths['model'].parent} already holds a finished run with another config or data ({what}). "
            "Fix: pass a new output folder (--out), or delete that run folder to retrain there."
        )
    r = json.loads(paths["result"].read_text())
    r.update(skipped=True, run_dir=paths["model"].parent, model_path=paths["model"], config_path=paths["config"],
             log_path=paths["log"], plot_path=paths["plot"])  # where the run folder is now
    return TrainResult(**r)


def _train(
    config: TrainConfig,
    cfg_dict: dict[str, Any],
    data_path: Path,
    run: Path,
    paths: dict[str, Path],
    fingerprint: str,
    device: torch.device,
    amp: bool,
    on_step: Callable[[int, int], None] | None,
    init_from: str | os.PathLike[str] | None = None,
) -> TrainResult:
    from reidaug.data.torchdata import ReidH5Dataset, build_transforms, normalize_batch, reid_collate

    t_start = time.perf_counter()
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)

    transform = build_transforms(config.height, config.width, train=True, pad=config.crop_pad,
                                 random_erasing=config.random_erasing, normalize=False)
    held_out = _validation_split(config, data_path, run)
    ds = ReidH5Dataset(data_path, "train", transform=transform, sources=config.sources,
                       exclude_pids=held_out or None)
    if len(ds) == 0:
        raise DataError(f"{data_path}: no train images from sources {config.sources}. Fix: check `sources`.")
    num_classes = ds.num_classes
    label_of_row = np.full(int(ds.indices.max()) + 1, -1, np.int64)
    label_of_row[ds.indices] = ds.labels
    label_of_row_t = torch.from_numpy(label_of_row)
    onehot_of_row = np.zeros(len(label_of_row), bool)
    onehot_of_row[ds.indices] = ds.is_onehot
    onehot_of_row_t = torch.from_numpy(onehot_of_row)

    model_cfg = ModelConfig(backbone=config.backbone, num_classes=num_classes, head=config.head,
                            bottleneck=config.resolved_bottleneck, dropout=config.dropout,
                            last_stride=config.last_stride, input_size=(config.height, config.width),
                            backbone_options=config.backbone_options)
    model = build_model(model_cfg, config.pretrained)
    if init_from is not None:  # fine-tuning: every weight but the identity classifier from a trained model
        taken = init_from_model(model, init_from)
        log.info("initialised %d of %d tensors from %s (the classifier starts fresh)", taken,
                 len(model.state_dict()), init_from)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(config, model)
    schedule = LRSchedule(optimizer, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    batches = EpochBatches(_make_batch_sampler(config, ds), config.seed)
    loader = DataLoader(
        SeededDataset(ds),
        batch_sampler=batches,
        num_workers=config.num_workers,
        collate_fn=reid_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
        multiprocessing_context=(config.worker_start if config.num_workers > 0 and config.worker_start != "auto"
                                 else None),
        generator=torch.Generator().manual_seed(config.seed),
    )

    resolved = {
        "train": cfg_dict,
        "resolved": {
            "data": str(data_path),
            "data_fingerprint": fingerprint,
            "num_classes": num_classes,
            "num_train_images": len(ds),
            "device": str(device),
            "amp": amp,
            "images_per_batch": config.images_per_batch,
            "model": model_cfg.to_dict(),
            "init_from": None if init_from is None else str(init_from),
            "torch": torch.__version__,
        },
    }

    start_epoch, start_batch, step, resumed_from = 0, 0, 0, None
    train_log = JsonlLog(paths["log"])
    ck = _load_checkpoint(paths["ckpt"], cfg_dict, fingerprint) if paths["ckpt"].is_file() else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        schedule.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        start_epoch, start_batch, step = int(ck["epoch"]), int(ck["batch_in_epoch"]), int(ck["step"])
        resumed_from = step
        train_log.truncate(step)
        log.info("resuming %s from step %d (epoch %d, batch %d)", run, step, start_epoch, start_batch)
    else:
        paths["log"].unlink(missing_ok=True)
    write_json(paths["config"], resolved)

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        save_torch(paths["ckpt"], {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": cfg_dict, "data_fingerprint": fingerprint,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
            "rng": _rng_state(), "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "sampler_epoch": epoch, "step": step,
            # the loss window in progress and the last logged means: final_loss / final_accuracy
            # (chunk results) of a resumed run equal an uninterrupted one's wherever the kill fell
            "window": window.state_dict(), "last_means": dict(last_means),
        }, progress={"step": step, "of": total_est})
        faults.point("checkpoint", "train-reid")

    per_epoch_est = len(batches.inner)
    if per_epoch_est == 0:
        raise DataError(
            f"{data_path}: the {config.sampler} sampler makes no batch from {len(ds)} images "
            f"(batch of {config.images_per_batch}). Fix: lower the batch size (p, k or train_batch_size)."
        )
    total_est = per_epoch_est * config.epochs
    use_id = config.loss in ("ide", "both")
    use_tri = config.loss in ("triplet", "both")
    window = _Window.from_state(ck.get("window") if ck is not None else None)
    last_means: dict[str, float] = dict(ck.get("last_means") or {}) if ck is not None else {}
    images_done, t_loop = 0, time.perf_counter()
    model.train()
    for epoch in range(start_epoch, config.epochs):
        batches.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        n_batches = len(batches.inner)
        b_idx = batches.start - 1
        for b_idx, batch in enumerate(loader, start=batches.start):
            schedule.set_progress(epoch + b_idx / n_batches)
            img = normalize_batch(batch["img"].to(device, non_blocking=True))  # (B, 3, H, W) float
            target = smooth_onehot(batch["target"].to(device, non_blocking=True),  # (B, C)
                                   onehot_of_row_t[batch["index"]].to(device), config.label_smoothing)
            pids = batch["pid"].to(device, non_blocking=True)  # (B,)
            labels = label_of_row_t[batch["index"]].to(device, non_blocking=True)  # (B,)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                out = model(img)
                parts: dict[str, torch.Tensor] = {}
                if use_id:
                    parts["loss_id"] = soft_cross_entropy(out.logits, target)
                if use_tri:
                    parts["loss_triplet"] = batch_hard_triplet(
                        out.features, pids, config.triplet_margin, config.soft_margin)
                loss = sum((config.id_weight if k == "loss_id" else config.triplet_weight) * v
                           for k, v in parts.items())
            if not torch.isfinite(loss):
                raise DataError(
                    f"training diverged at step {step + 1} (epoch {epoch}): loss is {loss.item()}. "
                    f"Fix: lower lr (now {config.lr}) or enable warm-up; resume restarts from "
                    f"the last checkpoint in {run}."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bsz = int(img.shape[0])
            images_done += bsz
            window.n += 1
            window.images += bsz
            window.add("loss", loss.item())
            for k, v in parts.items():
                window.add(k, v.item())
            if out.logits is not None:
                known = labels >= 0
                if bool(known.any()):
                    window.add("acc", (out.logits.argmax(1)[known] == labels[known]).float().mean().item())
            if use_tri:
                window.add("triplet_acc", triplet_accuracy(out.features.detach(), pids))
            last_batch = b_idx + 1 == n_batches
            if step % config.log_every == 0 or (last_batch and epoch + 1 == config.epochs):
                last_means = _log_window(train_log, window, step, epoch + (b_idx + 1) / n_batches,
                                         optimizer)
                window = _Window()
            if config.checkpoint_unit == "step" and step % config.checkpoint_every == 0:
                save_checkpoint(epoch + 1, 0) if last_batch else save_checkpoint(epoch, b_idx + 1)
            if on_step is not None:
                on_step(step, total_est)
        if config.checkpoint_unit == "epoch" and (epoch + 1) % config.checkpoint_every == 0 \
                and epoch + 1 < config.epochs:
            save_checkpoint(epoch + 1, 0)
    if window.n:
        last_means = _log_window(None, window, step, float(config.epochs), optimizer) or last_means
    loop_s = time.perf_counter() - t_loop

    model.eval()
    save_model(model, paths["model"], extra={"train_config": cfg_dict, "data_fingerprint": fingerprint,
                                             "steps": step})
    plot_curves(paths["log"], paths["plot"])
    result = TrainResult(
        run_dir=run, model_path=paths["model"], config_path=paths["config"], log_path=paths["log"],
        plot_path=paths["plot"], steps=step, epochs=config.epochs,
        final_loss=float(last_means.get("loss", float("nan"))),
        final_accuracy=float(last_means.get("acc", last_means.get("triplet_acc", float("nan")))),
        images_per_s=images_done / loop_s if loop_s > 0 else 0.0,
        resumed_from_step=resumed_from, num_classes=num_classes, device=str(device),
        wall_s=time.perf_counter() - t_start,
    )
    # File names relative to the run folder, so that a run folder can move (a pipeline stage
    # trains in its partial cache folder, which is renamed into place when it is complete).
    write_json(paths["result"], result.to_dict() | {"run_dir": ".", "model_path": MODEL_FILE,
                                                    "config_path": CONFIG_FILE, "log_path": LOG_FILE,
                                                    "plot_path": PLOT_FILE})
    if not config.keep_checkpoint:
        remove_checkpoint(paths["ckpt"])
    paths["ckpt"].with_name(paths["ckpt"].name + ".damaged").unlink(missing_ok=True)
    log.info("trained %d steps in %.1f s (%.1f images/s); model in %s", step, result.wall_s,
             result.images_per_s, paths["model"])
    return result


def _log_window(train_log: JsonlLog | None, window: _Window, step: int, epoch: float,
                optimizer: torch.optim.Optimizer) -> dict[str, float]:
    dt = time.perf_counter() - window.t0
    means = window.means()
    row = {"step": step, "epoch": round(epoch, 4), **{k: round(v, 6) for k, v in means.items()},
           "lr": optimizer.param_groups[-1]["lr"], "images_per_s": round(window.images / dt, 2) if dt > 0 else None}
    if train_log is not None:
        train_log.append(row)
    log.info("step %d epoch %.2f loss %.4f acc %s lr %.2e %.1f img/s", step, epoch, means.get("loss", float("nan")),
             f"{means['acc']:.3f}" if "acc" in means else "-", row["lr"], row["images_per_s"] or 0.0)
    return means


def _load_checkpoint(path: Path, cfg_dict: dict[str, Any], fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint to resume from; None when it was unreadable (set aside: start afresh)."""
    ck = load_or_set_aside(path, "training checkpoint", weights_only=True)
    if ck is None:
        return None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or ck.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"{path} is not a reidaug v{CHECKPOINT_VERSION} training checkpoint. "
                        "Fix: delete it to restart the run, or use another --out folder.")
    diff = _config_diff(ck["config"], cfg_dict)
    if diff:
        raise ConfigError(
            f"{path} was written with another training config ({'; '.join(diff)}); resuming would mix "
            "two runs. Fix: re-run with the original options, or pass a new output folder (--out)."
        )
    if ck.get("data_fingerprint") != fingerprint:
        raise ConfigError(
            f"{path} was trained on other data than the file given now (train split checksums differ). "
            "Fix: pass the original HDF5 file, or a new output folder (--out)."
        )
    return ck
