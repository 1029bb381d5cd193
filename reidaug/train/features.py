"""Feature extraction for re-ID evaluation: one (N, D) float32 matrix per split.

The model's eval-mode feature (pool5 for IDE / triplet heads, BNNeck's post-BN feature for
``bnneck``; see :mod:`reidaug.train.model`) of every image of a split, in file order, optionally
averaged with the feature of the horizontally flipped image (the usual test-time flip of
torchreid and the strong baseline, Luo et al. 2019). Features are not L2-normalised here: the
metric (``reidaug.eval``) decides.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from reidaug.errors import ConfigError
from reidaug.train.model import ReIDModel, load_model

log = logging.getLogger(__name__)


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device. Fix: use device='auto' or 'cpu'.")
    return dev


@torch.no_grad()
def extract_features(
    model_or_run_dir: ReIDModel | str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    split: str,
    *,
    flip: bool = True,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    input_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every image of ``split`` -> ``(features (N, D) float32, pids (N,), camids (N,))``.

    model_or_run_dir: a :class:`ReIDModel`, a run folder or a ``model.pt``. Images are resized
    to ``input_size`` (default: the size the model was trained at) and ImageNet-normalised.
    ``flip``: average with the flipped image's feature. pids / camids are int64, in file order.
    A model passed in is moved to ``device`` (and left there, in its original train/eval mode).
    """
    from reidaug.data.torchdata import ReidH5Dataset, build_transforms, normalize_batch, reid_collate

    if batch_size < 1:
        raise ConfigError(f"extract_features: batch_size must be >= 1; found {batch_size}.")
    model = model_or_run_dir if isinstance(model_or_run_dir, ReIDModel) else load_model(Path(model_or_run_dir))
    h, w = input_size or model.config.input_size
    dev = _device(device)
    was_training = model.training
    model.eval().to(dev)
    ds = ReidH5Dataset(data_path, split, transform=build_transforms(h, w, train=False, normalize=False))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=reid_collate, pin_memory=dev.type == "cuda")
    feats = np.empty((len(ds), model.feature_dim), np.float32)
    done = 0
    try:
        for batch in loader:
            img = normalize_batch(batch["img"].to(dev, non_blocking=True))  # (B, 3, H, W)
            f = model(img)  # (B, D)
            if flip:
                f = (f + model(img.flip(3))) * 0.5
            n = f.shape[0]
            feats[done : done + n] = f.float().cpu().numpy()
            done += n
    finally:
        model.train(was_training)
    log.info("extracted %d %s features of dim %d from %s (flip=%s)", done, split, feats.shape[1], data_path, flip)
    return feats, ds.pids.astype(np.int64), ds.camids.astype(np.int64)
