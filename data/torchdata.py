"""PyTorch side of the reidaug HDF5 format: a fork-safe Dataset, re-ID transforms, samplers.

- :class:`ReidH5Dataset` reads one split of a reidaug HDF5 file. The h5py handle is opened
  lazily in each process (keyed by pid), so DataLoader workers never share a handle across a
  fork (h5py/HDF5 handles are not fork-safe). With auto-batching, the DataLoader calls its
  ``__getitems__`` with a whole batch of positions: the rows are read in file order (uncompressed
  raw images straight from their HDF5 chunks), transformed as one batch and handed over already
  collated (use ``collate_fn=reid_collate`` to skip the second collation; see the class doc).
- :func:`build_transforms` / :class:`ReidTransforms` is the strong re-ID baseline's input
  pipeline (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person
  Re-identification", CVPRW 2019): resize to 256x128, random horizontal flip, pad 10 + random
  crop, ImageNet normalisation, optional random erasing (Zhong et al., "Random Erasing Data
  Augmentation", AAAI 2020). It runs on RGB uint8 pixels with OpenCV (resize, flip, and the
  normalisation as a 256-entry lookup table per channel), one sample or a whole batch.
- :class:`PKSampler` draws P identities x K images per batch (Hermans et al., "In Defense of the
  Triplet Loss", 2017; torchreid's RandomIdentitySampler), deterministic for a seed and epoch.
- :class:`RealFakeSampler` puts exactly M real and N generated images in each batch, as CamStyle
  trains (Zhong et al., "Camera Style Adaptation for Person Re-identification", CVPR 2018).
"""
from __future__ import annotations

import logging
import math
import operator
import os
from collections.abc import Sequence as SequenceABC
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

from reidaug.data.h5format import SOURCES, TRAIN_SPLIT, H5File, densify_targets, open_h5
from reidaug.errors import ConfigError, DataError, unknown_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool = True) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker (and ``shared``) in shared memory already.

    Same trick as torch's ``default_collate``: a batch built in shared memory goes to the main
    process as a file handle, while a batch in ordinary memory is copied into shared memory when
    the worker sends it (one more pass over the whole batch).
    """
    if not shared or get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device=proto.device)
    return proto.new(storage).resize_(shape)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _normalize_lut(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(256, 1, 3) float32: the normalised value of every uint8 level, per channel.

    Computed with the same float32 operations as :class:`Normalize255`, so a table lookup gives
    bit-identical results to ``(x - 255 mean) * (1 / (255 std))``.
    """
    mean255 = torch.tensor(mean, dtype=torch.float32).view(1, 3) * 255
    inv_std255 = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3) * 255)
    levels = torch.arange(256, dtype=torch.float32).view(256, 1)
    return (levels - mean255).mul_(inv_std255).numpy().reshape(256, 1, 3).copy()


class ReidTransforms:
    """Re-ID input transforms on RGB uint8 pixels, one image or a whole batch.

    Steps, in order: resize to (height, width) when the image has another size (OpenCV: bilinear
    up, area down); horizontal flip with probability ``flip_p`` (drawn per sample); zero-pad by
    ``pad`` pixels and crop back at a random offset (= shift by -pad..pad, per sample); ImageNet
    normalisation to float32 when ``normalize``; random erasing (p=0.5, area 2-40 %, aspect
    0.3-3.3) when ``random_erasing``. All randomness comes from torch's global generator, which
    the DataLoader seeds per worker, so a loader with a seeded ``generator`` is reproducible.

    ``normalize=True`` (the default) returns float32 ImageNet-normalised images. ``False`` returns
    uint8 and leaves :func:`normalize_batch` to the consumer (on the GPU: 4x less data to move
    between processes and to the device; a forgotten call fails loudly, since a model refuses
    uint8 input); random erasing then fills with the uint8 mean pixel, which normalises to within
    0.009 of the 0 that the float path fills with.

    Output layout: ``(..., 3, H, W)`` in channels-last memory (the pixels stay in the file's
    (H, W, 3) order; convolutions accept it, and ``.contiguous()`` gives NCHW strides).
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 128,
        flip_p: float = 0.5,
        pad: int = 10,
        normalize: bool = True,
        random_erasing: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if height < 1 or width < 1 or pad < 0 or not 0.0 <= flip_p <= 1.0:
            raise ConfigError(
                f"ReidTransforms needs height, width >= 1, pad >= 0 and 0 <= flip_p <= 1; found "
                f"height={height}, width={width}, pad={pad}, flip_p={flip_p}."
            )
        self.size = (int(height), int(width))
        self.flip_p = float(flip_p)
        self.pad = int(pad)
        self.normalize = bool(normalize)
        self.random_erasing = bool(random_erasing)
        self.mean, self.std = tuple(mean), tuple(std)
        self._lut = _normalize_lut(mean, std)
        self._mean_u8 = tuple(int(round(m * 255)) for m in mean)

    def __repr__(self) -> str:
        h, w = self.size
        return (f"ReidTransforms(height={h}, width={w}, flip_p={self.flip_p}, pad={self.pad}, "
                f"normalize={self.normalize}, random_erasing={self.random_erasing})")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> (3, height, width), float32 when ``normalize`` else uint8."""
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
            found = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise DataError(f"ReidTransforms expects a uint8 (3, H, W) tensor; found {found}.")
        return self.batch([img.permute(1, 2, 0).numpy()], shared=False)[0]

    def batch(self, images: Sequence[np.ndarray], shared: bool = True) -> torch.Tensor:
        """B RGB uint8 (H, W, 3) arrays (sizes may differ) -> (B, 3, height, width) tensor.

        ``shared``: inside a DataLoader worker, build the result in shared memory (it is a
        whole batch about to be sent to the main process).
        """
        b = len(images)
        th, tw = self.size
        # Per-sample random draws, in a fixed order: flips, shifts, then erasing.
        flips = (torch.rand(b) < self.flip_p).tolist() if self.flip_p > 0 else [False] * b
        shifts = (torch.randint(-self.pad, self.pad + 1, (b, 2)).tolist() if self.pad else [[0, 0]] * b)
        dtype = torch.float32 if self.normalize else torch.uint8
        out = _empty((b, th, tw, 3), dtype, shared)  # (B, H, W, 3): channels-last storage
        out_np = out.numpy()
        work = np.empty((th, tw, 3), np.uint8)  # scratch for one image
        for j, src in enumerate(images):
            src = np.asarray(src)
            if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3:
                raise DataError(
                    f"ReidTransforms: image {j} must be RGB uint8 (H, W, 3); found {src.dtype} {src.shape}."
                )
            if not src.flags.c_contiguous:
                src = np.ascontiguousarray(src)
            # uint8 result of resize/flip/shift lands in `dst`: the output slot itself when no
            # normalisation follows, else the scratch buffer that the lookup table reads.
            dst = work if self.normalize else out_np[j]
            h, w = src.shape[:2]
            if (h, w) != (th, tw):
                interp = cv2.INTER_AREA if th * tw < h * w else cv2.INTER_LINEAR
                src = cv2.resize(src, (tw, th), interpolation=interp)
            dy, dx = shifts[j]
            if flips[j]:
                if dy or dx:
                    src = cv2.flip(src, 1)
                else:
                    cv2.flip(src, 1, dst=dst)
                    src = dst
            if dy or dx:
                # Pad with zeros + crop at offset (pad + dy, pad + dx) == shift by (-dy, -dx).
                dst[...] = 0
                y0, y1, x0, x1 = max(0, -dy), min(th, th - dy), max(0, -dx), min(tw, tw - dx)
                if y0 < y1 and x0 < x1:  # else (pad >= size) the crop is all padding
                    dst[y0:y1, x0:x1] = src[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
                src = dst
            if self.normalize:
                cv2.LUT(src, self._lut, dst=out_np[j])
            elif src is not dst:
                np.copyto(dst, src)
        img = out.permute(0, 3, 1, 2)  # (B, 3, H, W), channels-last strides
        if self.random_erasing:
            fill = (0.0, 0.0, 0.0) if self.normalize else self._mean_u8
            for j in range(b):
                self._erase(img[j], fill)
        return img

    def _erase(self, img: torch.Tensor, fill: tuple[float, ...]) -> None:
        """Random erasing in place on one (3, H, W) view (torchvision's RandomErasing draws)."""
        if torch.rand(1).item() >= 0.5:
            return
        _, h, w = img.shape
        area = h * w
        log_ratio = (math.log(0.3), math.log(3.3))
        for _ in range(10):
            erase_area = area * torch.empty(1).uniform_(0.02, 0.4).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
            eh = int(round(math.sqrt(erase_area * aspect)))
            ew = int(round(math.sqrt(erase_area / aspect)))
            if not (eh < h and ew < w):
                continue
            i = int(torch.randint(0, h - eh + 1, (1,)).item())
            k = int(torch.randint(0, w - ew + 1, (1,)).item())
            for c in range(3):
                img[c, i : i + eh, k : k + ew] = fill[c]
            return


def build_transforms(
    height: int = 256,
    width: int = 128,
    train: bool = True,
    random_erasing: bool = False,
    normalize: bool = True,
    flip_p: float = 0.5,
    pad: int = 10,
) -> ReidTransforms:
    """Re-ID transforms on a uint8 (3, H, W) tensor -> (3, height, width); see :class:`ReidTransforms`.

    train: resize, horizontal flip (``flip_p``), pad ``pad`` (zeros) + random crop back to size,
    ImageNet normalise, then random erasing when ``random_erasing``. test: resize, normalise.
    ``normalize=False`` stops at uint8: call :func:`normalize_batch` on the batch (on the device).
    ``ReidH5Dataset`` runs these on a whole batch at once when the DataLoader batches.
    """
    if train:
        return ReidTransforms(height, width, flip_p=flip_p, pad=pad, normalize=normalize,
                              random_erasing=random_erasing)
    return ReidTransforms(height, width, flip_p=0.0, pad=0, normalize=normalize)


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
    """uint8 (B, 3, H, W) -> float32 ImageNet-normalised (B, 3, H, W), on batch's device.

    The consumer half of ``normalize=False`` transforms; keeps ``batch``'s memory format and
    gives the same values as normalising in the workers.
    """
    if batch.dtype != torch.uint8:
        raise DataError(
            f"normalize_batch expects the uint8 images of transforms built with normalize=False; "
            f"found {batch.dtype}. Fix: drop this call when the workers already normalise."
        )
    if batch.device.type == "cpu" and batch.ndim == 4 and batch.shape[1] == 3 and batch.is_contiguous(
        memory_format=torch.channels_last
    ):
        # What ReidTransforms(normalize=False) gives: torch's broadcast over a last dimension of
        # 3 is slow on the CPU (about 4x the lookup table here), so use the table; same values.
        lut = _normalize_lut(IMAGENET_MEAN, IMAGENET_STD)
        src = batch.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) view
        out = torch.empty(src.shape, dtype=torch.float32)
        out_np = out.numpy()
        for j in range(src.shape[0]):
            cv2.LUT(src[j], lut, dst=out_np[j])
        return out.permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1) * 255
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1) * 255)
    return batch.float().sub_(mean).mul_(inv_std)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def _serial_cv2_in_worker() -> None:
    """Make OpenCV run serially in this DataLoader worker, without touching its thread pool.

    N workers already use the cores; OpenCV's pool on top only oversubscribes them (measured
    slower here), as torch's own threads would (torch sets itself to one in each worker).

    ``setNumThreads(0)``, not ``setNumThreads(1)``: in OpenCV's pthreads backend (the pip
    wheels') ``1`` stops the pool's worker threads at once, destroying each one's condition
    variable. A worker *forked* from a parent whose pool has threads inherits that pool's
    bookkeeping but none of its threads; where the parent's threads were asleep on those
    condition variables, ``pthread_cond_destroy`` in the child waits for ever for waiters
    that do not exist there (a hung DataLoader; tests/unit/data/test_torchdata_fork.py). ``0``
    only records the count: every ``parallel_for_`` then runs its body in the calling thread
    and never looks at the pool, so the inherited one is left alone, and a fresh one (spawn,
    forkserver) never starts a thread.
    """
    cv2.setNumThreads(0)


class ReidBatch(SequenceABC):
    """What :meth:`ReidH5Dataset.__getitems__` returns: a collated batch that still looks like a
    list of samples.

    ``collated`` is the batch dict (``img`` (B, 3, H, W), ``target`` (B, C) or (B,), ``pid``,
    ``camid``, ``index`` int64 (B,), ``is_fake`` bool (B,)). :func:`reid_collate` returns it as
    is; ``default_collate`` (or any collate_fn) sees B per-sample dicts, made on access as views
    into the batch, and gets the same values at the price of one more copy of the batch.
    """

    def __init__(self, collated: dict[str, torch.Tensor]) -> None:
        self.collated = collated

    def __len__(self) -> int:
        return int(self.collated["index"].shape[0])

    # pid of the process that has split a ReidBatch into samples (None: none has). That process's
    # collate_fn copies every batch again, so ReidH5Dataset stops building its batches in shared
    # memory there (the copy is what gets sent), and the first time it says so.
    unpacked_in: int | None = None

    def __getitem__(self, j: int) -> dict[str, Any]:  # type: ignore[override]
        j = operator.index(j)  # one sample per index; a slice is a TypeError
        if ReidBatch.unpacked_in != os.getpid():
            ReidBatch.unpacked_in = os.getpid()
            info = get_worker_info()
            if info is not None and info.id == 0:  # workers are new processes each epoch: one line
                log.warning(
                    "ReidH5Dataset batches are being split into samples and collated again (the "
                    "DataLoader's collate_fn is not reid_collate): same values, one more copy of "
                    "every batch. Fix: DataLoader(..., collate_fn=reid_collate), or call "
                    "reid_collate first in your own collate_fn."
                )
        c = self.collated
        return {"img": c["img"][j], "target": c["target"][j], "pid": int(c["pid"][j]),
                "camid": int(c["camid"][j]), "index": int(c["index"][j]), "is_fake": bool(c["is_fake"][j])}


def reid_collate(batch: Any) -> Any:
    """collate_fn for :class:`ReidH5Dataset`: passes a :class:`ReidBatch` through, no copy.

    Anything else goes to ``default_collate``, so it also serves ``batch_size=None`` loaders
    and datasets without ``__getitems__`` (e.g. a ``ConcatDataset``).
    """
    if isinstance(batch, ReidBatch):
        return batch.collated
    return default_collate(batch)


class ReidH5Dataset(Dataset):
    """One split of a reidaug HDF5 file as a map-style torch Dataset.

    Items are dicts: ``img`` (transformed tensor; uint8 (3, H, W) without a transform),
    ``target`` (train: dense soft target float32 (C,), the final training target, never to be
    smoothed again; other splits: the label, int64, -1), ``pid``, ``camid``, ``index`` (row in
    the split, not in the ``sources`` subset) and ``is_fake``.
    ``sources`` keeps only samples whose source is in the list (e.g. ``["real"]``); ``pids`` only
    those identities, ``exclude_pids`` all but those (a validation split held out of training,
    fakes made from them included).

    Batches: a DataLoader that batches (``batch_size=``, or ``batch_sampler=`` with
    :class:`PKSampler` / :class:`RealFakeSampler`) calls :meth:`__getitems__` with a whole batch
    of positions. It reads the rows in file order (uncompressed raw images are copied straight
    out of their HDF5 chunks, skipping h5py's per-row selection machinery), runs a
    :class:`ReidTransforms` transform on the batch at once (any other callable per sample), and
    builds the batch tensors in shared memory inside a worker (where it also makes OpenCV run
    serially, as torch does for itself; see :func:`_serial_cv2_in_worker`). Pass ``collate_fn=reid_collate``
    so the DataLoader takes that batch as is; with the default collate_fn it still works, with
    the same values, but pays one more copy of the whole batch.

    Where the time goes (CUHK01 raw at 256x128, 2 workers, 2-core VM; bench/results/loader.json):
    reading a batch costs ~30 us/img; the rest is the output. With normalisation in the workers
    (the default: float32 out, nothing to remember) the batch is 4x the bytes of the pixels, and
    writing it into fresh shared memory (page faults) made ``__getitems__`` ~600 us/img. With
    transforms built with ``normalize=False`` it was ~250 us/img (uint8 out) and the consumer
    must call :func:`normalize_batch` (~100 us/img on one CPU thread; on the GPU in training,
    nearly free). Either way the images are (B, 3, H, W) in channels-last memory.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = TRAIN_SPLIT,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sources: Sequence[str] | None = None,
        pids: Sequence[int] | None = None,
        exclude_pids: Sequence[int] | None = None,
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
        if pids is not None:  # only these identities (a validation split's)
            keep &= np.isin(meta.pid, np.asarray(list(pids), np.int64))
        if exclude_pids is not None:  # not these (held out for validation): their fakes go too
            keep &= ~np.isin(meta.pid, np.asarray(list(exclude_pids), np.int64))
        self.indices = np.flatnonzero(keep)  # (M,) rows of the split
        self.pids = meta.pid[self.indices]
        self.labels = meta.label[self.indices]
        self.camids = meta.camid[self.indices]
        self.is_fake = meta.source[self.indices] != SOURCES["real"]
        # rows whose target is plain one-hot (label_scheme onehot, or a file without the column):
        # the only ones a trainer's label_smoothing may smooth
        onehot = {v: k for k, v in meta.label_scheme_names.items()}.get("onehot")
        self.is_onehot = (np.ones(len(self.indices), bool) if meta.label_scheme is None
                          else meta.label_scheme[self.indices] == onehot)
        self._sparse = None if sparse is None else tuple(a[self.indices] for a in sparse)
        self._file: H5File | None = None
        self._pid: int | None = None
        self._chunked: Any = None  # the images dataset when rows can be read as raw chunks
        self._scratch: np.ndarray | None = None  # (B, H, W, 3) read buffer, reused per process
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
            self._chunked = self._raw_chunks(self._file)
            self._scratch = None
            if get_worker_info() is not None:
                _serial_cv2_in_worker()
        return self._file

    def _raw_chunks(self, f: H5File) -> Any:
        """The split's images dataset if each row is one unfiltered uint8 chunk, else None.

        Such a chunk's bytes are the image, so ``read_direct_chunk`` can copy it straight into a
        batch buffer: about 2x faster than ``ds[i]`` (per-row selection) here, and h5py's fancy
        indexing ``ds[sorted_rows]`` is far slower than either (milliseconds per row).
        """
        if f.info.image_encoding != "raw":
            return None
        ds = f.h5[self.split]["images"]
        if (ds.dtype != np.uint8 or ds.ndim != 4 or ds.chunks != (1, *ds.shape[1:])
                or ds.id.get_create_plist().get_nfilters() != 0):
            return None
        return ds

    def __getstate__(self) -> dict[str, Any]:  # spawn/forkserver workers pickle the dataset
        return {**self.__dict__, "_file": None, "_pid": None, "_chunked": None, "_scratch": None}

    def __getitem__(self, pos: int) -> dict[str, Any]:
        if not 0 <= pos < len(self):
            raise IndexError(f"index {pos} out of range for {len(self)} samples")
        f = self._h5()
        row = int(self.indices[pos])
        img = torch.from_numpy(f.read_image(self.split, row)).permute(2, 0, 1)  # (3, H, W) uint8
        if self.transform is not None:
            img = self.transform(img)
        return {
            "img": img,
            "target": self._targets(f, np.array([pos]), np.array([row]))[0],
            "pid": int(self.pids[pos]),
            "camid": int(self.camids[pos]),
            "index": row,
            "is_fake": bool(self.is_fake[pos]),
        }

    def _read_images(self, f: H5File, rows: np.ndarray) -> Sequence[np.ndarray]:
        """RGB uint8 (H, W, 3) images of ``rows`` (in that order), read in file order."""
        order = np.argsort(rows, kind="stable")
        ds = self._chunked
        if ds is None:
            images: list[np.ndarray] = [None] * rows.size  # type: ignore[list-item]
            for j in order:
                images[j] = f.read_image(self.split, int(rows[j]))
            return images
        n = rows.size
        if self._scratch is None or self._scratch.shape[0] < n:
            self._scratch = np.empty((n, *ds.shape[1:]), np.uint8)
        flat = self._scratch[:n].reshape(n, -1)  # (B, H*W*3): one chunk per row
        read = ds.id.read_direct_chunk
        for j in order:
            row = int(rows[j])
            try:
                read((row, 0, 0, 0), out=flat[j])
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"cannot read {self.split} image {row} from {self.path}: {exc}. "
                    "Fix: run `reidaug inspect --verify` on the file and re-export it."
                ) from exc
        return self._scratch[:n]

    def __getitems__(self, positions: Sequence[int]) -> ReidBatch:
        """A whole batch of dataset positions -> :class:`ReidBatch` (see the class docstring)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size == 0:
            raise DataError(f"{self.path} split {self.split!r}: asked for an empty batch of samples.")
        bad = pos[(pos < 0) | (pos >= len(self))]
        if bad.size:
            raise IndexError(f"index {int(bad[0])} out of range for {len(self)} samples")
        f = self._h5()
        rows = self.indices[pos]  # (B,) rows of the split
        images = self._read_images(f, rows)
        return ReidBatch({
            "img": self._transform_batch(images),
            "target": self._targets(f, pos, rows),
            "pid": torch.from_numpy(self.pids[pos].astype(np.int64)),
            "camid": torch.from_numpy(self.camids[pos].astype(np.int64)),
            "index": torch.from_numpy(rows.astype(np.int64)),
            "is_fake": torch.from_numpy(self.is_fake[pos].copy()),
        })

    def _targets(self, f: H5File, pos: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """Targets of positions ``pos`` (split rows ``rows``): train the dense soft targets float32 (B, C),
        else the labels int64 (B,)."""
        if self.split != TRAIN_SPLIT:
            return torch.from_numpy(self.labels[pos].astype(np.int64))
        if self._sparse is not None:
            ti, tv, tr = self._sparse
            return torch.from_numpy(densify_targets(ti[pos], tv[pos], tr[pos], self.num_classes))
        return torch.from_numpy(f.targets(self.split, rows))

    def _transform_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        t = self.transform
        shared = ReidBatch.unpacked_in != os.getpid()  # see ReidBatch.unpacked_in
        if isinstance(t, ReidTransforms):
            return t.batch(images, shared=shared)
        samples = [torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in images]  # (3, H, W)
        if t is not None:
            samples = [t(s) for s in samples]
        if not all(isinstance(s, torch.Tensor) for s in samples):
            return default_collate(samples)
        shapes = sorted({tuple(s.shape) for s in samples})
        if len(shapes) > 1:
            raise DataError(
                f"{self.path} split {self.split!r}: the images of one batch have different shapes "
                f"{shapes[:3]}; a batch needs one size. Fix: pass transform=build_transforms(h, w), "
                "which resizes every image."
            )
        out = _empty((len(samples), *shapes[0]), samples[0].dtype, shared)
        return torch.stack(samples, 0, out=out)

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


def validation_ids(train_pids: Sequence[int] | np.ndarray, fraction: float, seed: int) -> list[int]:
    """The identities held out of training for validation: ``round(fraction * n)`` of the ``n``
    distinct train identities (at least 2 when ``fraction > 0``, so a query has another identity
    to be confused with), drawn with ``numpy.random.default_rng(seed)`` from the sorted ids, so
    the same file, fraction and seed always hold out the same people. Empty for ``fraction == 0``."""
    ids = np.unique(np.asarray(train_pids, np.int64))
    ids = ids[ids >= 0]
    if fraction <= 0:
        return []
    n = min(len(ids) - 1, max(2, int(round(fraction * len(ids)))))
    if n < 2:
        raise DataError(f"a validation split needs at least 3 train identities; found {len(ids)}. Fix: "
                        "set val_fraction: 0")
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in rng.choice(ids, size=n, replace=False))
