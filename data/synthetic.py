"""A deterministic synthetic re-ID dataset: procedurally drawn pedestrians seen by styled cameras.

It computes, from a small seeded spec, a Market-1501-shaped dataset (Zheng et al., "Scalable
Person Re-identification: A Benchmark", ICCV 2015): ``bounding_box_train/``,
``bounding_box_test/`` and ``query/`` with names ``PPPP_cCsS_FFFFFF_BB.jpg``, plus the ground
truth that real data lacks and the later stages are scored against:

* ``keypoints.json``: the COCO-17 keypoints (Lin et al., "Microsoft COCO", ECCV 2014; the
  order used by torchvision / mmpose / MoveNet) of every written image, ``[x, y, visible]`` in
  pixels of that image;
* ``gt_camstyle/<cam>/<file name>``: the same person in the same pose under every *other*
  camera's style, the truth for camera-style transfer (CamStyle, Zhong et al., CVPR 2018);
* ``meta.json``: the spec, the counts and the generator version.

A person is a 3-D stick skeleton (walking phase, arm swing, elbow bend, lean, facing front / back
/ side) projected orthographically to 17 pixel keypoints (:func:`sample_pose`). The renderer
(:func:`render`) works from those 2-D keypoints alone, so it can draw any identity in any pose
(pose-guided generation is scored against it). Limbs are thick capsules, the torso a polygon,
the head a circle, with identity colours (shirt + pattern, trousers / shorts / skirt, skin, hair,
shoes, bag); everything is drawn at 3x and area-downsampled, which anti-aliases the edges. A
camera (:func:`camera_style`) then adds its background and its imaging: colour cast, contrast,
brightness, gamma, blur and noise, as in a real multi-camera network.

Everything is a pure function of the spec: the same spec gives byte-identical files.
"""
from __future__ import annotations

import colorsys
import functools
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reidaug.errors import ConfigError, DataError
from reidaug.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: Bumped by hand whenever the pixels or the layout change (part of ``meta.json``).
GENERATOR_VERSION = 1
GENERATOR_NAME = "reidaug.synthetic"

#: COCO-17 keypoint order.
KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16

#: How keypoints.json and meta.json describe the keypoint arrays.
_KEYPOINT_FORMAT = {"format": "coco17", "names": list(KEYPOINT_NAMES), "columns": ["x", "y", "visible"]}
SPLIT_DIRS = ("bounding_box_train", "bounding_box_test", "query")
_COUNT_KEY = {"bounding_box_train": "num_train", "query": "num_query",
              "bounding_box_test": "num_gallery"}
GT_CAMSTYLE_DIR = "gt_camstyle"
JPEG_QUALITY = 95
_SS = 3  # supersampling factor: draw at 3x, INTER_AREA down = anti-aliased edges
_FRAME_STEP = 5  # frame counter step between consecutive images of one identity

# Body proportions in units of the body height (feet to top of head), y up, x = the person's
# left, z = the direction the person faces. Used by the pose sampler and by the renderer to
# turn 2-D keypoint distances back into a scale.
_HEAD_R = 0.062
_SHOULDER_HALF = 0.12
_HIP_HALF = 0.085
_TORSO_LEN = 0.30  # shoulder line to hip line
_SHOULDER_Y, _HIP_Y = 0.80, 0.50
_UPPER_ARM, _FOREARM = 0.17, 0.155
_THIGH, _SHIN = 0.225, 0.235

_SEED_POSE, _SEED_IMAGE, _SEED_ID, _SEED_CAM = 101, 202, 303, 404


# ----------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Every field changes the pixels, so all of it goes into ``meta.json``."""

    num_ids: int = 24  # identities; the first half trains, the second half is the test set
    num_cams: int = 2  # cameras, each with its own style (background, colour, light); at most 6
    images_per_id_per_cam: int = 4  # shots of each identity in each camera
    height: int = 128  # image size in pixels
    width: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(
                    f"SyntheticSpec.{f.name}: expected an integer, found {value!r} "
                    f"({type(value).__name__}). Fix: pass a whole number."
                )
        _check_range("num_ids", self.num_ids, 2, 9999, "the first half trains, the second tests")
        _check_range("num_cams", self.num_cams, 2, 6, "re-ID needs 2+ cameras; styles exist for 6")
        _check_range(
            "images_per_id_per_cam", self.images_per_id_per_cam, 2, 1000,
            "a test identity needs one query and 1+ gallery images per camera",
        )
        _check_range("height", self.height, 32, 1024, "smaller cannot draw a face")
        _check_range("width", self.width, 16, 1024, "smaller cannot draw a body")
        _check_range("seed", self.seed, 0, 2**63 - 1, "numpy seeds are non-negative")
        last_frame = (self.num_ids * self.images_per_id_per_cam - 1) * _FRAME_STEP + 1
        if last_frame > 999_999:
            raise ConfigError(
                f"SyntheticSpec: num_ids x images_per_id_per_cam = "
                f"{self.num_ids * self.images_per_id_per_cam} images per camera needs frame "
                f"number {last_frame}, but Market names hold 6 digits (<= 999999). "
                f"Fix: lower num_ids or images_per_id_per_cam."
            )

    @property
    def num_train_ids(self) -> int:
        return self.num_ids // 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _check_range(name: str, value: int, lo: int, hi: int, why: str) -> None:
    if not lo <= value <= hi:
        raise ConfigError(
            f"SyntheticSpec.{name}: expected {lo}..{hi} ({why}), found {value}. "
            f"Fix: set {name} within {lo}..{hi}."
        )


# ----------------------------------------------------------------------- appearance & style

RGB = tuple[float, float, float]  # each in [0, 1]

SHIRT_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo")
LOWER_KINDS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder_bag")
HAIR_KINDS = ("short", "long", "bald")


@dataclass(frozen=True)
class Appearance:
    """What makes one identity recognisable; fixed for the identity across cameras and poses."""

    pid: int
    shirt: RGB
    shirt_second: RGB  # the pattern's second colour
    pattern: str  # one of SHIRT_PATTERNS
    pattern_period: float  # stripe / check period, in body heights
    long_sleeves: bool
    lower: str  # one of LOWER_KINDS
    trousers: RGB
    skin: RGB
    hair: RGB
    hair_kind: str  # one of HAIR_KINDS
    shoes: RGB
    bag: str  # one of BAGS
    bag_color: RGB
    build: float  # limb / torso width factor, ~0.85 (slim) .. 1.2 (broad)


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees: its background and its imaging pipeline."""

    cam: int  # 0-based
    gain: RGB  # per-channel colour cast, multiplies linear RGB in [0, 1]
    contrast: float  # around mid grey
    brightness: float  # added after contrast, in [0, 1] units
    gamma: float  # out = in ** gamma
    blur_sigma: float  # Gaussian blur, pixels of the output image
    noise_sigma: float  # Gaussian noise, 0..255 units
    bg_top: RGB  # wall colour at the top of the frame
    bg_mid: RGB  # wall colour at the horizon
    floor: RGB
    horizon: float  # fraction of the height where the floor starts
    texture: str  # "blobs", "bricks", "windows" or "tiles"
    texture_strength: float
    scene_seed: int  # seeds the fixed scene texture (the background plate)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def pose_rng(seed: int, pid: int, cam: int, index: int) -> np.random.Generator:
    """The generator behind the pose of image ``index`` of ``pid`` in ``cam`` (0-based)."""
    return _rng(seed, _SEED_POSE, pid, cam, index)


def image_rng(seed: int, pid: int, cam: int, index: int, target_cam: int) -> np.random.Generator:
    """The generator behind that image as seen by ``target_cam`` (== ``cam``: the image itself).

    ``render(identity_appearance(pid, seed), sample_pose(pose_rng(...), H, W),
    camera_style(target_cam, seed), H, W, image_rng(...))`` reproduces a written file exactly.
    """
    return _rng(seed, _SEED_IMAGE, pid, cam, index, target_cam)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (round(r, 4), round(g, 4), round(b, 4))


_SKIN_TONES = ((0.98, 0.84, 0.72), (0.92, 0.74, 0.6), (0.8, 0.6, 0.45), (0.62, 0.44, 0.31),
               (0.45, 0.31, 0.22), (0.33, 0.22, 0.16))
_HAIR_COLOURS = ((0.06, 0.05, 0.05), (0.2, 0.12, 0.07), (0.38, 0.24, 0.12), (0.8, 0.66, 0.38),
                 (0.62, 0.6, 0.58), (0.55, 0.22, 0.1))
_HAIR_WEIGHTS = (0.35, 0.25, 0.15, 0.1, 0.08, 0.07)
_TROUSER_BASES = ((0.16, 0.24, 0.42), (0.08, 0.08, 0.09), (0.36, 0.36, 0.38), (0.66, 0.58, 0.42),
                  (0.28, 0.22, 0.16))


def _clothing_colour(rng: np.random.Generator) -> RGB:
    if rng.random() < 0.2:  # achromatic: white, greys, black
        v = float(rng.choice([0.08, 0.3, 0.55, 0.92]) + rng.normal(0, 0.03))
        return _hsv(0.0, 0.0, v)
    return _hsv(rng.random(), rng.uniform(0.45, 0.95), rng.uniform(0.35, 0.95))


def identity_appearance(pid: int, seed: int) -> Appearance:
    """The appearance of identity ``pid`` (1-based, as in the file names) under ``seed``."""
    rng = _rng(seed, _SEED_ID, pid)
    shirt = _clothing_colour(rng)
    h, s, v = colorsys.rgb_to_hsv(*shirt)
    # The pattern's second colour contrasts in hue and in value, so the pattern is visible.
    if rng.random() < 0.5:
        second = _hsv(h + 0.5 + rng.normal(0, 0.08), rng.uniform(0.4, 0.9), 1.0 - 0.8 * v)
    else:
        second = _hsv(0.0, 0.0, 0.95 if v < 0.55 else 0.1)
    pattern = str(rng.choice(SHIRT_PATTERNS, p=[0.3, 0.2, 0.15, 0.15, 0.2]))
    lower = str(rng.choice(LOWER_KINDS, p=[0.7, 0.15, 0.15]))
    if rng.random() < 0.65:
        base = np.array(_TROUSER_BASES[rng.integers(len(_TROUSER_BASES))])
        jitter = np.clip(base + rng.normal(0, 0.04, 3), 0, 1)
        trousers: RGB = tuple(np.round(jitter, 4))  # type: ignore[assignment]
    else:
        trousers = _clothing_colour(rng)
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    lo = int(tone)
    skin_arr = np.array(_SKIN_TONES[lo]) * (1 - (tone - lo)) + np.array(
        _SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)]
    ) * (tone - lo)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)]
    shoes = _hsv(0.0, 0.0, float(rng.choice([0.08, 0.15, 0.9, 0.45])))
    return Appearance(
        pid=pid,
        shirt=shirt,
        shirt_second=second,
        pattern=pattern,
        pattern_period=float(round(rng.uniform(0.035, 0.06), 4)),
        long_sleeves=bool(rng.random() < 0.5),
        lower=lower,
        trousers=trousers,
        skin=tuple(np.round(skin_arr, 4)),  # type: ignore[arg-type]
        hair=hair,
        hair_kind=str(rng.choice(HAIR_KINDS, p=[0.6, 0.32, 0.08])),
        shoes=shoes,
        bag=str(rng.choice(BAGS, p=[0.55, 0.25, 0.2])),
        bag_color=_clothing_colour(rng),
        build=float(round(rng.uniform(0.85, 1.2), 3)),
    )


_GOLDEN_ANGLE = 0.381966  # of a full turn: consecutive cameras get casts ~137.5 degrees apart
_TEXTURES = ("blobs", "bricks", "windows", "tiles")


def camera_style(cam: int, seed: int) -> CameraStyle:
    """The style of camera ``cam`` (0-based) under ``seed``.

    Cameras differ by construction, not by luck: the cast hue of camera ``c`` is
    ``base + c * 137.5 deg`` (the golden angle keeps any two of 6 cameras >= 50 deg apart),
    brightness alternates in sign, and the four background textures cycle.
    """
    if not 0 <= cam < 6:
        raise ConfigError(f"camera_style: expected a 0-based camera in 0..5, found {cam}.")
    rng = _rng(seed, _SEED_CAM, cam)
    base = _rng(seed, _SEED_CAM).random()
    hue = 2 * math.pi * (base + cam * _GOLDEN_ANGLE)
    strength = rng.uniform(0.14, 0.24)
    gain = tuple(
        round(1.0 + strength * math.cos(hue - k * 2 * math.pi / 3), 4) for k in range(3)
    )
    sign = 1.0 if cam % 2 == 0 else -1.0
    wall_hue = base + cam * _GOLDEN_ANGLE + rng.normal(0, 0.05)
    wall_v = rng.uniform(0.5, 0.85)
    return CameraStyle(
        cam=cam,
        gain=gain,  # type: ignore[arg-type]
        contrast=round(float(rng.uniform(0.8, 1.2)), 4),
        brightness=round(float(sign * rng.uniform(0.03, 0.08)), 4),
        gamma=round(float(rng.uniform(0.8, 1.25)), 4),
        blur_sigma=round(float(rng.uniform(0.0, 0.9)), 4),
        noise_sigma=round(float(rng.uniform(1.5, 5.0)), 4),
        bg_top=_hsv(wall_hue, rng.uniform(0.1, 0.4), wall_v * rng.uniform(0.7, 1.0)),
        bg_mid=_hsv(wall_hue + rng.normal(0, 0.05), rng.uniform(0.1, 0.45), wall_v),
        floor=_hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.65)),
        horizon=round(float(rng.uniform(0.55, 0.75)), 4),
        texture=_TEXTURES[(cam + int(base * 4)) % len(_TEXTURES)],
        texture_strength=round(float(rng.uniform(0.04, 0.1)), 4),
        scene_seed=int(rng.integers(0, 2**31)),
    )


# ------------------------------------------------------------------------------------ pose


def sample_pose(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random walking / standing pose: (17, 2) float32 COCO-17 pixel coordinates (x, y).

    A 3-D stick figure (walking phase, stride, arm swing, elbow bend, forward and sideways lean)
    is turned to face front, back, a side or a diagonal and projected orthographically, with
    the feet near the bottom of the frame and the head near the top, like a detector's crop.
    """
    facing_centre = rng.choice([0.0, math.pi, math.pi / 2, -math.pi / 2], p=[0.3, 0.3, 0.2, 0.2])
    theta = facing_centre + rng.normal(0.0, 0.3)
    phase = rng.uniform(0, 2 * math.pi)
    stride = rng.uniform(0.05, 0.45)  # thigh swing amplitude, radians (0.05 = standing)
    swing = stride * rng.uniform(0.6, 1.2)
    lean_fwd = rng.uniform(-0.04, 0.14)
    lean_side = rng.normal(0.0, 0.04)

    pts = np.zeros((17, 3), np.float64)  # x = person's left, y = up, z = facing

    def leg(side: int, hip_idx: int, knee_idx: int, ankle_idx: int, sign: float) -> None:
        hip = np.array([side * _HIP_HALF, _HIP_Y, 0.0])
        a = sign * stride * math.sin(phase)
        # The knee bends while the leg swings forward (d a / d phase > 0).
        flex = 0.05 + 0.55 * max(0.0, sign * math.cos(phase)) * stride / 0.45
        knee = hip + _THIGH * np.array([0.0, -math.cos(a), math.sin(a)])
        ankle = knee + _SHIN * np.array([0.0, -math.cos(a - flex), math.sin(a - flex)])
        pts[hip_idx], pts[knee_idx], pts[ankle_idx] = hip, knee, ankle

    leg(1, L_HIP, L_KNE, L_ANK, 1.0)
    leg(-1, R_HIP, R_KNE, R_ANK, -1.0)

    def arm(side: int, sho_idx: int, elb_idx: int, wri_idx: int, sign: float) -> None:
        sho = np.array([side * _SHOULDER_HALF, _SHOULDER_Y, 0.0])
        b = -sign * swing * math.sin(phase)  # arms swing against the legs
        abduct = rng.uniform(0.03, 0.22)
        flex = rng.uniform(0.1, 0.5) if rng.random() < 0.8 else rng.uniform(0.9, 1.6)
        d1 = np.array([side * math.sin(abduct), -math.cos(b) * math.cos(abduct),
                       math.sin(b) * math.cos(abduct)])
        elb = sho + _UPPER_ARM * d1
        d2 = np.array([side * math.sin(abduct) * 0.5, -math.cos(b + flex), math.sin(b + flex)])
        wri = elb + _FOREARM * d2 / np.linalg.norm(d2)
        pts[sho_idx], pts[elb_idx], pts[wri_idx] = sho, elb, wri

    arm(1, L_SHO, L_ELB, L_WRI, 1.0)
    arm(-1, R_SHO, R_ELB, R_WRI, -1.0)

    head = np.array([0.0, 1.0 - _HEAD_R, 0.0])
    pts[NOSE] = head + [0.0, -0.012, _HEAD_R * 0.95]
    pts[L_EYE] = head + [0.024, -0.002, _HEAD_R * 0.8]
    pts[R_EYE] = head + [-0.024, -0.002, _HEAD_R * 0.8]
    pts[L_EAR] = head + [_HEAD_R * 0.92, 0.0, 0.0]
    pts[R_EAR] = head + [-_HEAD_R * 0.92, 0.0, 0.0]

    # Lean the upper body (head, arms) about the hip centre: forward (about x), sideways (about z).
    upper = [NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI]
    pivot = np.array([0.0, _HIP_Y, 0.0])
    cf, sf = math.cos(lean_fwd), math.sin(lean_fwd)
    cs, ss = math.cos(lean_side), math.sin(lean_side)
    rot_fwd = np.array([[1, 0, 0], [0, cf, -sf], [0, sf, cf]])  # y->z: the top moves to +z
    rot_side = np.array([[cs, -ss, 0], [ss, cs, 0], [0, 0, 1]])
    pts[upper] = (pts[upper] - pivot) @ (rot_side @ rot_fwd).T + pivot

    # Turn to face theta (0 = the camera) and project: image x = world x, image y = -world y.
    c, s = math.cos(theta), math.sin(theta)
    world_x = pts[:, 0] * c + pts[:, 2] * s
    scale = height * rng.uniform(0.8, 0.9)  # pixels per body height
    ground = height * rng.uniform(0.955, 0.985)
    lowest = pts[[L_ANK, R_ANK], 1].min() - 0.035  # the sole lies below the ankle
    cx = width / 2 + rng.normal(0.0, 0.035 * width)
    xy = np.stack([cx + scale * world_x, ground - scale * (pts[:, 1] - lowest)], axis=1)
    return xy.astype(np.float32)


# --------------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _View:
    """What the renderer reads off 2-D keypoints: scale and which way the person faces."""

    unit: float  # pixels per body height
    cos_facing: float  # 1 = facing the camera, -1 = back to it
    left_near: bool  # the person's left side is nearer the camera
    side_amount: float  # |sin(facing)|: 0 front/back, 1 profile
    facing_dir: float  # +1 facing image right, -1 image left (meaningful when side_amount > 0)


def _read_view(pose: np.ndarray) -> _View:
    sho_mid = (pose[L_SHO] + pose[R_SHO]) / 2
    hip_mid = (pose[L_HIP] + pose[R_HIP]) / 2
    torso = float(np.linalg.norm(sho_mid - hip_mid))
    if not np.isfinite(pose).all() or torso < 2.0:
        raise DataError(
            f"render: the pose has no usable torso (shoulder-to-hip distance {torso:.2f} px, "
            f"expected >= 2 px and finite coordinates; got shoulders "
            f"{pose[[L_SHO, R_SHO]].tolist()}, hips {pose[[L_HIP, R_HIP]].tolist()}). "
            f"Fix: pass a (17, 2) COCO-17 pose in pixels."
        )
    unit = torso / _TORSO_LEN
    cos_f = float(np.clip((pose[L_SHO, 0] - pose[R_SHO, 0]) / (2 * _SHOULDER_HALF * unit), -1, 1))
    side_amount = math.sqrt(max(0.0, 1.0 - cos_f**2))
    head_mid = (pose[L_EAR] + pose[R_EAR]) / 2
    nose_off = float(pose[NOSE, 0] - head_mid[0])
    if abs(nose_off) < 1e-3 * unit:  # fall back to the hips-to-shoulders order
        nose_off = float(pose[NOSE, 0] - sho_mid[0])
    facing_dir = 1.0 if nose_off >= 0 else -1.0
    # sin(theta) > 0 (facing image right) puts the person's left side away from the camera.
    return _View(unit, cos_f, facing_dir < 0, side_amount, facing_dir)


class _Canvas:
    """A supersampled RGB canvas plus the person's coverage mask."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height * _SS, width * _SS
        self.rgb = np.zeros((self.h, self.w, 3), np.uint8)
        self.mask = np.zeros((self.h, self.w), np.uint8)

    @staticmethod
    def _pts(p: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(p, np.float64) * _SS).astype(np.int32).reshape(-1, 2)

    @staticmethod
    def _col(c: RGB) -> tuple[int, int, int]:
        return tuple(int(round(255 * v)) for v in c)  # type: ignore[return-value]

    def limb(self, a: np.ndarray, b: np.ndarray, radius: float, colour: RGB) -> None:
        (pa, pb), t = self._pts(np.stack([a, b])), max(1, int(round(2 * radius * _SS)))
        for img, col in ((self.rgb, self._col(colour)), (self.mask, 255)):
            cv2.line(img, tuple(pa), tuple(pb), col, t, cv2.LINE_AA)

    def disc(self, c: np.ndarray, radius: float, colour: RGB) -> None:
        pc, r = tuple(self._pts(c)[0]), max(1, int(round(radius * _SS)))
        for img, col in ((self.rgb, self._col(colour)), (self.mask, 255)):
            cv2.circle(img, pc, r, col, -1, cv2.LINE_AA)

    def ellipse(self, c: np.ndarray, axes: tuple[float, float], angle: float, a0: float,
                a1: float, colour: RGB) -> None:
        pc = tuple(self._pts(c)[0])
        ax = (max(1, int(round(axes[0] * _SS))), max(1, int(round(axes[1] * _SS))))
        for img, col in ((self.rgb, self._col(colour)), (self.mask, 255)):
            cv2.ellipse(img, pc, ax, angle, a0, a1, col, -1, cv2.LINE_AA)

    def poly(self, pts: np.ndarray, colour: RGB, pattern: np.ndarray | None = None) -> None:
        p = self._pts(pts)
        if pattern is None:
            cv2.fillPoly(self.rgb, [p], self._col(colour), cv2.LINE_AA)
        else:
            m = np.zeros((self.h, self.w), np.uint8)
            cv2.fillPoly(m, [p], 255, cv2.LINE_AA)
            a = m[..., None].astype(np.float32) / 255.0
            self.rgb[:] = (self.rgb * (1 - a) + pattern * a + 0.5).astype(np.uint8)
        cv2.fillPoly(self.mask, [p], 255, cv2.LINE_AA)

    def finish(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Area-downsample: (H, W, 3) premultiplied colour, (H, W, 1) alpha; float32 in [0, 1]."""
        a = self.mask.astype(np.float32) / 255.0
        premul = self.rgb.astype(np.float32) / 255.0 * a[..., None]
        rgb = cv2.resize(premul, (width, height), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(a, (width, height), interpolation=cv2.INTER_AREA)[..., None]
        return rgb, alpha


def _shirt_pattern(
    app: Appearance, canvas: _Canvas, origin: np.ndarray, unit: float
) -> np.ndarray | None:
    """The shirt's fabric over the whole canvas, (h, w, 3) uint8, or None for a solid colour."""
    if app.pattern in ("plain", "logo"):
        return None
    period = max(2.0, app.pattern_period * unit * _SS)
    ys = (np.arange(canvas.h, dtype=np.float32) - origin[1] * _SS) / period
    xs = (np.arange(canvas.w, dtype=np.float32) - origin[0] * _SS) / period
    band_y = (np.floor(ys) % 2).astype(bool)[:, None]
    band_x = (np.floor(xs) % 2).astype(bool)[None, :]
    if app.pattern == "hstripes":
        sel = np.broadcast_to(band_y, (canvas.h, canvas.w))
    elif app.pattern == "vstripes":
        sel = np.broadcast_to(band_x, (canvas.h, canvas.w))
    else:  # checks
        sel = band_y ^ band_x
    a = np.array(_Canvas._col(app.shirt), np.uint8)
    b = np.array(_Canvas._col(app.shirt_second), np.uint8)
    return np.where(sel[..., None], b, a)  # (h, w, 3)


def _draw_person(
    app: Appearance, pose: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one person: (H, W, 3) premultiplied colour and (H, W, 1) alpha, floats in [0, 1]."""
    v = _read_view(pose)
    u, bld = v.unit, app.build
    cv = _Canvas(height, width)
    P = pose.astype(np.float64)
    # Limb radii in pixels: body-height units times the scale, times the build.
    r_upper, r_fore, r_thigh, r_shin = (f * u * bld for f in (0.03, 0.025, 0.044, 0.034))
    r_head = _HEAD_R * u

    sho_mid, hip_mid = (P[L_SHO] + P[R_SHO]) / 2, (P[L_HIP] + P[R_HIP]) / 2
    axis = (sho_mid - hip_mid) / np.linalg.norm(sho_mid - hip_mid)  # points up the torso
    perp = np.array([-axis[1], axis[0]])  # image-right when upright
    head_c = (P[L_EAR] + P[R_EAR]) / 2
    sleeve = app.shirt
    fore_col = app.shirt if app.long_sleeves else app.skin

    def draw_arm(s: int, e: int, w: int) -> None:
        cv.limb(P[e], P[w], r_fore, fore_col)
        cv.limb(P[s], P[e], r_upper, sleeve)
        if not app.long_sleeves:  # a short sleeve ends halfway down the upper arm
            cv.limb(P[s] + 0.55 * (P[e] - P[s]), P[e], r_upper * 0.85, app.skin)
        cv.disc(P[w] + 0.35 * (P[w] - P[e]) / max(1e-6, np.linalg.norm(P[w] - P[e])) * r_fore * 2,
                0.024 * u, app.skin)

    foot_dx = v.facing_dir * v.side_amount * 0.05 * u

    def draw_leg(h: int, k: int, a: int) -> None:
        shin_col = app.trousers if app.lower == "trousers" else app.skin
        cv.limb(P[k], P[a], r_shin, shin_col)
        cv.limb(P[h], P[k], r_thigh, app.trousers if app.lower != "skirt" else app.skin)
        if app.lower == "shorts":
            cv.limb(P[h], P[h] + 0.6 * (P[k] - P[h]), r_thigh * 1.1, app.trousers)
        sole = P[a] + np.array([0.0, 0.02 * u])
        cv.limb(sole - [foot_dx * 0.3, 0], sole + [foot_dx, 0], 0.026 * u, app.shoes)

    def draw_torso() -> None:
        half_top = max(np.linalg.norm(P[L_SHO] - P[R_SHO]) / 2 + 0.5 * r_upper, 0.085 * u * bld)
        half_bot = max(np.linalg.norm(P[L_HIP] - P[R_HIP]) / 2 + 0.6 * r_thigh, 0.075 * u * bld)
        half_top, half_bot = half_top * (0.9 + 0.1 * bld), half_bot * (0.9 + 0.1 * bld)
        top = sho_mid + axis * 0.025 * u
        bot = hip_mid - axis * 0.04 * u
        waist = hip_mid + axis * 0.1 * u
        half_waist = 0.5 * (half_top + half_bot) * 0.92
        if app.lower == "skirt":
            knee_mid = (P[L_KNE] + P[R_KNE]) / 2
            half_knee = max(np.linalg.norm(P[L_KNE] - P[R_KNE]) / 2 + r_shin * 1.6, 0.1 * u)
            hem = hip_mid + 0.75 * (knee_mid - hip_mid)
            cv.poly(np.stack([hip_mid - perp * half_bot, hip_mid + perp * half_bot,
                              hem + perp * half_knee, hem - perp * half_knee]), app.trousers)
        else:  # the pelvis, between the thighs
            crotch = hip_mid - axis * 0.07 * u
            cv.poly(np.stack([hip_mid - perp * half_bot, hip_mid + perp * half_bot,
                              crotch + perp * half_bot * 0.7, crotch - perp * half_bot * 0.7]),
                    app.trousers)
        shape = np.stack([
            top - perp * half_top * 0.8, top + perp * half_top * 0.8,
            sho_mid + perp * half_top - axis * 0.03 * u, waist + perp * half_waist,
            bot + perp * half_bot, bot - perp * half_bot,
            waist - perp * half_waist, sho_mid - perp * half_top - axis * 0.03 * u,
        ])
        cv.poly(shape, app.shirt, _shirt_pattern(app, cv, hip_mid, u))
        if app.pattern == "logo" and v.cos_facing > -0.2:
            chest = sho_mid - axis * 0.09 * u + perp * 0.02 * u * v.facing_dir * v.side_amount
            cv.ellipse(chest, (0.05 * u * max(0.4, abs(v.cos_facing)), 0.045 * u), 0, 0, 360,
                       app.shirt_second)

    def draw_bag(front_layer: bool) -> None:
        if app.bag == "backpack":
            back = sho_mid - axis * 0.12 * u
            if v.cos_facing < -0.3 and front_layer:  # seen from behind: covers the back
                half = max(0.07 * u, 0.5 * np.linalg.norm(P[L_SHO] - P[R_SHO]) * 0.75)
                hi, lo = back + axis * 0.09 * u, back - axis * 0.11 * u
                corners = [hi + perp * half, hi - perp * half, lo - perp * half, lo + perp * half]
                cv.poly(np.stack(corners), app.bag_color)
            elif v.side_amount > 0.5 and not front_layer:  # profile: sticks out behind
                behind = back - perp * v.facing_dir * 0.085 * u * v.side_amount
                cv.ellipse(behind, (0.06 * u, 0.1 * u), 0, 0, 360, app.bag_color)
            elif v.cos_facing > 0.3 and front_layer:  # from the front: two straps
                for s in (L_SHO, R_SHO):
                    strap = P[s] + (sho_mid - P[s]) * 0.35
                    cv.limb(strap, strap - axis * 0.16 * u, 0.012 * u, app.bag_color)
        elif app.bag == "shoulder_bag" and front_layer:
            s, h = (L_SHO, R_HIP) if app.pid % 2 else (R_SHO, L_HIP)
            cv.limb(P[s], P[h] + axis * 0.03 * u, 0.01 * u, (0.15, 0.12, 0.1))
            cv.ellipse(P[h] - axis * 0.02 * u, (0.055 * u, 0.045 * u), 0, 0, 360, app.bag_color)

    # Painter's order, back to front. In a profile the far limbs hide behind the torso; seen
    # from the front or back the arms hang beside it and go on top.
    far_arm, near_arm = ((R_SHO, R_ELB, R_WRI), (L_SHO, L_ELB, L_WRI))
    far_leg, near_leg = ((R_HIP, R_KNE, R_ANK), (L_HIP, L_KNE, L_ANK))
    if not v.left_near:
        far_arm, near_arm, far_leg, near_leg = near_arm, far_arm, near_leg, far_leg
    profile = v.side_amount > 0.5
    tilt_deg = math.degrees(math.atan2(axis[0], -axis[1]))  # 0 when the torso is upright

    def draw_long_hair() -> None:  # hair hanging from the head down to the shoulders
        cv.ellipse(head_c - axis * 0.05 * u - perp * 0.015 * u * v.facing_dir * v.side_amount,
                   (r_head * 1.05, r_head * 1.7), tilt_deg, 0, 360, app.hair)

    from_behind = v.cos_facing < -0.3
    if app.hair_kind == "long" and not from_behind:
        draw_long_hair()
    draw_bag(front_layer=False)
    if profile:
        draw_arm(*far_arm)
    draw_leg(*far_leg)
    draw_leg(*near_leg)
    draw_torso()
    draw_bag(front_layer=True)
    cv.limb(sho_mid, head_c - axis * 0.3 * r_head, 0.028 * u, app.skin)  # neck
    cv.disc(head_c, r_head, app.skin)
    if app.hair_kind != "bald":
        if from_behind:  # the head is all hair, long hair covers the neck
            cv.disc(head_c, r_head * 1.04, app.hair)
            if app.hair_kind == "long":
                draw_long_hair()
        else:
            # A cap over the top, shifted to the back of the head in a profile.
            back_shift = -perp * v.facing_dir * v.side_amount * 0.35 * r_head
            cv.ellipse(head_c + back_shift + axis * 0.3 * r_head, (r_head * 1.04, r_head * 0.75),
                       tilt_deg, 180, 360, app.hair)
    if v.cos_facing > -0.3:
        for e in (L_EYE, R_EYE):
            if _face_point_visible(e, v):
                cv.disc(P[e], max(0.35, 0.011 * u), (0.08, 0.06, 0.06))
    if not profile:
        draw_arm(*far_arm)
    draw_arm(*near_arm)
    return cv.finish(height, width)


def _face_point_visible(idx: int, v: _View) -> bool:
    is_left = idx in (L_EYE, L_EAR)
    near = is_left == v.left_near
    if idx == NOSE:
        return v.cos_facing > -0.2
    if idx in (L_EYE, R_EYE):
        return v.cos_facing > 0.3 or (near and v.cos_facing > -0.3)
    return not (v.side_amount > 0.7 and not near)  # ears: the far one hides in a profile


def keypoint_visibility(pose: np.ndarray, height: int, width: int) -> np.ndarray:
    """(17,) float32: 1 where the drawn person shows the keypoint, 0 where hidden or outside."""
    pose = np.asarray(pose, np.float64)[:, :2]
    v = _read_view(pose)
    vis = np.ones(17, np.float32)
    for idx in (NOSE, L_EYE, R_EYE, L_EAR, R_EAR):
        vis[idx] = float(_face_point_visible(idx, v))
    if v.side_amount > 0.85:  # the far shoulder and hip hide behind the torso in a profile
        far = (R_SHO, R_HIP) if v.left_near else (L_SHO, L_HIP)
        vis[list(far)] = 0.0
    inside = (pose[:, 0] >= 0) & (pose[:, 0] < width) & (pose[:, 1] >= 0) & (pose[:, 1] < height)
    return vis * inside.astype(np.float32)


# --------------------------------------------------------------------------------- cameras


@functools.lru_cache(maxsize=32)
def _background_plate(style: CameraStyle, height: int, width: int) -> np.ndarray:
    """The camera's fixed scene, (H, 2W, 3) float32; each image shows a random W-wide window."""
    rng = _rng(style.scene_seed, height, width)
    h, w = height, 2 * width
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    hz = style.horizon
    top, mid, floor = (np.array(c, np.float32) for c in (style.bg_top, style.bg_mid, style.floor))
    wall = top + (mid - top) * np.clip(y / hz, 0, 1)
    plate = np.where(y < hz, wall, floor * (0.85 + 0.3 * np.clip((y - hz) / (1 - hz), 0, 1)))
    plate = np.broadcast_to(plate, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    k, hpx = style.texture_strength, int(hz * h)
    if style.texture == "bricks":
        row = np.floor(yy / max(3, h * 0.05))
        joint = ((xx + (row % 2) * w * 0.06) % max(4, w * 0.12)) < 1
        edge = ((yy % max(3, h * 0.05)) < 1) | joint
        plate[:hpx] -= 2.5 * k * edge[:hpx, :, None]
    elif style.texture == "windows":
        for x0 in range(int(rng.integers(0, w // 6)), w, max(8, w // 5)):
            x1, y0 = x0 + max(3, w // 10), int(h * rng.uniform(0.08, 0.2))
            plate[y0 : int(hz * h * 0.8), x0:x1] = np.array(style.bg_top) * 0.6 + 0.15
    elif style.texture == "tiles":
        edge = ((yy % max(3, h * 0.06)) < 1) | ((xx % max(3, h * 0.06)) < 1)
        plate[hpx:] -= 3 * k * edge[hpx:, :, None]
    # Low-frequency clutter: mostly brightness, a little colour.
    small = rng.normal(0, 1, (max(2, h // 10), max(2, w // 10), 3)).astype(np.float32)
    small = small[..., :1] + 0.3 * small
    plate += 0.6 * k * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    plate = np.clip(plate, 0, 1).astype(np.float32)
    plate.setflags(write=False)  # cached and shared between images
    return plate


def _apply_camera(person: np.ndarray, alpha: np.ndarray, style: CameraStyle,
                  rng: np.random.Generator) -> np.ndarray:
    """Composite the person over the camera's scene, then the camera's imaging: (H, W, 3) uint8."""
    h, w = alpha.shape[:2]
    plate = _background_plate(style, h, w)
    x0 = int(rng.integers(0, w + 1))
    img = plate[:, x0 : x0 + w] * (1 - alpha) + person  # person is premultiplied
    img = img * (np.array(style.gain, np.float32) * np.float32(rng.normal(1.0, 0.03)))
    img = (img - 0.5) * style.contrast + 0.5 + style.brightness
    img = np.clip(img, 0, 1) ** np.float32(style.gamma)
    if style.blur_sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), style.blur_sigma)
    img = img * 255.0 + rng.normal(0.0, style.noise_sigma, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(appearance: Appearance, pose: np.ndarray, style: CameraStyle, height: int, width: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``appearance`` in ``pose`` as seen by camera ``style``.

    ``pose`` is (17, 2) COCO-17 pixel coordinates of the output image (extra columns, e.g. a
    detector's scores, are ignored). ``rng`` draws the per-image variation: the background
    window, an exposure jitter and the sensor noise. Returns the (H, W, 3) uint8 RGB image and
    the (17, 3) float32 keypoints ``[x, y, visible]``.
    """
    pose = np.asarray(pose, np.float32)
    if pose.ndim != 2 or pose.shape[0] != 17 or pose.shape[1] < 2:
        raise DataError(
            f"render: expected a (17, 2) COCO-17 pose in pixels, found shape {pose.shape}. "
            f"Fix: pass keypoints in the order {', '.join(KEYPOINT_NAMES[:3])}, ..."
        )
    pose = pose[:, :2]
    person, alpha = _draw_person(appearance, pose, height, width)
    image = _apply_camera(person, alpha, style, rng)
    kps = np.concatenate([pose, keypoint_visibility(pose, height, width)[:, None]], axis=1)
    return image, kps.astype(np.float32)


# ---------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`write_dataset` produced (or found already there)."""

    out_dir: Path
    num_train_ids: int
    num_test_ids: int
    num_train: int
    num_query: int
    num_gallery: int
    num_gt_camstyle: int
    skipped: bool  # True: an identical dataset was already there and nothing was written


def market_name(pid: int, cam: int, index: int, images_per_id_per_cam: int) -> str:
    """``PPPP_cCs1_FFFFFF_00.jpg`` for 1-based ``pid``, 0-based ``cam`` and image ``index``."""
    frame = ((pid - 1) * images_per_id_per_cam + index) * _FRAME_STEP + 1
    return f"{pid:04d}_c{cam + 1}s1_{frame:06d}_00.jpg"


def _meta(spec: SyntheticSpec, summary: dict[str, int]) -> dict[str, Any]:
    return {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "spec": spec.to_dict(),
        "counts": summary,
        "layout": "market1501",
        "jpeg_quality": JPEG_QUALITY,
        "keypoints": _KEYPOINT_FORMAT,
        "cameras": [asdict(camera_style(c, spec.seed)) for c in range(spec.num_cams)],
    }


def _existing_meta(out_dir: Path) -> dict[str, Any] | None:
    """The meta.json of a finished synthetic dataset at ``out_dir``; None if it is not one."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR_NAME else None


def _encode_jpeg(rgb: np.ndarray, where: str) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(
            f"write_dataset: OpenCV could not JPEG-encode {where} (shape {rgb.shape}, "
            f"expected (H, W, 3) uint8). Fix: check the OpenCV install."
        )
    return buf.tobytes()


def write_dataset(out_dir: str | os.PathLike[str], spec: SyntheticSpec) -> SyntheticSummary:
    """Write the dataset of ``spec`` to ``out_dir``, atomically.

    The whole folder is built under a temp name beside ``out_dir`` and moved into place
    (:func:`reidaug.io.atomic.atomic_path`), so a folder under the final name is always complete.
    If ``out_dir`` already holds the dataset of the same spec and generator version, nothing is
    written. If it holds another synthetic dataset, the new one replaces it only once complete.
    Anything else there is never touched: that is a ``ConfigError``.
    """
    out_dir = Path(out_dir)
    old_meta = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(
                f"write_dataset: {out_dir} is a file, expected a folder. Fix: pick another path."
            )
        old_meta = _existing_meta(out_dir)
        if old_meta is None and any(out_dir.iterdir()):
            raise ConfigError(
                f"write_dataset: {out_dir} is not empty and holds no synthetic dataset "
                f"(no meta.json with generator {GENERATOR_NAME!r}); refusing to replace it. "
                f"Fix: pass an empty or new folder."
            )
        if (old_meta is not None and old_meta.get("spec") == spec.to_dict()
                and old_meta.get("generator_version") == GENERATOR_VERSION):
            counts = old_meta.get("counts", {})
            log.info("synthetic dataset at %s didn't change, skipping", out_dir)
            return SyntheticSummary(out_dir=out_dir, skipped=True, **counts)

    try:
        # an old dataset is swapped out only once the new one is whole; an empty folder is replaced
        with atomic_path(out_dir, replace_dir=old_meta is not None) as tmp:
            counts = _write_tree(tmp, spec)
    except OSError as exc:
        racer = _existing_meta(out_dir)  # another process may have finished the same spec first
        if racer is not None and racer.get("spec") == spec.to_dict():
            log.info("synthetic dataset at %s was written by another process, skipping", out_dir)
            return SyntheticSummary(out_dir=out_dir, skipped=True, **racer["counts"])
        raise DataError(
            f"write_dataset: could not move the finished dataset into {out_dir}: {exc}. "
            f"Fix: check the folder's permissions and free space, then run again."
        ) from exc
    summary = SyntheticSummary(out_dir=out_dir, skipped=False, **counts)
    rows = [("train", counts["num_train_ids"], counts["num_train"]),
            ("query", counts["num_test_ids"], counts["num_query"]),
            ("gallery", counts["num_test_ids"], counts["num_gallery"])]
    table = "".join(f"\n  {n:<8} | {i:5d} | {k:8d} | {spec.num_cams:9d}" for n, i, k in rows)
    log.info("synthetic dataset at %s\n  subset   | # ids | # images | # cameras%s\n"
             "  gt_camstyle: %d images", out_dir, table, counts["num_gt_camstyle"])
    return summary


def _write_tree(root: Path, spec: SyntheticSpec) -> dict[str, int]:
    for d in SPLIT_DIRS:
        (root / d).mkdir(parents=True)
    for t in range(spec.num_cams):
        (root / GT_CAMSTYLE_DIR / str(t + 1)).mkdir(parents=True)
    styles = [camera_style(c, spec.seed) for c in range(spec.num_cams)]
    keypoints: dict[str, list[list[float]]] = {}
    counts = {"num_train": 0, "num_query": 0, "num_gallery": 0, "num_gt_camstyle": 0}
    h, w = spec.height, spec.width
    for pid in range(1, spec.num_ids + 1):
        app = identity_appearance(pid, spec.seed)
        train = pid <= spec.num_train_ids
        for cam in range(spec.num_cams):
            for k in range(spec.images_per_id_per_cam):
                # Market's split: test identities give one query image per camera.
                split = ("bounding_box_train" if train
                         else "query" if k == 0 else "bounding_box_test")
                name = market_name(pid, cam, k, spec.images_per_id_per_cam)
                pose = sample_pose(pose_rng(spec.seed, pid, cam, k), h, w)
                person, alpha = _draw_person(app, pose, h, w)  # drawn once, seen by every camera
                kps = np.concatenate([pose, keypoint_visibility(pose, h, w)[:, None]], axis=1)
                kp_list = np.round(kps.astype(np.float64), 2).tolist()
                for t, style in enumerate(styles):
                    # Same pixels as render(..., image_rng(seed, pid, cam, k, t)).
                    img = _apply_camera(person, alpha, style, image_rng(spec.seed, pid, cam, k, t))
                    rel = f"{split}/{name}" if t == cam else f"{GT_CAMSTYLE_DIR}/{t + 1}/{name}"
                    (root / rel).write_bytes(_encode_jpeg(img, rel))
                    keypoints[rel] = kp_list
                    counts[_COUNT_KEY[split] if t == cam else "num_gt_camstyle"] += 1
    counts["num_train_ids"] = spec.num_train_ids
    counts["num_test_ids"] = spec.num_ids - spec.num_train_ids
    kp_doc = {**_KEYPOINT_FORMAT, "images": keypoints,
              "note": "pixels of each image; gt_camstyle/<cam>/<name> shares the pose of <name>"}
    kp_text = json.dumps(kp_doc, sort_keys=True, separators=(",", ":"))
    (root / "keypoints.json").write_text(kp_text + "\n", encoding="utf-8")
    meta_text = json.dumps(_meta(spec, counts), indent=2, sort_keys=True)
    (root / "meta.json").write_text(meta_text + "\n", encoding="utf-8")
    return counts
