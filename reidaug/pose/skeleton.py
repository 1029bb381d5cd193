"""COCO-17 skeleton definition (names, limbs, colours) and a skeleton overlay drawer.

Keypoints are COCO-17 (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014), in
the order torchvision / mmpose / MoveNet use, stored as float32 ``(17, 3)`` = ``(x, y, score)``
in pixels of their image; score 0 means missing. ``COCO17_LIMBS`` is the 19-link skeleton of
mmpose's COCO dataset meta (``configs/_base_/datasets/coco.py``, ``skeleton_info``), which is
also what the OpenPose / mmpose visualisers draw; ``COCO17_LIMB_COLOURS`` follows mmpose's
convention: the person's left side green, right side orange, the centre line blue (RGB).
"""
from __future__ import annotations

import numpy as np

from reidaug.errors import DataError

#: COCO-17 keypoint order.
COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = 17
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16
FACE: tuple[int, ...] = (NOSE, L_EYE, R_EYE, L_EAR, R_EAR)
TORSO: tuple[int, ...] = (L_SHO, R_SHO, R_HIP, L_HIP)  # polygon order (goes round the torso)

#: The 19 limbs of mmpose's COCO skeleton, as (from, to) keypoint indices.
COCO17_LIMBS: tuple[tuple[int, int], ...] = (
    (L_ANK, L_KNE), (L_KNE, L_HIP), (R_ANK, R_KNE), (R_KNE, R_HIP), (L_HIP, R_HIP),
    (L_SHO, L_HIP), (R_SHO, R_HIP), (L_SHO, R_SHO), (L_SHO, L_ELB), (R_SHO, R_ELB),
    (L_ELB, L_WRI), (R_ELB, R_WRI), (L_EYE, R_EYE), (NOSE, L_EYE), (NOSE, R_EYE),
    (L_EYE, L_EAR), (R_EYE, R_EAR), (L_EAR, L_SHO), (R_EAR, R_SHO),
)

_LEFT, _RIGHT, _CENTRE = (0, 255, 0), (255, 128, 0), (51, 153, 255)  # RGB


def _side(i: int) -> tuple[int, int, int]:
    name = COCO17_NAMES[i]
    return _LEFT if name.startswith("left") else _RIGHT if name.startswith("right") else _CENTRE


#: One RGB colour per keypoint and per limb (a limb is coloured by its side; mixed = centre).
COCO17_KEYPOINT_COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    _side(i) for i in range(NUM_KEYPOINTS)
)
COCO17_LIMB_COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    _side(a) if _side(a) == _side(b) else _CENTRE for a, b in COCO17_LIMBS
)


def check_keypoints(kp: np.ndarray, what: str = "keypoints") -> np.ndarray:
    """Return ``kp`` as float32 ``(N, 17, 3)`` (a single ``(17, 3)`` pose gets N = 1).

    Raises DataError naming ``what`` when the shape is not ``(17, 3)`` or ``(N, 17, 3)``.
    """
    arr = np.asarray(kp, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 3):
        raise DataError(
            f"{what}: expected COCO-17 keypoints of shape (17, 3) or (N, 17, 3) as "
            f"(x, y, score), found shape {tuple(np.shape(kp))}. Fix: pass one row per "
            f"keypoint in the order {', '.join(COCO17_NAMES)}."
        )
    return arr


def draw_skeleton(
    image: np.ndarray,
    kp: np.ndarray,
    threshold: float = 0.0,
    thickness: int | None = None,
    radius: int | None = None,
) -> np.ndarray:
    """Draw one or more COCO-17 skeletons on a copy of an RGB uint8 image and return it.

    ``kp`` is ``(17, 3)`` or ``(N, 17, 3)`` in pixels of ``image``; a keypoint counts when its
    score is above ``threshold`` (and its coordinates are finite), a limb when both ends count.
    Lines are anti-aliased; ``thickness`` / ``radius`` default to about H / 100 and H / 70.
    """
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise DataError(
            f"draw_skeleton: expected an RGB uint8 image of shape (H, W, 3), found "
            f"{getattr(image, 'dtype', type(image))} of shape {np.shape(image)}. "
            f"Fix: convert the image with reidaug.data.images first."
        )
    import cv2  # here, not at the top: planning a pipeline imports this module without cv2

    poses = check_keypoints(kp, "draw_skeleton keypoints")
    out = np.ascontiguousarray(image.copy())
    h = out.shape[0]
    thickness = max(1, round(h / 100)) if thickness is None else int(thickness)
    radius = max(1, round(h / 70)) if radius is None else int(radius)
    shift = 4  # sub-pixel precision for cv2 drawing: coordinates in 1/16 pixel
    for pose in poses:
        ok = (pose[:, 2] > threshold) & np.isfinite(pose[:, :2]).all(axis=1)
        pts = np.rint(np.nan_to_num(pose[:, :2]) * (1 << shift)).astype(np.int64)
        pts = np.clip(pts, -(1 << 28), 1 << 28)  # cv2 wants int32-range coordinates
        for (a, b), colour in zip(COCO17_LIMBS, COCO17_LIMB_COLOURS):
            if ok[a] and ok[b]:
                cv2.line(out, tuple(map(int, pts[a])), tuple(map(int, pts[b])), colour,
                         thickness, cv2.LINE_AA, shift)
        for i in np.flatnonzero(ok):
            cv2.circle(out, tuple(map(int, pts[i])), radius << shift,
                       COCO17_KEYPOINT_COLOURS[i], -1, cv2.LINE_AA, shift)
    return out
