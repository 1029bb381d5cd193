"""OpenPose-18 keypoints and the pose-transfer annotation CSV, to and from COCO-17.

Deformable GAN (Siarohin et al., CVPR 2018; AliaksandrSiarohin/pose-gan), PATN (Zhu et al.,
CVPR 2019; tengteng95/Pose-Transfer), GFLA and DPTN all read their keypoints from
``market-annotation-{train,test}.csv`` / ``fasion-resize-annotation-*.csv``. The format, as
pose-gan's ``compute_coordinates.py`` writes it and every one of them reads it
(``pd.read_csv(path, sep=':')``, then ``json.loads`` on each list in
``load_pose_cords_from_strings``)::

    name:keypoints_y:keypoints_x
    0002_c1s1_000451_03.jpg: [23, 21, 21, 39, 56, 21, -1, ...]: [30, 30, 20, 17, 17, 40, -1, ...]

``:`` separates the columns, each list holds 18 integers in the OpenPose-18 (COCO-18) order
:data:`OPENPOSE18_NAMES`, **y before x**, and -1 marks a missing point. The OpenPose order is
Nose, Neck, RShoulder, RElbow, RWrist, LShoulder, LElbow, LWrist, RHip, RKnee, RAnkle, LHip,
LKnee, LAnkle, REye, LEye, REar, LEar (the same index map as Pose-Transfer's
``custom_data/create_annotation_train.py``, which converts torchvision COCO-17 output).
OpenPose's Neck has no COCO-17 counterpart: here it is the midpoint of the two shoulders, present
only when both are, with the lower of their two scores.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reidaug.errors import DataError
from reidaug.io.atomic import write_text
from reidaug.pose.skeleton import L_SHO, R_SHO, check_keypoints

log = logging.getLogger(__name__)

OPENPOSE18_NAMES: tuple[str, ...] = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)
NECK = 1
#: For each OpenPose-18 index, the COCO-17 index it comes from (-1: the neck, computed).
OPENPOSE18_FROM_COCO17: tuple[int, ...] = (
    0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
)
#: For each COCO-17 index, its OpenPose-18 index.
COCO17_FROM_OPENPOSE18: tuple[int, ...] = tuple(
    OPENPOSE18_FROM_COCO17.index(c) for c in range(17)
)
CSV_HEADER = "name:keypoints_y:keypoints_x"
MISSING = -1


def coco17_to_openpose18(kp: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """COCO-17 ``(17, 3)`` / ``(N, 17, 3)`` to OpenPose-18 ``(18, 3)`` / ``(N, 18, 3)`` float32.

    A point is present when its score is above ``threshold``; missing points come out as
    ``(-1, -1, 0)``. The neck is the shoulders' midpoint with the lower shoulder score.
    """
    single = np.ndim(kp) == 2
    arr = check_keypoints(kp, "coco17_to_openpose18 input")  # (N, 17, 3)
    out = np.full((arr.shape[0], 18, 3), MISSING, np.float32)
    out[..., 2] = 0.0
    body = [i for i, c in enumerate(OPENPOSE18_FROM_COCO17) if c >= 0]
    out[:, body] = arr[:, [OPENPOSE18_FROM_COCO17[i] for i in body]]
    sho_ok = (arr[:, L_SHO, 2] > threshold) & (arr[:, R_SHO, 2] > threshold)
    out[:, NECK, :2] = (arr[:, L_SHO, :2] + arr[:, R_SHO, :2]) / 2
    out[:, NECK, 2] = np.minimum(arr[:, L_SHO, 2], arr[:, R_SHO, 2])
    ok = out[..., 2] > threshold
    ok[:, NECK] = sho_ok
    ok &= np.isfinite(out[..., :2]).all(-1)
    out[~ok] = (MISSING, MISSING, 0.0)
    return out[0] if single else out


def openpose18_to_coco17(kp18: np.ndarray) -> np.ndarray:
    """OpenPose-18 ``(..., 18, 3)`` (x, y, score) or ``(..., 18, 2)`` (x, y) to COCO-17.

    The result is float32 ``(..., 17, 3)``; the neck is dropped. A point with a -1 coordinate (or
    score 0) is missing: ``(0, 0, 0)``; ``(x, y)`` input gets score 1.0 for present points.
    """
    arr = np.asarray(kp18, dtype=np.float32)
    if arr.ndim not in (2, 3) or arr.shape[-2] != 18 or arr.shape[-1] not in (2, 3):
        raise DataError(
            f"openpose18_to_coco17: expected OpenPose-18 keypoints of shape (18, 2|3) or "
            f"(N, 18, 2|3), found shape {arr.shape}. Fix: pass one row per point in the "
            f"order {', '.join(OPENPOSE18_NAMES)}."
        )
    xy = arr[..., list(COCO17_FROM_OPENPOSE18), :2]
    score = (arr[..., list(COCO17_FROM_OPENPOSE18), 2] if arr.shape[-1] == 3
             else np.ones(xy.shape[:-1], np.float32))
    missing = (xy == MISSING).any(-1) | ~np.isfinite(xy).all(-1) | (score <= 0)
    out = np.concatenate([xy, score[..., None]], axis=-1).astype(np.float32)
    out[missing] = 0.0
    return out


def _parse_list(text: str, path: Path, lineno: int, column: str) -> list[int]:
    where = f"{path}:{lineno}"
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise DataError(
            f"{where}: column {column} is not a list of integers like [12, 34, -1, ...]; "
            f"found {text.strip()[:80]!r}. Fix: rewrite the line in the pose-transfer format "
            f"(write_openpose_csv does)."
        ) from None
    if not isinstance(values, list) or len(values) != 18:
        found = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
        raise DataError(f"{where}: column {column} should hold 18 values (OpenPose-18), found "
                        f"{found}. Fix: one value per point, -1 for a missing one.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v != int(v):
            raise DataError(f"{where}: column {column} holds {v!r}; expected integer pixel "
                            f"coordinates (-1 = missing). Fix: round the coordinates.")
        out.append(int(v))
    return out


def read_openpose_csv(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a pose-transfer annotation CSV into ``{image name: COCO-17 (17, 3) float32}``.

    Present points get score 1.0, points at -1 are ``(0, 0, 0)``. Blank lines are skipped; a
    repeated name, a bad header or a malformed line raises DataError with the line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the OpenPose annotation CSV {path}: {exc.strerror or exc}."
                        f" Fix: check the path.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected "
                        f"the pose-transfer annotation CSV. Fix: pass the right file.") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].replace(" ", "") != CSV_HEADER:
        found = "an empty file" if first is None else repr(lines[first][:80])
        raise DataError(
            f"{path}:{(first or 0) + 1}: expected the header line {CSV_HEADER!r}, found "
            f"{found}. Fix: the file must be a pose-transfer annotation CSV "
            f"(write_openpose_csv writes one)."
        )
    out: dict[str, np.ndarray] = {}
    seen_at: dict[str, int] = {}
    for lineno, line in enumerate(lines[first + 1:], start=first + 2):
        if not line.strip():
            continue
        parts = line.rsplit(":", 2)  # a name never holds ':' in practice, but split from the end
        if len(parts) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 'name: [18 y values]: [18 x values]' (3 fields "
                f"separated by ':'), found {len(parts)} field(s): {line[:80]!r}. Fix: rewrite "
                f"the line in the pose-transfer format."
            )
        name = parts[0].strip()
        if not name:
            raise DataError(f"{path}:{lineno}: the image name is empty. Fix: start the line "
                            f"with the image file name.")
        if name in seen_at:
            raise DataError(f"{path}:{lineno}: image {name!r} is annotated twice (first on line "
                            f"{seen_at[name]}). Fix: keep one line per image.")
        ys = _parse_list(parts[1], path, lineno, "keypoints_y")
        xs = _parse_list(parts[2], path, lineno, "keypoints_x")
        kp18 = np.stack([np.asarray(xs, np.float32), np.asarray(ys, np.float32)], axis=1)
        out[name] = openpose18_to_coco17(kp18)
        seen_at[name] = lineno
    log.debug("read %d OpenPose-18 annotations from %s", len(out), path)
    return out


def write_openpose_csv(path: str | os.PathLike[str], mapping: Mapping[str, np.ndarray],
                       threshold: float = 0.0) -> None:
    """Write ``{image name: COCO-17 (17, 3)}`` as a pose-transfer annotation CSV, atomically.

    Points with score <= ``threshold`` are written as -1; coordinates are rounded to integers,
    and present points that round below 0 are clipped to 0 (so that they cannot read back as
    the -1 marker; counted in a warning). Lines follow the mapping's order. The file is written
    to a temporary name in the same folder and moved into place.
    """
    path = Path(path)
    lines = [CSV_HEADER]
    clipped = 0
    for name, kp in mapping.items():
        if not isinstance(name, str) or not name.strip() or any(c in name for c in ":\r\n"):
            raise DataError(
                f"write_openpose_csv {path}: image name {name!r} cannot be written: expected a "
                f"non-empty file name without ':' or line breaks. Fix: rename the image."
            )
        kp18 = coco17_to_openpose18(check_keypoints(kp, f"keypoints of {name!r}")[0], threshold)
        present = kp18[:, 2] > threshold
        xy = np.rint(kp18[:, :2]).astype(np.int64)
        clipped += int((present[:, None] & (xy < 0)).any(1).sum())
        xy = np.where(present[:, None], np.maximum(xy, 0), MISSING)
        ys = [int(v) for v in xy[:, 1]]
        xs = [int(v) for v in xy[:, 0]]
        lines.append(f"{name.strip()}: {ys}: {xs}")
    if clipped:
        log.warning("%s: %d keypoint(s) lay left of / above the image and were clipped to 0",
                    path, clipped)
    try:
        write_text(path, "\n".join(lines) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write the OpenPose annotation CSV {path}: "
                        f"{exc.strerror or exc}. Fix: check the folder exists and is "
                        f"writable.") from None
