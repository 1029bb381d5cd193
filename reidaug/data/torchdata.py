"""PyTorch side of the reidaug HDF5 format: a fork-safe Dataset, re-ID transforms, samplers.

- :class:`ReidH5Dataset` reads one split of a reidaug HDF5 file. The h5py handle is opened
  lazily in each process (keyed by pid), so DataLoader workers never share a handle across a
  fork (h5py/HDF5 handles are not fork-safe).
- :func:`build_transforms` is the strong re-ID baseline's input pipeline (Luo et al., "Bag of
  Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019): resize to
  256x128, random horizontal flip, pad 10 + random crop, ImageNet normalisation, optional
  random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020), on uint8
  tensors with torchvision.transforms.v2 (faster than PIL).
- :class:`PKSampler` draws P identities x K images per batch (Hermans et al., "In Defense of the
  Triplet Loss", 2017; torchreid's RandomIdentitySampler), deterministic for a seed and epoch.
- :class:`RealFakeSampler` puts exactly M real and N generated images in each batch, as CamStyle
  trains (Zhong et al., "Camera Style Adaptation for Person Re-identification", CVPR 2018).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from reidaug.data.h5format import SOURCES, TRAIN_SPLIT, H5File, densify_target, open_h5
from reidaug.errors import ConfigError, DataError, unknown_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def build_transforms(
    height: int = 256,
    width: int = 128,
    train: bool = True,
    random_erasing: bool = False,
    normalize: bool = True,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Re-ID transforms on a uint8 (3, H, W) tensor -> float32 (3, height, width).

    train: resize, horizontal flip (p=0.5), pad 10 (zeros) + random crop back to size, to float,
    ImageNet normalise, then random erasing (p=0.5, area 2-40 %, aspect 0.3-3.3, filled with 0,
    i.e. the ImageNet mean after normalisation) when ``random_erasing``. test: resize, normalise.
    ``normalize=False`` stops at uint8 (normalise the collated batch on the device instead).
    """
    from torchvision.transforms import v2

    size = (height, width)
    steps: list[Any] = [ResizeIfNeeded(size)]
    if train:
        steps += [v2.RandomHorizontalFlip(p=0.5), v2.Pad(10), v2.RandomCrop(size)]
    if normalize:
        steps.append(Normalize255())
        if train and random_erasing:
            steps.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.3), value=0))
    elif random_erasing:
        raise ConfigError("random_erasing runs after normalisation; it needs normalize=True.")
    return v2.Compose(steps)


class ResizeIfNeeded(torch.nn.Module):
    """Resize a (3, H, W) image to ``size``; a no-op for images already at that size.

    uint8 tensors go through OpenCV (bilinear up, area down: 1.5x faster than torchvision's
    uint8 path here); other tensors through torchvision's antialiased bilinear resize.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        from torchvision.transforms import v2

        self.size = (int(size[0]), int(size[1]))
        self.resize = v2.Resize(self.size, antialias=True)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if (h, w) == self.size:
            return img
        if img.dtype != torch.uint8 or img.ndim != 3:
            return self.resize(img)
        import cv2

        th, tw = self.size
        interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
        hwc = np.ascontiguousarray(img.permute(1, 2, 0).numpy())  # (H, W, 3)
        return torch.from_numpy(cv2.resize(hwc, (tw, th), interpolation=interp)).permute(2, 0, 1)


class Normalize255(torch.nn.Module):
    """uint8 (..., 3, H, W) -> float32 ImageNet-normalised, in one fused pass.

    Same result as ``ToDtype(float32, scale=True)`` + ``Normalize(mean, std)``, 4x faster.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean255", torch.tensor(mean).view(3, 1, 1) * 255)
        self.register_buffer("inv_std255", 1.0 / (torch.tensor(std).view(3, 1, 1) * 255))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dtype != torch.uint8:
            raise DataError(f"Normalize255 expects a uint8 image tensor; found {img.dtype}.")
        return img.to(torch.float32).sub_(self.mean255).mul_(self.inv_std255)


def normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ImageNet-normalised (B, 3, H, W), on batch's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1) * 255)
    return batch.float().sub_(mean).mul_(inv_std)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


class ReidH5Dataset(Dataset):
    """One split of a reidaug HDF5 file as a map-style torch Dataset.

    Items are dicts: ``img`` (transformed tensor; uint8 (3, H, W) without a transform),
    ``target`` (train: dense soft target float32 (C,), the final training target, never to be
    smoothed again; other splits: the label, int64, -1), ``pid``, ``camid``, ``index`` (row in
    the split, not in the ``sources`` subset) and ``is_fake``.
    ``sources`` keeps only samples whose source is in the list (e.g. ``["real"]``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = TRAIN_SPLIT,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.split = split
        self.transform = transform
        # Read what we need and close again: no h5py handle from __init__ survives a fork.
        with open_h5(self.path) as f:
            if split not in f.splits:
                raise unknown_name(f"split in {self.path}", split, f.splits)
            meta = f.meta(split)
            self.num_classes = f.num_classes
            self.dense = split == TRAIN_SPLIT and f.info.target_storage == "dense"
            sparse = f.sparse_targets(split) if split == TRAIN_SPLIT and not self.dense else None
        keep = np.ones(len(meta), dtype=bool)
        if sources is not None:
            names = {v: k for k, v in meta.source_names.items()}
            for s in sources:
                if s not in names:
                    raise unknown_name("source", s, names)
            keep = np.isin(meta.source, [names[s] for s in sources])
        self.indices = np.flatnonzero(keep)  # (M,) rows of the split
        self.pids = meta.pid[self.indices]
        self.labels = meta.label[self.indices]
        self.camids = meta.camid[self.indices]
        self.is_fake = meta.source[self.indices] != SOURCES["real"]
        self._sparse = None if sparse is None else tuple(a[self.indices] for a in sparse)
        self._file: H5File | None = None
        self._pid: int | None = None
        if len(self.indices) == 0:
            log.warning("%s split %r has no samples from sources %s", self.path, split, sources)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def _h5(self) -> H5File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:
            # A handle inherited through fork belongs to the parent: drop it, never close it here.
            self._file = open_h5(self.path)
            self._pid = pid
        return self._file

    def __getstate__(self) -> dict[str, Any]:  # spawn/forkserver workers pickle the dataset
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __getitem__(self, pos: int) -> dict[str, Any]:
        if not 0 <= pos < len(self):
            raise IndexError(f"index {pos} out of range for {len(self)} samples")
        f = self._h5()
        row = int(self.indices[pos])
        img = torch.from_numpy(f.read_image(self.split, row)).permute(2, 0, 1)  # (3, H, W) uint8
        if self.transform is not None:
            img = self.transform(img)
        if self.split != TRAIN_SPLIT:
            target: torch.Tensor = torch.tensor(int(self.labels[pos]), dtype=torch.int64)
        elif self._sparse is not None:
            ti, tv, tr = self._sparse
            target = torch.from_numpy(densify_target(ti[pos], tv[pos], float(tr[pos]), self.num_classes))
        else:
            target = torch.from_numpy(f.target(self.split, row))
        return {
            "img": img,
            "target": target,
            "pid": int(self.pids[pos]),
            "camid": int(self.camids[pos]),
            "index": row,
            "is_fake": bool(self.is_fake[pos]),
        }


# --------------------------------------------------------------------------------------------
# Samplers (batch samplers: use as DataLoader(dataset, batch_sampler=...))
# --------------------------------------------------------------------------------------------


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch)])


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K images; yields lists of dataset positions.

    Each epoch (deterministic for ``(seed, epoch)``): every identity's positions are shuffled
    and cut into groups of K (the remainder < K is dropped; an identity with fewer than K images
    gives one group drawn with replacement); then batches take P distinct identities at random
    among those with groups left, until fewer than P remain. So one epoch is about
    ``sum_i max(1, n_i // K) / P`` batches and visits almost every image once; ``len()`` is
    exact for the current epoch. Samples with label < 0 (no identity) are never drawn.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, p: int, k: int, seed: int = 0) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if p < 1 or k < 1:
            raise ConfigError(f"PKSampler needs p >= 1 and k >= 1; found p={p}, k={k}.")
        ids = np.unique(labels[labels >= 0])
        if ids.size < p:
            raise DataError(
                f"PKSampler needs at least p={p} identities; the data has {ids.size}. Fix: lower p."
            )
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self._by_id = [np.flatnonzero(labels == i) for i in ids]
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plan(self) -> list[list[int]]:
        if self._plan_cache is not None and self._plan_cache[0] == self.epoch:
            return self._plan_cache[1]
        rng = _rng(self.seed, self.epoch)
        groups: list[list[np.ndarray]] = []
        for pos in self._by_id:
            if pos.size < self.k:
                groups.append([rng.choice(pos, size=self.k, replace=True)])
            else:
                perm = rng.permutation(pos)
                m = pos.size // self.k
                groups.append([perm[j * self.k : (j + 1) * self.k] for j in range(m)])
        left = np.array([len(g) for g in groups])
        batches: list[list[int]] = []
        while np.count_nonzero(left) >= self.p:
            avail = np.flatnonzero(left)
            chosen = rng.choice(avail, size=self.p, replace=False)
            batch: list[int] = []
            for c in chosen:
                left[c] -= 1
                batch.extend(int(x) for x in groups[c][left[c]])
            batches.append(batch)
        self._plan_cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._plan()

    def __len__(self) -> int:
        return len(self._plan())


class RealFakeSampler(Sampler[list[int]]):
    """Batches of exactly M real + N fake positions (CamStyle's training batches).

    One epoch visits every real image once in a random order: ``len() = num_real // M``
    batches (the last partial batch is dropped). Fakes come from a shuffled cycle, reshuffled
    each time it runs out, so with many fakes an epoch sees a different subset each time.
    Deterministic for ``(seed, epoch)``. Positions are shuffled within each batch.
    """

    def __init__(
        self,
        is_fake: Sequence[bool] | np.ndarray,
        batch_size: int,
        real_per_batch: int,
        fake_per_batch: int,
        seed: int = 0,
    ) -> None:
        is_fake = np.asarray(is_fake, dtype=bool)
        if real_per_batch < 1 or fake_per_batch < 0 or real_per_batch + fake_per_batch != batch_size:
            raise ConfigError(
                f"RealFakeSampler: real_per_batch ({real_per_batch}) + fake_per_batch "
                f"({fake_per_batch}) must equal batch_size ({batch_size}), with at least one real."
            )
        self.real = np.flatnonzero(~is_fake)
        self.fake = np.flatnonzero(is_fake)
        if self.real.size < real_per_batch:
            raise DataError(f"RealFakeSampler: {self.real.size} real images < real_per_batch {real_per_batch}.")
        if fake_per_batch and self.fake.size == 0:
            raise DataError(
                "RealFakeSampler: fake_per_batch > 0 but the data has no fake images. "
                "Fix: set fake_per_batch=0 or include generated sources."
            )
        self.batch_size, self.m, self.n = batch_size, real_per_batch, fake_per_batch
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.real.size // self.m)

    def __iter__(self) -> Iterator[list[int]]:
        rng = _rng(self.seed, self.epoch)
        real = rng.permutation(self.real)
        fake = rng.permutation(self.fake) if self.n else self.fake
        f = 0
        for b in range(len(self)):
            batch = list(real[b * self.m : (b + 1) * self.m])
            for _ in range(self.n):
                if f == fake.size:
                    fake, f = rng.permutation(self.fake), 0
                batch.append(fake[f])
                f += 1
            order = rng.permutation(len(batch))
            yield [int(batch[i]) for i in order]
