"""Ground truth of generated images on the synthetic dataset: its renderer draws every person
in every pose under every camera style, so a camera- or pose-transferred fake has an exact
picture to be compared with (``reidaug demo-data``; :mod:`reidaug.data.synthetic`)."""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from reidaug.errors import DataError

_MARKET_CAM = re.compile(r"^\d+_c(?P<cam>\d+)s\d+_")


def synthetic_gt_path(dataset_root: str | os.PathLike[str], origin_path: str, target_camid: int) -> Path:
    """The ground-truth image of ``origin_path``'s person and pose seen by camera ``target_camid``.

    ``dataset_root``: a folder written by :func:`reidaug.data.synthetic.write_dataset` (the
    ``dataset/`` output of the demo-data stage); ``origin_path``: the image's path relative to
    it (as HDF5 ``path`` stores it, e.g. ``bounding_box_train/0001_c1s1_000001_00.jpg``);
    ``target_camid``: 0-based. Layout: ``gt_camstyle/<target + 1>/<file name>``; for the
    image's own camera the truth is the image itself. Raises DataError when the file is absent.
    """
    from reidaug.data.synthetic import GT_CAMSTYLE_DIR

    root = Path(dataset_root)
    name = PurePosixPath(str(origin_path)).name
    m = _MARKET_CAM.match(name)
    if m is None:
        raise DataError(
            f"synthetic_gt_path: {origin_path!r} is not a synthetic (Market-style "
            f"PPPP_cCsS_FFFFFF_BB.jpg) image name; ground truth exists only for the synthetic "
            f"dataset (reidaug demo-data)."
        )
    if int(target_camid) < 0:
        raise DataError(f"synthetic_gt_path: target camera {target_camid} of {origin_path!r} is "
                        f"negative; only camera-transferred fakes have a ground truth.")
    own = int(m["cam"]) - 1
    path = (root / str(origin_path) if int(target_camid) == own
            else root / GT_CAMSTYLE_DIR / str(int(target_camid) + 1) / name)
    if not path.is_file():
        raise DataError(
            f"synthetic ground truth not found: {path} (image {origin_path!r}, target camera "
            f"{int(target_camid)}). Expected {GT_CAMSTYLE_DIR}/<target+1>/<name> under a folder "
            f"made by `reidaug demo-data`. Fix: pass that folder as dataset_root, and check the "
            f"camera is below its num_cams."
        )
    return path


def load_synthetic_gt(
    dataset_root: str | os.PathLike[str], origin_paths: Sequence[str], target_camids: Sequence[int]
) -> list[np.ndarray]:
    """RGB uint8 ground-truth images, one per (origin path, target camera) pair."""
    from reidaug.data.images import decode_image

    return [decode_image(synthetic_gt_path(dataset_root, p, int(t))).rgb
            for p, t in zip(origin_paths, target_camids)]


def synthetic_truth(
    root: str | os.PathLike[str], origin_rows: np.ndarray, targets: np.ndarray,
    origin_paths: list[str], meta: Any, data: dict[str, Any],
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Per fake of an HDF5 file: its ground truth (None without one) and the body mask of its
    origin's pose (None without keypoints), for :func:`reidaug.eval.generation.read_generated_h5`."""
    from reidaug.pose.representations import body_mask

    todo = [k for k, (row, t) in enumerate(zip(origin_rows, targets)) if row >= 0 and t >= 0]
    gts: list[np.ndarray | None] = [None] * len(origin_rows)
    for k, gt in zip(todo, load_synthetic_gt(root, [origin_paths[k] for k in todo], targets[todo])):
        gts[k] = gt
    masks: list[np.ndarray | None] = []
    for k, row in enumerate(origin_rows):
        kp = meta.keypoints[row] if gts[k] is not None and meta.keypoints is not None else None
        if kp is None or not np.isfinite(kp).any():  # an all-NaN row = no keypoints
            masks.append(None)
            continue
        stored_hw = data["real_images"][data["fake_origins"][k]].shape[:2]  # keypoints' frame
        masks.append(np.asarray(body_mask(kp, stored_hw), dtype=np.float32))
    return gts, masks

