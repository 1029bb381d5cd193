"""Pose backends side by side in one run: quality on CUHK01 and CPU speed (issue: pose).

Backends (reidaug.models.pose_estimators, all COCO-17, ``(B, 17, 3)`` = x, y, score):
- ``movenet``: MoveNet SinglePose Lightning int8 (TFLite via LiteRT), letterboxed to 192x192;
- ``mediapipe``: BlazePose GHUM full (mediapipe 0.10.21) on the crop at its native size;
- ``mediapipe@256``: the same, crops upscaled (bicubic) to height 256 first;
- ``mmpose rtmpose-t`` / ``mmpose hrnet-w32``: mmpose 1.x top-down, whole crop as the box.

(1) Quality on real data: every crop of CUHK01 (3,884 PNG pedestrian crops, 160x60; decoded with
    ``reidaug.data.images.decode_image``), per backend: mean keypoint score (over all crops, and
    over crops with a person), the fraction of crops with >= 12 of 17 keypoints scoring > 0.3,
    the detection rate (any keypoint score > 0), and the agreement of movenet and mediapipe as
    PCK@0.1 (Andriluka et al., "2D Human Pose Estimation: New Benchmark and State of the Art
    Analysis", CVPR 2014, with the torso as the reference length): over crops where both found a
    person, the fraction of keypoints confident (> 0.3) in both whose distance is within 0.1 x
    the torso size, torso size = |mid-shoulder - mid-hip| of the movenet skeleton. There is no
    ground truth on CUHK01, so this is agreement, not accuracy. mmpose is left out: no trained
    checkpoint is available offline here, only ``random_init=True`` weights, whose keypoints
    mean nothing.
(2) Speed on the CPU: images/s per backend at batch 1 and batch 32 on a fixed random set of
    crops (seed 0), one warm-up call first, best and median of ``--repeat`` passes; the passes of
    one backend are interleaved (b1, b32[, per-image], b1, b32, ...) so a busy neighbour slows
    them alike. mmpose runs with random weights (speed does not depend on the weights) on a
    smaller set (``--mmpose-images``; hrnet-w32 is ~100x slower than movenet), and its batched
    ``predict`` (one ``test_step`` per mini-batch of 8 crops on the CPU, channels-last input,
    BatchNorm folded into a copy of the model) is set against mmpose's own ``inference_topdown``
    once per crop (``mmpose_predict_per_image``) on the same crops: the ratio is the speed-up of batching
    (the project's goal is >= 2x on the CPU). A fourth mmpose mode, ``b32_one_test_step``, is
    the batched path as it was before the speed work (one ``test_step`` for all 32 crops, NCHW
    input, BatchNorm not folded: ``forward_batch=None, channels_last=False, fuse_bn=False``) on
    the same model, to show what the speed work brings. Each ratio is also given per round (a
    round's modes ran back to back, so a busy neighbour slows them alike), median over rounds.
(3) With CUDA, the mmpose speed table again on ``device=cuda`` (movenet and mediapipe are
    CPU-only); without CUDA it is skipped with a note in the JSON.

Prints tables and writes JSON (default bench/results/pose.json).

    .venv/bin/python bench/pose.py [--limit N] [--speed-images 256] [--mmpose-images 128]
        [--speed-backends "mmpose rtmpose-t"] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib.metadata
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from common import RESULTS, SHARED, command_line, load_average, machine, now_utc, write_result
from reidaug.data.images import ImageCheckError, decode_image
from reidaug.models.pose_estimators import build_estimator, mmpose_predict_per_image
from reidaug.pose.skeleton import COCO17_NAMES, L_HIP, L_SHO, R_HIP, R_SHO

CONF = 0.3  # a keypoint "is there" above this score
MIN_KEYPOINTS = 12  # a "full" skeleton: at least this many of 17 above CONF
PCK_THR = 0.1  # of the torso size
QUALITY_BATCH = 32

Predict = Callable[[Sequence[np.ndarray]], np.ndarray]


def load_crops(data: Path, limit: int | None) -> tuple[list[str], list[np.ndarray], list[dict[str, str]]]:
    """All crops of the manifest (first ``limit``), decoded; unreadable ones are reported, not dropped silently."""
    with open(data / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit is not None:
        rows = rows[:limit]
    names, images, bad = [], [], []
    for r in rows:
        try:
            images.append(decode_image(data / r["path"]).rgb)
            names.append(r["path"])
        except ImageCheckError as err:
            bad.append({"path": r["path"], "reason": err.reason, "detail": err.detail})
    return names, images, bad


def predict_all(predict: Predict, images: list[np.ndarray], batch: int) -> tuple[np.ndarray, float]:
    """``(N, 17, 3)`` for all images in batches, and the seconds it took."""
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        out.append(predict(images[s : s + batch]))
    return np.concatenate(out).astype(np.float32), time.perf_counter() - t0


def quality_stats(kp: np.ndarray) -> dict[str, Any]:
    """Score statistics of ``(N, 17, 3)`` keypoints (no ground truth needed)."""
    score = kp[..., 2]  # (N, 17)
    found = score.max(axis=1) > 0  # (N,) a person was found
    n_conf = (score > CONF).sum(axis=1)  # (N,)
    return {
        "crops": int(len(kp)),
        "mean_score_all_crops": float(score.mean()),
        "mean_score_detected_crops": float(score[found].mean()) if found.any() else None,
        f"frac_ge{MIN_KEYPOINTS}_kp_above_{CONF}": float((n_conf >= MIN_KEYPOINTS).mean()),
        "detection_rate": float(found.mean()),
        f"mean_kp_above_{CONF}": float(n_conf.mean()),
        f"per_keypoint_frac_above_{CONF}": {
            name: float(v) for name, v in zip(COCO17_NAMES, (score > CONF).mean(axis=0))},
    }


def torso_size(kp: np.ndarray) -> np.ndarray:
    """``(N,)`` distance from mid-shoulder to mid-hip of ``(N, 17, 3)`` keypoints."""
    mid_sho = (kp[:, L_SHO, :2] + kp[:, R_SHO, :2]) / 2  # (N, 2)
    mid_hip = (kp[:, L_HIP, :2] + kp[:, R_HIP, :2]) / 2
    return np.linalg.norm(mid_sho - mid_hip, axis=1)


def pck(ref: np.ndarray, other: np.ndarray, torso_confident: bool = False) -> dict[str, Any]:
    """PCK@PCK_THR of ``other`` against ``ref`` (both ``(N, 17, 3)``), torso size from ``ref``.

    Crops: both found a person (any score > 0) and the torso size is > 0 (with
    ``torso_confident``, also ref's 4 torso keypoints score > CONF). Keypoints: score > CONF in both.
    """
    torso = torso_size(ref)  # (N,)
    crops = (ref[..., 2].max(axis=1) > 0) & (other[..., 2].max(axis=1) > 0) & (torso > 0)
    if torso_confident:
        crops &= (ref[:, [L_SHO, R_SHO, L_HIP, R_HIP], 2] > CONF).all(axis=1)
    pairs = (ref[..., 2] > CONF) & (other[..., 2] > CONF) & crops[:, None]  # (N, 17)
    dist = np.linalg.norm(ref[..., :2] - other[..., :2], axis=-1)  # (N, 17) pixels
    within = dist <= PCK_THR * torso[:, None]
    per_kp = {name: (float(within[:, j][pairs[:, j]].mean()) if pairs[:, j].any() else None)
              for j, name in enumerate(COCO17_NAMES)}
    return {
        "pck": float(within[pairs].mean()) if pairs.any() else None,
        "crops_counted": int(crops.sum()),
        "keypoint_pairs_counted": int(pairs.sum()),
        "median_torso_px": float(np.median(torso[crops])) if crops.any() else None,
        "median_dist_over_torso": float(np.median((dist / np.maximum(torso[:, None], 1e-6))[pairs]))
        if pairs.any() else None,
        "per_keypoint_pck": per_kp,
    }


def rates(fn: Predict, images: list[np.ndarray], batch: int) -> float:
    """images/s of one pass over ``images`` in batches of ``batch``."""
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        fn(images[s : s + batch])
    return len(images) / (time.perf_counter() - t0)


def time_modes(modes: dict[str, tuple[Predict, int]], images: list[np.ndarray], repeat: int) -> dict[str, dict]:
    """Warm each mode up once, then ``repeat`` rounds of one pass per mode (interleaved)."""
    for fn, batch in modes.values():
        fn(images[:batch])  # warm-up: graph/allocations/first-call costs
    runs: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeat):
        for m, (fn, batch) in modes.items():
            runs[m].append(rates(fn, images, batch))
    return {m: {"images": len(images), "batch": modes[m][1], "img_per_s_best": max(r),
                "img_per_s_median": statistics.median(r), "img_per_s_runs": r}
            for m, r in runs.items()}


def speed_backend(name: str, kw: dict[str, Any], images: list[np.ndarray], repeat: int,
                  per_image: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    est = build_estimator(name, **kw)
    build_s = time.perf_counter() - t0
    modes: dict[str, tuple[Predict, int]] = {"b1": (est.predict, 1), "b32": (est.predict, 32)}
    if per_image:
        modes["per_image_inference_topdown"] = (lambda ims: mmpose_predict_per_image(est, ims), 1)
        if hasattr(est, "forward_batch"):  # the batched path before the speed work, same model
            one_step = copy.copy(est)
            one_step.forward_batch, one_step.channels_last, one_step.batch_model = None, False, est.model
            modes["b32_one_test_step"] = (one_step.predict, 32)
    load_before = load_average()
    out: dict[str, Any] = {"build_s": build_s, **time_modes(modes, images, repeat),
                           "load_average_before": load_before, "load_average_after": load_average()}
    if per_image:
        ref = out["per_image_inference_topdown"]
        for m in [m for m in ("b1", "b32", "b32_one_test_step") if m in out]:
            out[f"speedup_{m}_vs_per_image_median"] = out[m]["img_per_s_median"] / ref["img_per_s_median"]
            out[f"speedup_{m}_vs_per_image_best"] = out[m]["img_per_s_best"] / ref["img_per_s_best"]
            out[f"speedup_{m}_vs_per_image_per_round"] = [
                a / b for a, b in zip(out[m]["img_per_s_runs"], ref["img_per_s_runs"])]
            out[f"speedup_{m}_vs_per_image_per_round_median"] = statistics.median(
                out[f"speedup_{m}_vs_per_image_per_round"])
    close = getattr(est, "close", None)
    if close is not None:
        close()
    return out


def version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "data" / "cuhk01"))
    ap.add_argument("--movenet", default=str(SHARED / "models" / "movenet_singlepose_lightning_int8.tflite"))
    ap.add_argument("--limit", type=int, default=None, help="only the first N crops of the manifest")
    ap.add_argument("--speed-images", type=int, default=256, help="crops in the speed set (movenet, mediapipe)")
    ap.add_argument("--mmpose-images", type=int, default=128,
                    help="crops in the mmpose speed set (the first of the speed set)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per mode (after one warm-up call)")
    ap.add_argument("--speed-backends", nargs="+", default=None, metavar="LABEL",
                    help="time only these backends (labels as printed, e.g. 'mmpose rtmpose-t'); default all")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran)")
    ap.add_argument("--out", default=str(RESULTS / "pose.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_start = load_average()
    t_start = time.perf_counter()
    data = Path(args.data)
    names, images, bad = load_crops(data, args.limit)
    print(f"decoded {len(images)} crops from {data} ({len(bad)} unreadable)", flush=True)
    if not images:
        ap.error(f"no readable crops in {data}")
    shapes = sorted({im.shape[:2] for im in images})

    quality_backends = {
        "movenet": ("movenet", {"model_path": args.movenet}),
        "mediapipe": ("mediapipe", {}),
        "mediapipe@256": ("mediapipe", {"upscale_height": 256}),
    }
    mmpose_backends = {
        "mmpose rtmpose-t": ("mmpose", {"config": "rtmpose-t", "random_init": True}),
        "mmpose hrnet-w32": ("mmpose", {"config": "hrnet-w32", "random_init": True}),
    }

    # (1) quality ---------------------------------------------------------------------------
    quality: dict[str, Any] = {}
    kps: dict[str, np.ndarray] = {}
    if not args.skip_quality:
        for label, (name, kw) in quality_backends.items():
            est = build_estimator(name, **kw)
            kps[label], secs = predict_all(est.predict, images, QUALITY_BATCH)
            getattr(est, "close", lambda: None)()
            quality[label] = {**quality_stats(kps[label]), "seconds": secs, "img_per_s": len(images) / secs}
            print(f"quality {label}: {len(images)} crops in {secs:.0f} s", flush=True)
        agreement = {}
        for other in ("mediapipe", "mediapipe@256"):
            agreement[f"movenet vs {other}"] = {
                "all_detected": pck(kps["movenet"], kps[other]),
                "movenet_torso_confident": pck(kps["movenet"], kps[other], torso_confident=True),
            }
        quality = {"backends": quality, "agreement": agreement}

    # (2) speed on the CPU, (3) on CUDA -------------------------------------------------------
    speed: dict[str, Any] = {}
    speed_cuda: dict[str, Any] = {}
    cuda_note = ""
    if not args.skip_speed:
        pick = np.random.default_rng(0).permutation(len(images))[: args.speed_images]
        speed_set = [images[i] for i in pick]
        mm_set = speed_set[: args.mmpose_images]
        for label, (name, kw) in {**quality_backends, **mmpose_backends}.items():
            if args.speed_backends is not None and label not in args.speed_backends:
                continue
            is_mm = name == "mmpose"
            speed[label] = speed_backend(name, kw, mm_set if is_mm else speed_set, args.repeat, per_image=is_mm)
            print(f"speed {label} (load {speed[label]['load_average_after'][0]:.1f}): " + ", ".join(
                f"{m} {v['img_per_s_median']:.1f}" for m, v in speed[label].items() if isinstance(v, dict)),
                flush=True)
        if torch.cuda.is_available():
            for label, (name, kw) in mmpose_backends.items():
                if args.speed_backends is not None and label not in args.speed_backends:
                    continue
                speed_cuda[label] = speed_backend(name, {**kw, "device": "cuda"}, mm_set, args.repeat,
                                                  per_image=True)
        else:
            cuda_note = "skipped: torch.cuda.is_available() is False on this machine"

    # tables ------------------------------------------------------------------------------------
    if quality:
        k = f"frac_ge{MIN_KEYPOINTS}_kp_above_{CONF}"
        hdr = (f"{'backend':15s} {'mean score':>10s} {'(detected)':>10s} {f'>={MIN_KEYPOINTS} kp>{CONF}':>12s} "
               f"{'detected':>9s} {'img/s':>7s}")
        print(f"\nquality on {len(images)} CUHK01 crops (no ground truth; mmpose left out: random weights)")
        print(hdr)
        print("-" * len(hdr))
        for label, q in quality["backends"].items():
            det = q["mean_score_detected_crops"]
            print(f"{label:15s} {q['mean_score_all_crops']:10.3f} {det if det is None else f'{det:.3f}':>10} "
                  f"{q[k]:12.1%} {q['detection_rate']:9.1%} {q['img_per_s']:7.1f}")
        print(f"\nagreement PCK@{PCK_THR} torso (movenet torso), keypoints > {CONF} in both")
        for pair, a in quality["agreement"].items():
            for variant, r in a.items():
                val = "n/a" if r["pck"] is None else f"{r['pck']:.3f}"
                print(f"{pair:28s} {variant:24s} PCK {val:>6s}  crops {r['crops_counted']:5d}  "
                      f"pairs {r['keypoint_pairs_counted']:6d}")
    if speed:
        hdr = (f"{'backend (CPU)':18s} {'imgs':>5s} {'b1 best/median':>16s} {'b32 best/median':>16s} "
               f"{'per-image best/median':>22s} {'b32/per-image':>14s} {'old b32 best/median':>20s} "
               f"{'old b32/per-image':>18s}")
        print(f"\nspeed, images/s (best / median of {args.repeat}), torch threads {torch.get_num_threads()}; "
              "x/per-image: ratio of medians / median of the per-round ratios; old b32: one test_step, NCHW, "
              "BN not folded")
        print(hdr)
        print("-" * len(hdr))

        def bm(s: dict, m: str) -> str:
            return f"{s[m]['img_per_s_best']:.1f} / {s[m]['img_per_s_median']:.1f}" if m in s else "-"

        for label, s in speed.items():
            def ratio_of(m: str, s: dict = s) -> str:
                k = f"speedup_{m}_vs_per_image"
                return f"{s[k + '_median']:.2f}x / {s[k + '_per_round_median']:.2f}x" if k + "_median" in s else "-"

            ratio, old = ratio_of("b32"), ratio_of("b32_one_test_step")
            print(f"{label:18s} {s['b1']['images']:5d} {bm(s, 'b1'):>16s} {bm(s, 'b32'):>16s} "
                  f"{bm(s, 'per_image_inference_topdown'):>22s} {ratio:>14s} "
                  f"{bm(s, 'b32_one_test_step'):>20s} {old:>18s}")
        print(f"cuda: {cuda_note or 'see JSON speed_cuda'}")

    write_result(args.out, {
        "benchmark": "pose",
        "date": now_utc(),
        "command": command_line(),
        "machine": machine(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                           cuda=torch.cuda.is_available(),
                           packages={p: version(p) for p in ("ai-edge-litert", "mediapipe", "mmpose", "mmengine",
                                                             "mmcv-lite", "mmdet", "opencv-python", "numpy")},
                           load_average_at_start=load_start, load_average_at_end=load_average(), note=args.note),
        "data": {"name": "CUHK01", "path": str(data), "crops": len(images), "unreadable": bad,
                 "shapes_hw": [list(s) for s in shapes]},
        "settings": {
            "limit": args.limit, "repeat": args.repeat, "speed_backends": args.speed_backends,
            "threads": args.threads, "speed_images": args.speed_images,
            "mmpose_images": args.mmpose_images, "quality_batch": QUALITY_BATCH,
            "conf": CONF, "min_keypoints": MIN_KEYPOINTS, "pck_threshold": PCK_THR,
            "backends": {k: v[1] for k, v in {**quality_backends, **mmpose_backends}.items()},
            "pck": "over crops where both found a person (any score > 0) and torso > 0, keypoints "
                   f"> {CONF} in both; torso = |mid-shoulder - mid-hip| of the movenet skeleton; "
                   "'movenet_torso_confident' also needs movenet's 4 torso keypoints > "
                   f"{CONF}",
            "detection": "any keypoint score > 0 (MoveNet SinglePose always returns a skeleton, "
                         "so its rate is 1 by construction)",
            "speed": "fixed random set (seed 0); one warm-up call per mode, then --repeat rounds, "
                     "each one pass per mode, interleaved; images/s best and median. b1/b32: "
                     "predict() on batches of 1/32; per_image_inference_topdown: "
                     "mmpose_predict_per_image (mmpose inference_topdown once per crop); "
                     "b32_one_test_step: mmpose predict() on batches of 32 as before the speed work "
                     "(forward_batch=None, channels_last=False, BN not folded: one test_step, NCHW); "
                     "speedup_*_per_round: the ratio within each round, and its median. Image "
                     "decoding is not timed (crops decoded beforehand).",
            "mmpose": "random_init=True (no trained checkpoint offline): speed only; test_cfg as "
                      "in the config (rtmpose-t: flip_test=True, i.e. two forwards per crop)",
        },
        "quality": quality or "skipped (--skip-quality)",
        "speed_cpu": speed or "skipped (--skip-speed)",
        "speed_cuda": speed_cuda or cuda_note or "skipped (--skip-speed)",
        "total_s": time.perf_counter() - t_start,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
