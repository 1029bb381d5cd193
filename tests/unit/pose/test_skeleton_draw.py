"""The COCO-17 skeleton definition and the overlay drawer."""
from __future__ import annotations

import numpy as np
import pytest

from reidaug.errors import DataError
from reidaug.pose.skeleton import (
    COCO17_LIMB_COLOURS,
    COCO17_LIMBS,
    COCO17_NAMES,
    L_ANK,
    L_KNE,
    draw_skeleton,
)


def test_limbs_are_the_19_mmpose_coco_links() -> None:
    assert len(COCO17_LIMBS) == 19 and len(set(COCO17_LIMBS)) == 19
    assert len(COCO17_LIMB_COLOURS) == 19
    used = {i for limb in COCO17_LIMBS for i in limb}
    assert used == set(range(17))
    names = {(COCO17_NAMES[a], COCO17_NAMES[b]) for a, b in COCO17_LIMBS}
    assert ("left_ankle", "left_knee") in names and ("left_shoulder", "right_shoulder") in names


def test_draw_skeleton_draws_present_limbs_only_on_a_copy() -> None:
    img = np.zeros((256, 128, 3), np.uint8)
    kp = np.zeros((17, 3), np.float32)
    kp[L_KNE] = (40, 150, 1)
    kp[L_ANK] = (40, 220, 1)
    out = draw_skeleton(img, kp)
    assert not img.any(), "the input image is untouched"
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert tuple(out[185, 40]) == COCO17_LIMB_COLOURS[COCO17_LIMBS.index((L_ANK, L_KNE))]
    assert not out[:, 80:].any()
    kp[L_ANK, 2] = 0
    out = draw_skeleton(img, kp)
    assert not out[185, 40].any() and out[150, 40].any()  # the knee dot stays


def test_draw_skeleton_rejects_bgr_float_images() -> None:
    with pytest.raises(DataError, match="RGB uint8"):
        draw_skeleton(np.zeros((10, 10, 3), np.float32), np.zeros((17, 3)))
