"""What a trained re-ID model gives: test features of a split, identity probabilities of images.

:func:`extract_features`: the model's eval-mode feature (pool5 for IDE / triplet heads, BNNeck's
post-BN feature for ``bnneck``; see :mod:`reidaug.train.model`) of every image of a split, in
file order, optionally averaged with the feature of the horizontally flipped image (the usual
test-time flip of torchreid and the strong baseline, Luo et al. 2019). Features are not
L2-normalised here: the metric (``reidaug.eval``) decides.

:func:`predict_probs`: a trained model as a teacher: ``softmax(logits / T)`` over its training
identities for any RGB images (e.g. generated ones), for soft labels in the style of knowledge
distillation (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from reidaug.errors import ConfigError, unknown_name
from reidaug.io.rowfile import RowFile, RowWriter, write_rows
from reidaug.train.model import ReIDModel, load_model

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: CUDA when torch sees it, else the CPU; a CUDA device that is not there fails."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={str(device)!r} but torch sees no CUDA device here. "
                          "Fix: use device='auto' or 'cpu', or install a CUDA build of torch.")
    return dev


@contextlib.contextmanager
def _evaluating(model_or_run_dir: ReIDModel | str | os.PathLike[str], device: str | torch.device
                ) -> Iterator[tuple[ReIDModel, torch.device]]:
    """The model (loaded if a path) in eval mode on ``device``; a model passed in gets its mode back."""
    model = model_or_run_dir if isinstance(model_or_run_dir, ReIDModel) else load_model(Path(model_or_run_dir))
    dev = resolve_device(device)
    was_training = model.training
    model.eval().to(dev)
    try:
        yield model, dev
    finally:
        model.train(was_training)


#: how a flipped image's feature joins the image's (extract_features' flip_fusion)
FLIP_FUSIONS = ("mean", "l2sum")


@torch.no_grad()
def extract_features(
    model_or_run_dir: ReIDModel | str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    split: str,
    *,
    flip: bool = True,
    flip_fusion: str = "mean",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    input_size: tuple[int, int] | None = None,
    sources: Sequence[str] | None = None,
    pids: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray | RowFile, np.ndarray, np.ndarray]:
    """Features of every image of ``split`` -> ``(features (N, D) float32, pids (N,), camids (N,))``.
    With ``out`` (a ``.npy`` path) the features are written there batch by batch and returned as a
    :class:`~reidaug.io.rowfile.RowFile`, so memory does not grow with N
    (:func:`reidaug.eval.metrics.evaluate` ranks such files block by block).
    ``sources`` / ``pids`` narrow the images as :class:`~reidaug.data.torchdata.ReidH5Dataset` does
    (a validation split: ``split="train", sources=["real"], pids=held-out ids``).

    model_or_run_dir: a :class:`ReIDModel`, a run folder or a ``model.pt``. Images are resized
    to ``input_size`` (default: the size the model was trained at) and ImageNet-normalised.
    ``flip``: fuse with the flipped image's feature, by ``flip_fusion``: ``mean`` of the raw
    features (torchreid, the strong baseline) or ``l2sum``, the sum of the L2-normalised ones
    (each view weighs the same under the cosine distance). pids / camids are int64, in file order.
    A model passed in is moved to ``device`` (and left there, in its original train/eval mode).
    """
    from reidaug.data.torchdata import ReidH5Dataset, build_transforms, reid_collate

    if batch_size < 1:
        raise ConfigError(f"extract_features: batch_size must be >= 1; found {batch_size}.")
    if flip_fusion not in FLIP_FUSIONS:
        raise unknown_name("flip fusion", str(flip_fusion), FLIP_FUSIONS)
    with _evaluating(model_or_run_dir, device) as (model, dev):
        h, w = input_size or model.config.input_size
        ds = ReidH5Dataset(data_path, split, transform=build_transforms(h, w, train=False, normalize=False),
                           sources=sources, pids=pids)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=reid_collate, pin_memory=dev.type == "cuda")
        shape = (len(ds), model.feature_dim)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(write_rows(out, shape)) if out is not None else np.empty(shape, np.float32)
            done = _extract(model, dev, loader, flip, flip_fusion, sink)
    log.info("extracted %d %s features of dim %d from %s (flip=%s)", done, split, shape[1], data_path, flip)
    feats = RowFile.open(out) if out is not None else sink
    return feats, ds.pids.astype(np.int64), ds.camids.astype(np.int64)


def _extract(model: ReIDModel, dev: torch.device, loader: DataLoader, flip: bool, flip_fusion: str,
             sink: np.ndarray | RowWriter) -> int:
    """Run the loader's batches through the model into ``sink`` (an array or a row file) in order."""
    from reidaug.data.torchdata import normalize_batch

    done = 0
    for batch in loader:
        img = normalize_batch(batch["img"].to(dev, non_blocking=True))  # (B, 3, H, W)
        f = model(img)  # (B, D)
        if flip and flip_fusion == "mean":
            f = (f + model(img.flip(3))) * 0.5
        elif flip:
            f = F.normalize(f, dim=1) + F.normalize(model(img.flip(3)), dim=1)
        rows = f.float().cpu().numpy()
        if isinstance(sink, np.ndarray):
            sink[done : done + rows.shape[0]] = rows
        else:
            sink.append(rows)
        done += rows.shape[0]
    return done


@torch.no_grad()
def image_features(
    model_or_run_dir: ReIDModel | str | os.PathLike[str],
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    flip: bool = False,
    flip_fusion: str = "mean",
    batch_size: int = 64,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Features of in-memory RGB uint8 images ``(N, D)`` float32, computed exactly as
    :func:`extract_features` computes those of a file (resized to the model's size, ImageNet-normalised,
    the same flip fusion): for images a caller made, such as PN-GAN's pose-normalised versions."""
    from reidaug.data.torchdata import build_transforms, normalize_batch

    if flip_fusion not in FLIP_FUSIONS:
        raise unknown_name("flip fusion", str(flip_fusion), FLIP_FUSIONS)
    with _evaluating(model_or_run_dir, device) as (model, dev):
        n = len(images)
        out = np.empty((n, model.feature_dim), np.float32)
        h, w = model.config.input_size
        transform = build_transforms(h, w, train=False, normalize=False)
        for start in range(0, n, batch_size):
            chunk = [np.asarray(im) for im in images[start : start + batch_size]]
            img = normalize_batch(transform.batch(chunk, shared=False).to(dev))
            f = model(img)
            if flip and flip_fusion == "mean":
                f = (f + model(img.flip(3))) * 0.5
            elif flip:
                f = F.normalize(f, dim=1) + F.normalize(model(img.flip(3)), dim=1)
            out[start : start + len(chunk)] = f.float().cpu().numpy()
    return out


@torch.no_grad()
def predict_probs(
    model_or_run_dir: ReIDModel | str | os.PathLike[str],
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    temperature: float = 1.0,
    batch_size: int = 64,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Identity probabilities ``softmax(logits / temperature)`` of ``images`` -> ``(N, C)`` float32.

    model_or_run_dir: a run folder of ``reidaug train`` / the ``train-reid`` stage, a ``model.pt``
    or a loaded :class:`ReIDModel` (pass one to avoid reloading it on every call). Its head must
    have a classifier (``bnneck`` or ``ide``). Column ``j`` is train label ``j`` of the HDF5 file
    the model was trained on: export-hdf5's contiguous labels (train pids in sorted order), i.e.
    the class ids of that file's soft targets. images: RGB uint8 ``(H, W, 3)`` arrays (a list,
    sizes may differ, or one ``(N, H, W, 3)`` array); each is resized to the model's training
    size and ImageNet-normalised exactly as at test time (no flip, no crop). temperature: > 0;
    1 gives the model's own probabilities, larger values softer ones. Rows sum to 1. The model is
    evaluated in eval mode (BN running statistics, no dropout); a model passed in is left in its
    original mode, on ``device``.
    """
    from reidaug.data.torchdata import build_transforms, normalize_batch

    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"predict_probs: temperature must be a finite number > 0; found {temperature!r}.")
    if batch_size < 1:
        raise ConfigError(f"predict_probs: batch_size must be >= 1; found {batch_size}.")
    with _evaluating(model_or_run_dir, device) as (model, dev):
        if model.classifier is None:
            raise ConfigError(
                "predict_probs needs a model with a classifier; this one has head=triplet (features "
                "only). Fix: train the teacher with head bnneck or ide."
            )
        n = len(images)
        out = np.empty((n, model.config.num_classes), np.float32)
        h, w = model.config.input_size
        transform = build_transforms(h, w, train=False, normalize=False)
        for start in range(0, n, batch_size):
            chunk = [np.asarray(im) for im in images[start : start + batch_size]]
            x = normalize_batch(transform.batch(chunk, shared=False).to(dev))  # (B, 3, h, w) float32
            logits = model.logits(x).float()  # (B, C)
            out[start : start + len(chunk)] = torch.softmax(logits / float(temperature), dim=1).cpu().numpy()
    return out
