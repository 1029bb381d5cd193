"""A tiny re-ID HDF5 file of rendered synthetic people, for trainer / evaluation / CLI tests.

Train holds every image of ``num_ids`` identities over ``num_cams`` cameras; query and gallery
hold images of the *same* identities (evaluation on the trained identities, so a model that
fitted them ranks them at rank 1). ``layout="pair"``: every query from camera 0, every gallery
image from camera 1 (CUHK01 style); ``"mixed"``: query and gallery each take images from every
camera (Market style); ``"strided"``: query = every 4th train image, no gallery. ``fakes``
appends that many LSRO images (no identity, source ``dcgan``) to train.

Also the tiny model that fits such a file in seconds on one CPU thread (:func:`tiny_config`, the
same options as ``reidaug train`` flags: :func:`tiny_cli_args`), and :func:`one_torch_thread`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from reidaug.data import synthetic as S
from reidaug.data.h5format import H5Writer
from reidaug.train.config import TrainConfig

H, W = 64, 32
#: The tiny model's options (the epochs and LR steps come from :func:`tiny_config` or the test).
# P x K batches, ID + triplet, step schedule: the trainer's mechanics (samplers, both losses,
# milestones) in every test; the default recipe (random batches, ID, cosine, random erasing) is tested by
# name. No random erasing: a 25-epoch fit of 5 identities is what these tests hold the trainer to
TINY_MODEL: dict[str, Any] = dict(backbone="tiny", pretrained="none", height=H, width=W, sampler="pk", p=5, k=4,
                                  loss="both", schedule="step", lr=1e-3, warmup_epochs=2, num_workers=0,
                                  random_erasing=False)


def tiny_config(**options: Any) -> TrainConfig:
    """The tiny model for 25 epochs (x0.1 at 20): it fits a 5-identity file."""
    return TrainConfig(**(TINY_MODEL | dict(epochs=25, milestones=(20,), log_every=2, seed=0) | options))


def tiny_cli_args() -> list[str]:
    """:data:`TINY_MODEL` as ``reidaug train`` arguments (``--set NAME=VALUE``)."""
    return [arg for name, value in TINY_MODEL.items() for arg in ("--set", f"{name}={value}")]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """2 cores shared with other jobs: one intra-op thread is both faster and reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def write_reid_h5(path: Path, num_ids: int = 5, num_cams: int = 2, per_cam: int = 4, height: int = H,
                  width: int = W, layout: str = "pair", seed: int = 0, fakes: int = 0,
                  fake_scheme: str = "lsro") -> Path:
    """A tiny re-ID file; ``fakes`` copies of the first train images as generated ones: LSRO
    (``dcgan``, no identity, uniform targets) or ``fake_scheme="lsr"`` (``camstyle``, the
    identity kept, LSR with epsilon 0.3)."""
    imgs, pids, cams, index = [], [], [], []
    for pid in range(1, num_ids + 1):
        app = S.identity_appearance(pid, seed)
        for cam in range(num_cams):
            style = S.camera_style(cam, seed)
            for i in range(per_cam):
                pose = S.sample_pose(S.pose_rng(seed, pid, cam, i), height, width)
                img, _ = S.render(app, pose, style, height, width, S.image_rng(seed, pid, cam, i, cam))
                imgs.append(img)
                pids.append(pid)
                cams.append(cam)
                index.append(i)
    imgs_a, pids_a, cams_a, index_a = np.stack(imgs), np.array(pids), np.array(cams), np.array(index)
    if layout == "pair":
        q = (cams_a == 0) & (index_a < 2)
        g = (cams_a == 1) & (index_a < 2)
    elif layout == "mixed":
        q = index_a == 0
        g = index_a >= 1
    elif layout == "strided":
        q = np.arange(len(imgs_a)) % 4 == 0
        g = np.zeros(len(imgs_a), bool)
    else:
        raise ValueError(f"layout {layout!r}: pair, mixed or strided")
    with H5Writer(path, image_size=(height, width), attrs={"pipeline_key": "tiny-" + layout}) as w:
        w.append("train", images=imgs_a, pid=pids_a, camid=cams_a, label=pids_a - 1)
        if fakes and fake_scheme == "lsr":
            c = num_ids
            w.append("train", images=imgs_a[:fakes], pid=pids_a[:fakes], camid=cams_a[:fakes],
                     label=pids_a[:fakes] - 1, source="camstyle", label_scheme="lsr",
                     target_index=(pids_a[:fakes] - 1).astype(np.int32)[:, None],
                     target_value=np.full((fakes, 1), 0.7 + 0.3 / c, np.float32))
        elif fakes:
            w.append("train", images=imgs_a[:fakes], pid=-1, camid=cams_a[:fakes], label=-1, source="dcgan",
                     label_scheme="lsro", target_index=np.full((fakes, 1), -1, np.int32),
                     target_value=np.zeros((fakes, 1), np.float32))
        w.append("query", images=imgs_a[q], pid=pids_a[q], camid=cams_a[q])
        if g.any():
            w.append("gallery", images=imgs_a[g], pid=pids_a[g], camid=cams_a[g])
    return path


def write_reid_pipeline(path: Path, name: str, arms: Sequence[tuple[str, float, int]],
                        fine_tunings: Sequence[tuple[str, str]] = ()) -> Path:
    """A pipeline YAML at ``path``: the synthetic dataset (6 identities) ingested and exported at 64 x 32,
    a tiny ``train-reid`` stage for each ``(stage, lr, seed)`` of ``arms``, and one for each ``(stage,
    init stage)`` of ``fine_tunings`` that starts from that stage's model (lr 0.001, seed 0)."""
    def stage(stage_name: str, lr: float, seed: int, init: str | None = None) -> str:
        inputs = "data: export-hdf5.hdf5" + (f", init_model: {init}.model" if init else "")
        return (f"  {stage_name}:\n    uses: train-reid\n    inputs: {{{inputs}}}\n"
                f"    params: {{backbone: tiny, pretrained: none, height: 64, width: 32, epochs: 1, "
                f"train_batch_size: 8,\n              lr: {lr}, seed: {seed}, num_workers: 0, log_every: 2}}\n")

    path.write_text(f"name: {name}\nstages:\n"
                    "  demo-data: {params: {num_ids: 6, images_per_id_per_cam: 2, height: 64, width: 32}}\n"
                    "  ingest: {params: {format: market1501}, inputs: {source: demo-data.dataset}}\n"
                    "  export-hdf5: {params: {image_height: 64, image_width: 32}}\n"
                    + "".join(stage(*arm) for arm in arms)
                    + "".join(stage(ft, 0.001, 0, init) for ft, init in fine_tunings))
    return path
