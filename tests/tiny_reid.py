"""A tiny re-ID HDF5 file of rendered synthetic people, for trainer / evaluation / CLI tests.

Train holds every image of ``num_ids`` identities over ``num_cams`` cameras; query and gallery
hold images of the *same* identities (evaluation on the trained identities, so a model that
fitted them ranks them at rank 1). ``layout="pair"``: every query from camera 0, every gallery
image from camera 1 (CUHK01 style); ``"mixed"``: query and gallery each take images from every
camera (Market style).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from reidaug.data import synthetic as S
from reidaug.data.h5format import H5Writer


def write_reid_h5(path: Path, num_ids: int = 5, num_cams: int = 2, per_cam: int = 4, height: int = 64,
                  width: int = 32, layout: str = "pair", seed: int = 0) -> Path:
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
    else:
        raise ValueError(f"layout {layout!r}: pair or mixed")
    with H5Writer(path, image_size=(height, width), attrs={"pipeline_key": "tiny-" + layout}) as w:
        w.append("train", images=imgs_a, pid=pids_a, camid=cams_a, label=pids_a - 1)
        w.append("query", images=imgs_a[q], pid=pids_a[q], camid=cams_a[q])
        w.append("gallery", images=imgs_a[g], pid=pids_a[g], camid=cams_a[g])
    return path
