"""DG-Net offline (Zheng et al., "Joint Discriminative and Generative Learning for Person Re-identification",
CVPR 2019): train the appearance / structure generator on the train split, then make swaps.

:func:`collect_identity_images` reads the train split of an ingest output at the model's size with each
image's identity label (0..C-1 over the sorted train pids), camera, path and ingest record;
:func:`train_model` trains :class:`reidaug.models.dgnet.DGNet` with the one resumable loop
(:func:`reidaug.gen.loop.train_loop`): step ``t``'s triplets (an image, another image of its identity, an
image of another identity) and flips are drawn from ``(seed, t)`` only, so a killed run resumes
bit-identically on the CPU; the sample grid is the swap matrix of fixed train images (rows: appearance,
columns: structure). :class:`DGNetGenerator` loads the generator file (the appearance encoder, the
structure encoder and the decoder) and swaps batches; :func:`draw_swaps` picks each appearance source's
structure donors (``random``, ``same-camera`` or ``cross-camera``, always another identity).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np

from reidaug.data.images import image_grid
from reidaug.errors import DataError
from reidaug.gen.common import autocast, images_to_device, inference_autocast, to_uint8_images
from reidaug.gen.loop import (generator_file, generator_weights, load_generator, read_generator_file, save_generator,
                              train_loop)

MODEL = "dgnet"
PAIRS = ("random", "same-camera", "cross-camera")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    iterations: int
    train_batch: int = 8  # triplets per step
    seed: int = 0
    flip: bool = True
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 50
    num_samples: int = 4  # images on each side of the swap-matrix grid


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    steps: int
    resumed_from: int | None
    seconds: float
    images_per_s: float
    last_losses: dict[str, float]
    checksum: str


@dataclasses.dataclass
class IdentityImages:
    """A split's images at one size with their identities: ``images`` ``(N, H, W, 3)`` uint8, ``labels``
    0..C-1 (sorted pids), ``pids``, ``camids``, ``paths``, ``records`` (ingest record index)."""

    images: np.ndarray
    labels: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: list[str]
    records: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def collect_identity_images(chunks: Iterable[tuple[dict[str, Any], dict[str, Any]]], size: tuple[int, int],
                            split: str = "train") -> IdentityImages:
    """The ``split`` images of an ingest output resized to ``size`` (H, W), with their identities."""
    import cv2

    from reidaug.data.images import decode_stored

    h, w = size
    imgs, pids, cams, paths, recs = [], [], [], [], []
    for arrays, _ in chunks:
        for i, s in enumerate(arrays.get("split", [])):
            if s != split:
                continue
            img = decode_stored(arrays["image"][i])
            imgs.append(img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
            pids.append(int(arrays["pid"][i]))
            cams.append(int(arrays["camid"][i]))
            paths.append(str(arrays["path"][i]))
            recs.append(int(arrays["record_index"][i]))
    if not imgs:
        raise DataError(f"no {split} images in the input dataset; DG-Net trains on the real {split} split. Fix: bind "
                        "dataset to an ingest output whose format has a train split.")
    pids_a = np.asarray(pids, np.int64)
    _, labels = np.unique(pids_a, return_inverse=True)
    return IdentityImages(np.stack(imgs), labels.astype(np.int64), pids_a, np.asarray(cams, np.int64), paths,
                          np.asarray(recs, np.int64))


def check_identities(data: IdentityImages, where: str) -> None:
    """DG-Net needs at least two identities (swaps are across identities and the encoder classifies them)
    and some identity with two images (the positive of its same-identity reconstruction)."""
    counts = np.bincount(data.labels)
    if len(counts) < 2:
        raise DataError(f"{where}: the train split has {len(counts)} identity; DG-Net swaps clothes between "
                        "identities and classifies them. Fix: a dataset with at least two train identities.")
    if counts.max() < 2:
        raise DataError(f"{where}: every train identity has one image; DG-Net reconstructs an image from the "
                        "appearance of another image of the same person. Fix: a dataset with several images per "
                        "identity (re-ID datasets have them).")


def build_config(hp: Mapping[str, Any], num_classes: int, seed: int, iterations: int):
    from reidaug.models.dgnet import DGNetConfig

    return DGNetConfig(**{k: v for k, v in hp.items() if v is not None}, num_classes=num_classes, seed=seed,
                       total_steps=iterations)


class _Triplets:
    """Step ``t``'s anchors, positives (another image of each anchor's identity, itself if it has none) and
    others (an image of another identity), flips included: a pure function of ``(seed, t)``."""

    def __init__(self, data: IdentityImages, settings: TrainSettings) -> None:
        self.data, self.s = data, settings
        order = np.argsort(data.labels, kind="stable")
        self.by_label = np.split(order, np.cumsum(np.bincount(data.labels))[:-1])

    def __call__(self, t: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([self.s.seed, t])
        n, b, labels = len(self.data.labels), self.s.train_batch, self.data.labels
        anchor = rng.integers(0, n, b)
        pos = np.empty(b, np.int64)
        other = np.empty(b, np.int64)
        for k, i in enumerate(anchor):
            same = self.by_label[labels[i]]
            cand = same[same != i]
            pos[k] = cand[rng.integers(0, len(cand))] if len(cand) else i
            j = int(rng.integers(0, n - len(same)))  # the j-th image outside the anchor's identity
            other[k] = _nth_outside(labels, labels[i], j, self.by_label)
        flips = rng.random((3, b)) < 0.5 if self.s.flip else np.zeros((3, b), bool)
        out = []
        for idx, f in zip((anchor, pos, other), flips):
            batch = self.data.images[idx].copy()
            batch[f] = batch[f, :, ::-1]
            out.append(batch)
        return out[0], out[1], out[2], labels[anchor], labels[other]


def _nth_outside(labels: np.ndarray, label: int, j: int, by_label: list[np.ndarray]) -> int:
    """The ``j``-th image (in label-sorted order) whose identity is not ``label``."""
    sizes = np.array([len(g) for g in by_label])
    before = int(sizes[:label].sum())
    flat = j if j < before else j + int(sizes[label])
    group = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
    return int(by_label[group][flat - int(sizes[:group].sum())])


def train_model(data: IdentityImages, hp: Mapping[str, Any], settings: TrainSettings, run_dir: Path,
                generator_file: Path, device: "torch.device", amp: bool = False,  # noqa: F821
                should_stop: Callable[[int], bool] | None = None) -> TrainOutcome:
    """Train DG-Net on ``data`` for ``settings.iterations`` steps in ``run_dir`` (resuming from its checkpoint),
    then write the generator file atomically: the appearance encoder (with its identity classifier), the
    structure encoder and the decoder, the config and their checksum."""
    import torch

    from reidaug.models.dgnet import DGNet

    check_identities(data, "train-dgnet")
    model = DGNet(build_config(hp, data.num_classes, settings.seed, settings.iterations))
    if model.config.size != data.images.shape[1:3]:
        raise DataError(f"train-dgnet: images are {data.images.shape[1:3]}, the model trains at {model.config.size}.")
    triplets = _Triplets(data, settings)
    k = min(settings.num_samples, len(data.labels))
    fixed = _spread_identities(data, k)

    def step(batch) -> dict[str, float]:
        x, xp, xo, y, yo = batch
        with autocast(device, amp):
            return model.training_step(images_to_device(x, device), images_to_device(xp, device),
                                       images_to_device(xo, device), torch.from_numpy(y).to(device),
                                       torch.from_numpy(yo).to(device))

    def sample(png: Path) -> None:
        swap_matrix(model, data.images[fixed], png, lambda a: images_to_device(a, device))

    out = train_loop(model, iterations=settings.iterations, batch_for=triplets, train_step=step,
                     run_dir=run_dir, cadence=settings, device=device, where=f"train-dgnet {MODEL}",
                     checkpoint_extra={"model_name": MODEL}, sample=sample, should_stop=should_stop)
    state = {"model": MODEL, "config": dataclasses.asdict(model.config), "weights": generator_weights(model),
             "step": model.step}
    checksum = save_generator(generator_file, state)
    return TrainOutcome(steps=out.steps, resumed_from=out.resumed_from, seconds=out.seconds,
                        images_per_s=out.steps_run * settings.train_batch * 3 / max(out.seconds, 1e-9),
                        last_losses=out.last_losses, checksum=checksum)


def _spread_identities(data: IdentityImages, k: int) -> np.ndarray:
    """``k`` images of ``k`` different identities, spread over the split (the swap grid's rows / columns)."""
    firsts = np.unique(data.labels, return_index=True)[1]
    pick = firsts[np.unique(np.linspace(0, len(firsts) - 1, k).round().astype(np.int64))]
    return np.sort(pick)


def swap_matrix(model, images: np.ndarray, out: Path, to_dev) -> None:
    """The k x k swap grid of ``images``: row r = appearance of image r, column c = structure of image c (the
    diagonal reconstructs the image); the first column holds the appearance sources, the first row the
    structure sources."""
    k = len(images)
    grid = swap_grid(model, images, to_dev)
    blank = np.full_like(images[0], 255)
    rows = [[blank] + list(images)]
    rows += [[images[r]] + list(grid[r]) for r in range(k)]
    image_grid(rows, out, row_labels=["structure ->"] + [f"appearance {r}" for r in range(k)],
               col_labels=[""] + [f"s{c}" for c in range(k)])


def swap_grid(model, images: np.ndarray, to_dev) -> np.ndarray:
    """Every swap of ``images`` (uint8 ``(k, H, W, 3)``): uint8 ``(k, k, H, W, 3)``, ``[r, c]`` = the appearance of
    image ``r`` on the structure of image ``c`` (the diagonal reconstructs), decoded one appearance row at a time."""
    import torch

    from reidaug.models.gan_common import tensor_to_images

    k = len(images)
    with torch.no_grad():
        x = to_dev(images)
        a, s = model.encode_appearance(x), model.encode_structure(x)
        return np.stack([tensor_to_images(model.decode(a[r:r + 1].expand(k, *a.shape[1:]), s).float())
                         for r in range(k)])


def appearance_influence(swaps: np.ndarray, images: np.ndarray) -> dict[str, float]:
    """How much of a swap comes from its appearance source, over the full swap matrix (:func:`swap_grid`) of
    ``images`` (uint8 ``(k, H, W, 3)``, ``k`` different identities). DG-Net's premise is that ``a`` carries the
    clothes' colours and ``s`` the pose and shape; a decoder can instead ignore ``a`` (every row alike) or use it
    only for brightness, which the grey-scale structure already carries. Returns, pixel values in [0, 1]:

    - ``appearance_std``: per pixel, the std of the swaps across appearance sources (structure fixed), averaged;
      ``structure_std``: the same across structure sources (appearance fixed); ``real_std``: across the ``k``
      real images (a whole other person);
    - ``appearance_share``: ``appearance_std / (appearance_std + structure_std)`` (0: ``a`` is ignored);
    - ``colour_from_appearance``: of the off-diagonal swaps, the fraction whose mean chroma (RGB less the grey
      of each pixel, averaged over the image: the colour, brightness taken out) is nearer the appearance
      source's than the structure source's; 0.5 is what a decoder that does not move colour scores on average.
    """
    k = len(images)
    if k < 2 or swaps.shape[:2] != (k, k):
        raise DataError(f"appearance_influence needs the k x k swaps of k >= 2 images; found {k} images and swaps "
                        f"of shape {swaps.shape}")
    y = swaps.astype(np.float32) / 255.0  # (appearance r, structure c, H, W, 3)
    real = images.astype(np.float32) / 255.0

    def chroma(v: np.ndarray) -> np.ndarray:  # (..., H, W, 3) -> (..., 3)
        return (v - v.mean(axis=-1, keepdims=True)).mean(axis=(-3, -2))

    cy, cr = chroma(y), chroma(real)
    to_app = np.linalg.norm(cy - cr[:, None], axis=-1)  # swap (r, c) vs appearance source r
    to_str = np.linalg.norm(cy - cr[None, :], axis=-1)  # vs structure source c
    off = ~np.eye(k, dtype=bool)
    app_std, str_std = float(y.std(axis=0).mean()), float(y.std(axis=1).mean())
    return {"num_ids": int(k), "appearance_std": app_std, "structure_std": str_std,
            "real_std": float(real.std(axis=0).mean()),
            "appearance_share": app_std / (app_std + str_std) if app_std + str_std > 0 else 0.0,
            "colour_from_appearance": float(np.mean(to_app[off] < to_str[off]))}


def judge_identity_of_swaps(swap_f: np.ndarray, source_f: np.ndarray, source_labels: np.ndarray,
                            gallery_f: np.ndarray, gallery_labels: np.ndarray) -> dict[str, Any]:
    """Whose person a judge sees in each swap: judge features (L2-normalised) of the off-diagonal swaps
    ``swap_f`` ``(k, k, D)`` of ``k`` source images of different identities (``source_f`` ``(k, D)``,
    ``source_labels``), each matched to its nearest image of a gallery of *other* images of the same split
    (``gallery_f``, ``gallery_labels``: the sources themselves left out, so the judge must recognise the person,
    not the photo). Returns the fractions whose match is the appearance source's identity (DG-Net's label for
    the swap), the structure source's, or neither, beside the rank-1 of the real source images themselves."""
    k = len(source_labels)
    if swap_f.shape[:2] != (k, k) or len(gallery_labels) == 0:
        raise DataError(f"judge_identity_of_swaps: swaps {swap_f.shape[:2]} for {k} sources and a gallery of "
                        f"{len(gallery_labels)}; need k x k swaps and a non-empty gallery")
    off = ~np.eye(k, dtype=bool)
    nearest = gallery_labels[np.argmax(swap_f[off] @ gallery_f.T, axis=1)]
    app = np.broadcast_to(source_labels[:, None], (k, k))[off]
    struct = np.broadcast_to(source_labels[None, :], (k, k))[off]
    real = gallery_labels[np.argmax(source_f @ gallery_f.T, axis=1)] == source_labels
    return {"num_swaps": int(off.sum()), "appearance": float(np.mean(nearest == app)),
            "structure": float(np.mean(nearest == struct)),
            "neither": float(np.mean((nearest != app) & (nearest != struct))),
            "real_rank1": float(np.mean(real)), "gallery": int(len(gallery_labels))}


class Swap(NamedTuple):
    """One fake: the appearance (clothes, identity) of row ``appearance``, the structure of ``structure``."""

    appearance: int
    structure: int


def draw_swaps(labels: np.ndarray, camids: np.ndarray, rows: Iterable[int], pairs: str, per_image: int,
               rng: np.random.Generator) -> tuple[list[Swap], int]:
    """For each appearance row in ``rows``: ``per_image`` structure donors of other identities, drawn without
    replacement among all images (``random``), those of the same camera (``same-camera``) or of another camera
    (``cross-camera``). Returns the swaps (in row order, donors sorted) and how many rows had fewer donors
    than asked (they get all they have)."""
    if pairs not in PAIRS:
        raise DataError(f"pairs must be one of {', '.join(PAIRS)}; found {pairs!r}")
    out, short = [], 0
    for i in rows:
        ok = labels != labels[i]
        if pairs == "same-camera":
            ok &= camids == camids[i]
        elif pairs == "cross-camera":
            ok &= camids != camids[i]
        cand = np.flatnonzero(ok)
        if len(cand) < per_image:
            short += 1
        take = np.sort(rng.choice(cand, size=min(per_image, len(cand)), replace=False)) if len(cand) else []
        out.extend(Swap(int(i), int(j)) for j in take)
    return out, short


class DGNetGenerator:
    """The generator of a ``train-dgnet`` output, ready for batches of swaps."""

    def __init__(self, model_file: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                 where: str = "generate-dgnet", cpu_bf16: bool = False) -> None:
        from reidaug.models.dgnet import DGNet, DGNetConfig

        self.device, self.amp, self.file, self.cpu_bf16 = device, amp, Path(model_file), cpu_bf16
        state = read_generator_file(self.file, MODEL, "train-dgnet", where)
        self.checksum: str = state["checksum"]
        # the file holds every weight: no ImageNet file is needed (or read) to rebuild the encoder
        config = DGNetConfig(**{**state["config"], "app_pretrained": "none"})
        self.model = load_generator(DGNet(config), state, self.file, device, where, "train-dgnet")
        self.size: tuple[int, int] = self.model.config.size

    @classmethod
    def from_folder(cls, folder: Path, device: "torch.device", amp: bool = True,  # noqa: F821
                    where: str = "input models", cpu_bf16: bool = False) -> "DGNetGenerator":
        return cls(generator_file(folder, MODEL, "train-dgnet"), device, amp=amp, where=where, cpu_bf16=cpu_bf16)

    def swap_tensor(self, appearance: "torch.Tensor", structure: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        """Float ``(B, 3, H, W)`` in [-1, 1] twice on the device → uint8 ``(B, H, W, 3)`` on the device."""
        import torch

        with torch.inference_mode(), inference_autocast(self.device, self.amp, self.cpu_bf16):
            y = self.model.swap(appearance, structure)
            return to_uint8_images(y)

    def swap(self, appearance: np.ndarray, structure: np.ndarray) -> np.ndarray:
        """uint8 ``(B, H, W, 3)`` appearance and structure images at the model's size → the swaps, uint8."""
        return self.swap_tensor(images_to_device(appearance, self.device),
                                images_to_device(structure, self.device)).cpu().numpy()
