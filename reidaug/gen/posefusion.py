"""PN-GAN's test-time pose fusion (Qian et al., "Pose-Normalized Image Generation for Person
Re-identification", ECCV 2018).

Every query and gallery image is also generated in the k canonical poses (a ``train-posegan``
generator, ``cluster-poses``' poses), and its re-ID feature becomes the element-wise max (PN-GAN's
pooling) or the mean of the 1 + k features: the original's and the k pose-normalised images'.

With one re-ID model (``pose_model=None``) that model extracts all 1 + k features, and max / mean pool
over them. PN-GAN itself has two: a model trained on the original images for the original, and one
trained on the synthesised canonical-pose images for the pose views, whose features it pools and joins
to the original's ("complementary" features; the released code, naiq/PN_GAN ``script/viper_feature.py``,
pools the 8 views' pose-model features by mean, max or concatenation). Given a ``pose_model``, the fused feature is that
concatenation, ``[f(x) / |f(x)| ; pool_j g(x_j) / |pool_j g(x_j)|]`` (each half unit-length, so neither
model's scale decides), with max or mean as the pool.
:func:`fused_features` returns the unfused, max and mean features side by side, so one run reports all
three.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from reidaug.errors import DataError

FUSIONS = ("none", "max", "mean")


@dataclasses.dataclass
class Fused:
    features: dict[str, np.ndarray]  # fusion -> (N, D)
    pose_images: np.ndarray | None  # (n_show, 1 + k, H, W, 3): a few originals beside their pose-normalised images
    no_pose: int = 0  # images whose own pose had too few keypoints: their fused feature is the unfused one


def canonical_in_frame(canonical: dict[str, Any], hw: tuple[int, int]) -> np.ndarray:
    """``cluster-poses``' canonical poses ``(k, 17, 3)`` moved into an ``hw`` frame (the generator's)."""
    from reidaug.pose.keypoints import rescale_keypoints

    kp = np.asarray(canonical["keypoints"], np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise DataError(f"canonical poses: expected keypoints of shape (k, 17, 3), found {kp.shape}. Fix: bind "
                        "canonical to a cluster-poses output.")
    return np.stack([rescale_keypoints(p, tuple(canonical["frame_hw"]), hw) for p in kp])


def fused_features(reid_model: Any, generator: Any, images: Sequence[np.ndarray], keypoints: np.ndarray,
                   canonical: np.ndarray, *, batch_size: int = 32, device: Any = "cpu", flip: bool = False,
                   keep_pictures: int = 0, min_keypoints: int = 8, pose_model: Any = None) -> Fused:
    """Features of ``images`` (RGB uint8, any sizes) unfused and fused over the canonical poses.

    ``keypoints``: ``(N, 17, 3)``, each in its own image's frame (extract-pose's, as the export stored
    them). An image whose pose has fewer than ``min_keypoints`` keypoints above the generator's training
    threshold (no person found) cannot be re-posed faithfully: with one model its fused features are its
    unfused one; with a ``pose_model`` its pose half is the pose model's feature of the original. Such
    images are counted in ``no_pose``.
    ``canonical``: ``(k, 17, 3)`` in the generator's frame (:func:`canonical_in_frame`);
    ``generator``: a :class:`reidaug.gen.poseguided.PoseGuidedGenerator`; ``reid_model`` (and
    ``pose_model``, for the pose views): loaded ReIDModels. ``keep_pictures``: how many of the first
    images to return beside their pose images.
    """
    import cv2

    from reidaug.pose.keypoints import confident_mask, rescale_keypoints
    from reidaug.train.features import image_features

    n = len(images)
    if n == 0:
        raise DataError("pose fusion: no images to fuse")
    h, w = generator.size
    k = len(canonical)
    feats: dict[str, list[np.ndarray]] = {f: [] for f in FUSIONS}
    pictures = []
    no_pose = 0
    viewer = reid_model if pose_model is None else pose_model

    def features(model: Any, ims: Sequence[np.ndarray]) -> np.ndarray:
        return image_features(model, ims, flip=flip, batch_size=batch_size, device=device)

    for start in range(0, n, batch_size):
        batch = [np.asarray(im) for im in images[start:start + batch_size]]
        cond = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in batch])
        cond_kp = np.stack([rescale_keypoints(kp, im.shape[:2], (h, w))  # each image's own frame
                            for kp, im in zip(keypoints[start:start + len(batch)], batch)])
        posable = confident_mask(cond_kp, generator.score_threshold).sum(axis=1) >= min_keypoints  # (B,)
        no_pose += int((~posable).sum())
        original = features(reid_model, batch)  # (B, D)
        posed, views = [], []
        for j in range(k):
            fakes = generator.generate(cond, cond_kp, np.repeat(canonical[j][None], len(batch), 0))  # (B, h, w, 3)
            posed.append(fakes)
            views.append(features(viewer, list(fakes)))
        feats["none"].append(original)
        if pose_model is None:  # one model: pool over the original and its k views
            stack = np.stack([original, *views])  # (1 + k, B, D)
            feats["max"].append(np.where(posable[:, None], stack.max(axis=0), original))
            feats["mean"].append(np.where(posable[:, None], stack.mean(axis=0), original))
        else:  # PN-GAN's two models: [original ; pooled pose views], each half unit-length
            stack = np.stack(views)  # (k, B, D')
            # the pose half of an image that cannot be re-posed: the pose model's feature of the original
            own = None if posable.all() else features(pose_model, [b for b, ok in zip(batch, posable) if not ok])
            for name, pooled in (("max", stack.max(axis=0)), ("mean", stack.mean(axis=0))):
                if own is not None:
                    pooled[~posable] = own
                feats[name].append(np.concatenate([_unit(original), _unit(pooled)], axis=1) / np.sqrt(2.0))
        for b in range(len(batch)):
            if len(pictures) < keep_pictures:
                pictures.append([cond[b], *[p[b] for p in posed]])
    return Fused({f: np.concatenate(v) for f, v in feats.items()},
                 np.asarray(pictures, np.uint8) if pictures else None, no_pose)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
