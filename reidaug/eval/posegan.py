"""Scores of a pose-guided generator on held-out pairs (the evaluation of the score-posegan stage).

The protocol of PG2 (Ma et al., NeurIPS 2017), Deformable GAN (Siarohin et al., CVPR 2018) and
PATN on Market-1501: pairs (A, B) of two images of one *test* identity in different poses; the
generator gets A and B's pose, and its output is compared with the real B:

- SSIM and mask-SSIM (inside the body mask of B's pose, PG2's measure), beside the same for the
  condition image A itself ("copy the input": the score a generator must beat);
- with a judge (an ONNX re-ID model never trained on this data): identity rank-1 / mAP of each
  fake against every held-out real image (its condition image excluded) and FReID per camera
  of B, through :func:`reidaug.eval.generation.evaluate_generated`;
- on the synthetic data, each arm against the renderer's exact picture of the fake
  (:func:`synthetic_truth_scores`).

:func:`score_pose_transfer` computes all of it from arrays; :func:`pose_transfer_report` writes
the markdown table.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from reidaug.eval.generation import evaluate_generated, format_report
from reidaug.eval.ssim import mask_ssim, ssim
from reidaug.eval.synthetic_truth import load_synthetic_gt


def score_pose_transfer(
    images: np.ndarray,
    pids: np.ndarray,
    camids: np.ndarray,
    paths: Sequence[str],
    keypoints: np.ndarray,
    pairs: np.ndarray,
    fakes: np.ndarray,
    g1: np.ndarray | None = None,
    *,
    judge: str | os.PathLike[str] | None = None,
    fd_eps: float = 0.0,
    synthetic_root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Every score of the module docstring, as a JSON-ready dict.

    ``images`` (N, H, W, 3) uint8 at the generator's size with their ``pids``, ``camids`` (N,),
    ``paths`` and ``keypoints`` (N, 17, 3) in that frame; ``pairs`` (P, 2) rows (a, b) into
    them; ``fakes`` (P, H, W, 3) the generated image of each pair, ``g1`` PG2's stage-I output
    (None for other models). ``synthetic_root``: the synthetic dataset the images came from.
    """
    from reidaug.pose.representations import body_mask

    a, b = pairs[:, 0], pairs[:, 1]
    size_hw = images.shape[1:3]
    targets = images[b]
    masks = body_mask(keypoints[b], size_hw)  # (P, H, W)
    if judge is not None:
        result = evaluate_generated(
            fakes, pids[a], a, camids[a], camids[b], images, pids, camids,
            judge=judge, gt_images=list(targets), gt_masks=list(masks), fd_eps=fd_eps)
    else:
        result = {"identity": None, "freid": None, "ssim": {
            "fakes": {"mean": float(np.mean(ssim(fakes, targets)))},
            "baseline": {"mean": float(np.mean(ssim(images[a], targets)))},
            "mask_fakes": {"mean": float(np.mean(mask_ssim(fakes, targets, masks)))},
            "mask_baseline": {"mean": float(np.mean(mask_ssim(images[a], targets, masks)))}}}
    if g1 is not None:
        result["ssim_g1"] = float(np.mean(ssim(g1, targets)))
        result["mask_ssim_g1"] = float(np.mean(mask_ssim(g1, targets, masks)))
    if synthetic_root is not None:
        result["synthetic_truth"] = synthetic_truth_scores(
            synthetic_root, [paths[i] for i in b], camids[a], size_hw, masks,
            {"fakes": fakes, "g1": g1, "baseline": images[a], "real_target": targets})
    return result


def synthetic_truth_scores(root: str | os.PathLike[str], target_paths: Sequence[str], condition_camids: Any,
                           size_hw: tuple[int, int], masks: np.ndarray, arms: dict[str, Any]) -> dict[str, Any]:
    """SSIM / mask-SSIM of each arm against the renderer's exact picture of the pair's fake.

    The fake of pair (A, B) is A's person in B's pose, seen by A's camera. The synthetic dataset
    holds exactly that image: B's person and pose (same identity) drawn through camera A's
    imaging, i.e. B itself when both share a camera, else ``gt_camstyle/<cam A + 1>/<B's name>``
    (:func:`reidaug.eval.synthetic_truth.synthetic_gt_path`). What no generator can know is left:
    the background window and sensor noise drawn for B. ``real_target`` (B as photographed)
    against that truth measures that floor plus, across cameras, the style gap.
    """
    import cv2

    h, w = size_hw
    truth = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in
                      load_synthetic_gt(root, target_paths, condition_camids)])
    out: dict[str, Any] = {"pairs": len(target_paths), "truth": "A's person in B's pose through A's camera "
                           "(renderer ground truth; background window and noise are B's)"}
    for name, imgs in arms.items():
        if imgs is None:
            continue
        out[name] = {"ssim": float(np.mean(ssim(imgs, truth))),
                     "mask_ssim": float(np.mean(mask_ssim(imgs, truth, masks)))}
    return out


def pose_transfer_report(result: dict[str, Any], judged: bool) -> str:
    """The markdown table of a score-posegan result (``pairs`` and ``generator`` filled in)."""
    pairs, gen = result["pairs"], result["generator"]
    head = (f"Held-out pose transfer: {pairs['counts']['pairs']} pairs of {pairs['counts']['identities_with_pairs']} "
            f"test identities ({pairs['cross_camera']} across cameras); generator {gen['model']} "
            f"{gen['size'][0]}x{gen['size'][1]}; baseline = the condition image itself\n\n")
    if judged:
        body = format_report(result)
    else:
        s = result["ssim"]
        body = ("| metric | fakes | baseline | notes |\n|---|---|---|---|\n"
                f"| SSIM vs real target | {s['fakes']['mean']:.3f} | {s['baseline']['mean']:.3f} | |\n"
                f"| mask-SSIM vs real target | {s['mask_fakes']['mean']:.3f} | {s['mask_baseline']['mean']:.3f} | "
                "SSIM inside the target's body mask |\n"
                "identity and FReID skipped: no judge model given (params.judge)\n")
    if "ssim_g1" in result:
        body = body.rstrip("\n") + (f"\nPG2 stage I (G1) alone: SSIM {result['ssim_g1']:.3f}, "
                                    f"mask-SSIM {result['mask_ssim_g1']:.3f}\n")
    t = result.get("synthetic_truth")
    if t is not None:
        names = [("fakes", "generated"), ("g1", "G1 alone"), ("baseline", "copy the condition"),
                 ("real_target", "real target B")]
        body = body.rstrip("\n") + (
            f"\nAgainst the renderer's exact truth ({t['truth']}):\n"
            "| vs exact truth | SSIM | mask-SSIM |\n|---|---|---|\n"
            + "".join(f"| {label} | {t[k]['ssim']:.3f} | {t[k]['mask_ssim']:.3f} |\n" for k, label in names if k in t))
    return head + body
