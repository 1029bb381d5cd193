"""Generation metrics: is a generated re-ID image still the same person, in the target camera?

Used for CamStyle fakes (Zhong et al., "Camera Style Adaptation for Person Re-identification",
CVPR 2018) and for pose-guided fakes (PG2, Ma et al., NeurIPS 2017; Deformable GAN, Siarohin et
al., CVPR 2018). Four measurements, each beside a baseline that says what "good" means on the
data at hand, one module each:

* identity consistency against a fixed re-ID judge: :mod:`reidaug.eval.judge`;
* FReID, the Fréchet distance of re-ID features per target camera: :mod:`reidaug.eval.freid`;
* SSIM and PG2's mask-SSIM against a ground truth: :mod:`reidaug.eval.ssim`, with the synthetic
  dataset's exact truth from :mod:`reidaug.eval.synthetic_truth`.

This module runs all of it: :func:`evaluate_generated` on arrays (a JSON-ready dict),
:func:`format_report` (a markdown table), :func:`read_generated_h5` (the arrays of an exported
reidaug HDF5 file, docs/hdf5-format.md) and :func:`score_generated_file` (the score-fakes stage's
whole evaluation of one file). ``ssim`` and ``mask_ssim`` are importable from here too.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from reidaug.errors import ConfigError, DataError
from reidaug.eval.freid import freid_overall, freid_per_camera, freid_to_target
from reidaug.eval.inputs import check_origins, check_rgb, image_list, int_array, refuse_any
from reidaug.eval.judge import OSNetJudge, identity_consistency
from reidaug.eval.ssim import mask_ssim, paired_ssim, ssim
from reidaug.eval.synthetic_truth import synthetic_truth

__all__ = ["GeneratedData", "evaluate_generated", "format_report", "mask_ssim", "read_generated_h5",
           "score_generated_file", "ssim"]

LOG = logging.getLogger(__name__)


def _summary(values: np.ndarray) -> dict[str, Any] | None:
    v = values[np.isfinite(values)]
    if not v.size:
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def evaluate_generated(
    fake_images: Sequence[np.ndarray] | np.ndarray,
    fake_pids: Any,
    fake_origins: Any,
    fake_source_camids: Any,
    fake_target_camids: Any,
    real_images: Sequence[np.ndarray] | np.ndarray,
    real_pids: Any,
    real_camids: Any,
    *,
    judge: OSNetJudge | str | os.PathLike[str],
    gt_images: Sequence[np.ndarray | None] | None = None,
    gt_masks: Sequence[np.ndarray | None] | None = None,
    fd_eps: float = 0.0,
    target_images: Sequence[np.ndarray] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Every generation metric of the module docstring, as a JSON-ready dict.

    Fakes: images (RGB uint8, any sizes), original pids, ``fake_origins`` (index into the real
    arrays, -1 none), source and target cameras (0-based; target -1 = not camera-transferred).
    Reals: images, pids, cameras. ``judge``: an :class:`OSNetJudge` or the path of its ONNX
    model. ``gt_images``: optional ground truth per fake (None entries: none), giving SSIM of
    fake vs truth beside SSIM of the untransferred origin vs truth; references are resized to
    the fake's size. ``gt_masks``: optional body masks (H, W) per fake for mask-SSIM.
    ``target_images``: the images of the dataset the fakes were translated into (PTGAN / SPGAN's target),
    giving ``freid_target`` (:func:`reidaug.eval.freid.freid_to_target`).
    """
    fakes = image_list(fake_images, "fake_images")
    reals = image_list(real_images, "real_images")
    nf, nr = len(fakes), len(reals)
    if nf == 0 or nr == 0:
        raise DataError(f"evaluate_generated: {nf} fake and {nr} real images; need at least one of each.")
    fp = int_array(fake_pids, "fake_pids", nf)
    fo = int_array(fake_origins, "fake_origins", nf)
    fs = int_array(fake_source_camids, "fake_source_camids", nf)
    ft = int_array(fake_target_camids, "fake_target_camids", nf)
    rp = int_array(real_pids, "real_pids", nr)
    rc = int_array(real_camids, "real_camids", nr)
    has = check_origins(fo, fp, rp)
    refuse_any(has & (rc[np.where(has, fo, 0)] != fs), "fake_source_camids",
               "fakes name another source camera than their origin's",
               lambda i: f"fake {i}: source {int(fs[i])}, origin {int(fo[i])} is camera {int(rc[fo[i]])}",
               "pass the origin images' 0-based cameras.")
    if not isinstance(judge, OSNetJudge):
        judge = OSNetJudge(judge)
    real_f = judge.features(reals)  # (R, D)
    fake_f = judge.features(fakes)  # (F, D)
    known = fp >= 0  # fakes with no identity (LSRO's unconditional samples) have none to keep
    ident = identity_consistency(fake_f[known], fp[known], fo[known], real_f, rp) if known.any() else None
    pairs = {f"{s}->{t}": int(((fs == s) & (ft == t)).sum())
             for s, t in sorted({(int(s), int(t)) for s, t in zip(fs, ft)})}
    result: dict[str, Any] = {
        "judge": {"model": judge.path.name, "input_size": list(judge.input_size),
                  "dim": int(real_f.shape[1]), "providers": list(judge.providers)},
        "counts": {"num_fakes": nf, "num_real": nr, "num_real_ids": int(len(np.unique(rp[rp >= 0]))),
                   "num_fakes_with_origin": int(has.sum()), "camera_pairs": pairs},
        "identity": {"protocol": "fake queries vs all real images, own origin excluded; "
                                 "baseline: the origin images as queries",
                     "fakes": ident.fakes if ident else None, "baseline": ident.baseline if ident else None,
                     **({} if known.all() else {"left_out": f"{int((~known).sum())} fakes with no identity"})},
        "freid": {str(c): v for c, v in freid_per_camera(fake_f, ft, fo, real_f, rc, eps=fd_eps).items()},
        "ssim": None,
    }
    loose = ft < 0  # no target camera: unconditional samples, dataset-to-dataset translations
    if loose.sum() >= 2:
        result["freid_overall"] = freid_overall(fake_f[loose], fo[loose], real_f, eps=fd_eps)
    if target_images is not None:
        target = image_list(target_images, "target_images")
        if len(target) < 2:
            raise DataError(f"target_images: {len(target)} image(s); FReID to the target needs at least 2.")
        result["freid_target"] = freid_to_target(fake_f, fo, real_f, judge.features(target), eps=fd_eps)
        result["identity_translated"] = _identity_among(fake_f, fp, fo, real_f, rp)
    if gt_images is not None:
        if len(gt_images) != nf:
            raise DataError(f"gt_images: {len(gt_images)} entries for {nf} fakes; pass one per "
                            f"fake (None where there is none).")
        if gt_masks is not None and len(gt_masks) != nf:
            raise DataError(f"gt_masks: {len(gt_masks)} entries for {nf} fakes; pass one per fake.")
        idx = [i for i in range(nf) if gt_images[i] is not None]
        masks = None if gt_masks is None else [gt_masks[i] for i in idx]
        gts = [check_rgb(gt_images[i], f"gt_images[{i}]") for i in idx]
        s_fake, m_fake = paired_ssim([fakes[i] for i in idx], gts, masks)  # checked by the judge
        with_src = [k for k, i in enumerate(idx) if fo[i] >= 0]
        s_src, m_src = paired_ssim(
            [reals[fo[idx[k]]] for k in with_src], [gts[k] for k in with_src],
            None if masks is None else [masks[k] for k in with_src])
        result["ssim"] = {
            "fakes": _summary(s_fake), "baseline": _summary(s_src),
            "mask_fakes": _summary(m_fake), "mask_baseline": _summary(m_src),
            "num_without_gt": nf - len(idx),
        }
    return result


def _identity_among(fake_f: np.ndarray, fp: np.ndarray, fo: np.ndarray, real_f: np.ndarray,
                    rp: np.ndarray) -> dict[str, Any] | None:
    """Each translated image as a query among the other translated images, the set a re-ID model trains on
    (a judge reads query and gallery in one style there), beside the same among their untranslated origins.
    Images made from the query's own origin are excluded with it (an origin with several fakes would
    otherwise find its siblings): the origin is each image's "camera" under the Market rule."""
    from reidaug.eval.judge import metrics_dict
    from reidaug.eval.metrics import evaluate

    keep = (fp >= 0) & (fo >= 0)
    origins = np.unique(fo[keep])
    if len(origins) < 2:
        return None
    kw = dict(metric="cosine", max_rank=50)
    fakes = evaluate(fake_f[keep], fake_f[keep], fp[keep], fp[keep], fo[keep], fo[keep], **kw)
    base = evaluate(real_f[origins], real_f[origins], rp[origins], rp[origins], origins, origins, **kw)
    return {"protocol": "each translated image as a query among the other translated images, those of its own "
                        "origin excluded; baseline: the same among their untranslated origins",
            "fakes": metrics_dict(fakes), "baseline": metrics_dict(base), "num": int(keep.sum()),
            "num_origins": int(len(origins))}


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_report(result: dict[str, Any]) -> str:
    """A markdown table of :func:`evaluate_generated`'s result (fakes beside their baseline)."""
    ident = result["identity"]
    base = ident.get("baseline") or {}
    counts = result["counts"]
    lines = [
        f"Generation metrics: {counts['num_fakes']} fakes, {counts['num_real']} real images "
        f"({counts['num_real_ids']} ids); judge {result['judge']['model']}",
        "",
        "| metric | fakes | baseline | notes |",
        "|---|---|---|---|",
    ]
    fakes = ident.get("fakes") or {}  # none when no fake has an identity (LSRO)
    for key, label in (("rank1", "identity rank-1"), ("rank5", "identity rank-5"), ("mAP", "identity mAP")):
        if not fakes and not base:
            continue
        lines.append(f"| {label} | {_fmt(fakes.get(key))} | {_fmt(base.get(key))} | "
                     f"{'baseline: origin images as queries' if key == 'rank1' else ''} |")
    if ident.get("left_out"):
        lines.append(f"| identity | - | - | {ident['left_out']} (not scored) |")
    for cam, e in sorted(result["freid"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| FReID cam {cam} (lower is better) | {_fmt(e['fd'], 4)} | "
                     f"{_fmt(e['fd_baseline'], 4)} | {e['num_fakes']} fakes vs {e['num_real']} real; "
                     f"baseline: untransferred origins. {e['note']} |")
    o = result.get("freid_overall")
    if o:
        lines.append(f"| FReID, fakes without a target camera, vs all real (lower is better) | {_fmt(o['fd'], 4)} | "
                     f"{_fmt(o['fd_baseline'], 4)} | {o['num_fakes']} fakes vs {o['num_real']} real; two halves of "
                     f"the real images: {_fmt(o['fd_real_halves'], 4)} (the floor at that N). {o['note']} |")
    w = result.get("identity_translated")
    if w:
        lines.append(f"| identity among the translated images, rank-1 / mAP | {_fmt(w['fakes']['rank1'])} / "
                     f"{_fmt(w['fakes']['mAP'])} | {_fmt(w['baseline']['rank1'])} / {_fmt(w['baseline']['mAP'])} | "
                     f"{w['num']} images of {w['num_origins']} origins; baseline: the same among the origins |")
    t = result.get("freid_target")
    if t:
        lines.append(f"| FReID vs the target dataset (lower is better) | {_fmt(t['fd'], 4)} | "
                     f"{_fmt(t['fd_baseline'], 4)} | {t['num_fakes']} fakes vs {t['num_target']} target images; "
                     f"baseline: untranslated origins; two halves of the target: {_fmt(t['fd_target_halves'], 4)} "
                     f"(the floor at that N). {t['note']} |")
    s = result.get("ssim")
    if s:
        for key, label in (("", "SSIM vs ground truth"), ("mask_", "mask-SSIM vs ground truth")):
            f, b = s.get(f"{key}fakes"), s.get(f"{key}baseline")
            if f is None and b is None:
                continue
            lines.append(f"| {label} | {_fmt(f and f['mean'])} | {_fmt(b and b['mean'])} | "
                         f"n={f['n'] if f else 0}; baseline: origin vs ground truth |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- HDF5 reader


@dataclasses.dataclass(frozen=True)
class GeneratedData:
    """The arrays :func:`evaluate_generated` takes, read from one split of a reidaug HDF5 file."""

    fake_images: list[np.ndarray]
    fake_pids: np.ndarray  # (F,) int64, original pids
    fake_origins: np.ndarray  # (F,) int64, index into the real arrays, -1 none
    fake_source_camids: np.ndarray  # (F,) int64, the origin's camera, -1 without origin
    fake_target_camids: np.ndarray  # (F,) int64, -1 none
    real_images: list[np.ndarray]
    real_pids: np.ndarray  # (R,) int64
    real_camids: np.ndarray  # (R,) int64
    fake_origin_paths: list[str]  # "" without origin
    gt_images: list[np.ndarray | None] | None = None
    gt_masks: list[np.ndarray | None] | None = None

    def arrays(self) -> dict[str, Any]:
        """Keyword arguments for :func:`evaluate_generated` (add ``judge=``)."""
        keys = ("fake_images", "fake_pids", "fake_origins", "fake_source_camids",
                "fake_target_camids", "real_images", "real_pids", "real_camids", "gt_images", "gt_masks")
        return {k: getattr(self, k) for k in keys}


def read_generated_h5(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    sources: Sequence[str] | None = None,
    synthetic_root: str | os.PathLike[str] | None = None,
) -> GeneratedData:
    """Fakes and real images of ``split`` of an exported reidaug HDF5 file.

    Real rows have source "real" (origin -1); fakes are the other rows, or only those whose
    source name is in ``sources`` (e.g. ``("camstyle",)``). HDF5 origins (row numbers in the
    split) are remapped to indices into the real arrays. ``synthetic_root``: the synthetic
    dataset folder the file was made from; then each camera-transferred fake with an origin
    gets its ground truth (:func:`synthetic_gt_path`) and, where the origin has keypoints, PG2's
    body mask of the origin's pose (the truth shares it) for mask-SSIM.
    """
    from reidaug.data.h5format import open_h5

    with open_h5(path) as f:
        meta = f.meta(split)
        fake = meta.is_fake
        real = ~fake
        if sources is not None:
            known = set(meta.source_names.values())
            unknown = sorted(set(sources) - known)
            if unknown:
                raise ConfigError(f"read_generated_h5: unknown sources {unknown} for {path}; the "
                                  f"file's source names are {sorted(known)}.")
            fake &= np.isin(meta.source, [c for c, n in meta.source_names.items() if n in set(sources)])
        real_rows = np.flatnonzero(real)
        fake_rows = np.flatnonzero(fake)
        if not len(fake_rows):
            raise DataError(f"{path} split {split!r} has no generated images"
                            f"{' of sources ' + str(list(sources)) if sources else ''}; nothing to evaluate.")
        pos = np.full(len(meta), -1, np.int64)
        pos[real_rows] = np.arange(len(real_rows))
        origin_rows = meta.origin[fake_rows].astype(np.int64)
        origins = np.where(origin_rows >= 0, pos[np.clip(origin_rows, 0, None)], -1)
        if ((origin_rows >= 0) & (origins < 0)).any():
            raise DataError(f"{path} split {split!r}: a fake's origin is not a real row; the file "
                            f"breaks its invariants. Fix: run `reidaug inspect --verify` and re-export.")
        real_cam = meta.camid[real_rows].astype(np.int64)
        origin_cam = np.where(origins >= 0, real_cam[np.clip(origins, 0, None)], -1)
        origin_paths = [meta.path[r] if r >= 0 else "" for r in origin_rows]
        data = dict(
            fake_images=[f.read_image(split, int(r)) for r in fake_rows],
            fake_pids=meta.pid[fake_rows].astype(np.int64),
            fake_origins=origins,
            fake_source_camids=origin_cam,
            fake_target_camids=meta.gen_target_camid[fake_rows].astype(np.int64),
            real_images=[f.read_image(split, int(r)) for r in real_rows],
            real_pids=meta.pid[real_rows].astype(np.int64),
            real_camids=real_cam,
            fake_origin_paths=origin_paths,
        )
        if synthetic_root is not None:
            data["gt_images"], data["gt_masks"] = synthetic_truth(
                synthetic_root, origin_rows, data["fake_target_camids"], origin_paths, meta, data)
    LOG.info("read %d fakes and %d real images from %s (%s)", len(fake_rows), len(real_rows), path, split)
    return GeneratedData(**data)


def score_generated_file(
    h5_path: str | os.PathLike[str],
    judge: OSNetJudge | str | os.PathLike[str] | None,
    *,
    synthetic_root: str | os.PathLike[str] | None = None,
    sources: Sequence[str] | None = None,
    fd_eps: float = 0.0,
    target: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score the fakes of the train split of ``h5_path``: the result dict, ``report`` (markdown) in it.

    With ``judge`` (an :class:`OSNetJudge` or its ONNX model) every metric of
    :func:`evaluate_generated`; without it only SSIM against the ground truth that
    ``synthetic_root`` gives (and a report that says what was skipped). ``target``: an export of the
    dataset the fakes were translated into (PTGAN / SPGAN); its real train images give FReID to the target.
    """
    import cv2

    if target is not None and judge is None:  # before the file is read
        raise ConfigError(f"FReID to the target ({target}) needs a judge model to extract features. Fix: give "
                          "the judge (params.judge, or --judge): an ONNX re-ID model such as "
                          "../shared/models/osnet_x0_25_msmt17.onnx.")
    data = read_generated_h5(h5_path, sources=sources, synthetic_root=synthetic_root)
    if judge is not None:
        target_images = None if target is None else read_real_images(target)
        result = evaluate_generated(**data.arrays(), judge=judge, fd_eps=fd_eps, target_images=target_images)
        result["report"] = format_report(result)
        return result
    gts = data.gt_images
    if gts is None:
        return {"ssim": None, "report": "no judge model and no ground truth: nothing to score. Set judge: to an ONNX "
                                         "re-ID model (e.g. ../shared/models/osnet_x0_25_msmt17.onnx)\n"}
    idx = [i for i, g in enumerate(gts) if g is not None]
    fakes, reals, origins = data.fake_images, data.real_images, data.fake_origins

    def fit(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return img if img.shape == ref.shape else cv2.resize(img, (ref.shape[1], ref.shape[0]),
                                                             interpolation=cv2.INTER_AREA)

    s_fake = np.array([ssim(fakes[i], fit(gts[i], fakes[i])) for i in idx])
    s_base = np.array([ssim(reals[origins[i]], fit(gts[i], reals[origins[i]])) for i in idx if origins[i] >= 0])
    result: dict[str, Any] = {"ssim": {"fakes": float(s_fake.mean()) if len(idx) else None,
                                       "baseline": float(s_base.mean()) if len(s_base) else None, "n": len(idx)},
                              "identity": None, "freid": None}
    result["report"] = (f"SSIM vs ground truth: fakes {result['ssim']['fakes']:.3f}, untransferred origins "
                        f"{result['ssim']['baseline']:.3f} (n={len(idx)}); identity and FReID skipped: no judge "
                        "model given (params.judge)\n") if len(idx) else "no fake has a ground truth\n"
    return result


def read_real_images(path: str | os.PathLike[str], split: str = "train") -> list[np.ndarray]:
    """The real (not generated) images of ``split`` of an exported file, in row order."""
    from reidaug.data.h5format import open_h5

    with open_h5(path) as f:
        if split not in f.splits:
            raise DataError(f"{path}: no {split!r} split (splits: {', '.join(f.splits)}). Fix: give an export "
                            f"that writes the {split} split.")
        real = np.flatnonzero(~f.meta(split).is_fake)
        if len(real) == 0:
            raise DataError(f"{path}: split {split!r} has no real images.")
        return [f.read_image(split, int(i)) for i in real]
