"""Stage ``evaluate-posefusion``: PN-GAN's test-time pose fusion, measured beside the plain feature.

Qian et al. (ECCV 2018) also use their canonical-pose generator at test time: every query and gallery
image is generated in the k canonical poses, and the re-ID feature is the max-pool of the 1 + k
features (the original's and the pose-normalised images'). This stage does it with the project's
pieces: a ``train-reid`` model, an exported file whose query and gallery images carry keypoints
(export-hdf5 with ``inputs.keypoints``), a ``train-posegan`` generator and ``cluster-poses``' canonical
poses. It reports rank-1 / rank-5 / mAP for the unfused feature, max fusion and mean fusion with the
same model (``metrics.json``, ``metrics.md``), and draws a few originals beside their pose images
(``pose_fusion.png``). Cached like any stage; nothing is written into the model or the file.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import BatchedGPUParams, StageSpec

METRICS = "metrics.json"
TABLE = "metrics.md"
PICTURE = "pose_fusion.png"


class EvaluatePoseFusionParams(BatchedGPUParams):
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="distance between fused features")
    protocol: Literal["market", "cuhk03-sgs"] = Field("market", description="evaluation protocol")
    flip: bool = Field(False, description="also fuse each view with its mirror image (the mean of the two)")
    pictures: int = Field(6, ge=1, le=64, description="query images drawn beside their pose images")
    min_keypoints: int = Field(8, ge=0, le=17, description=(
        "an image whose own pose has fewer keypoints above the generator's threshold is not re-posed: its fused "
        "feature is the unfused one (counted in the report)"))


def _ingest_key(handle) -> str | None:
    return ((handle.meta.get("material") or {}).get("inputs") or {}).get("dataset")


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError
    from reidaug.gen.common import pick_device

    pick_device(ctx.params.device, "params.device")
    data, gen = _ingest_key(ctx.inputs["data"]), _ingest_key(ctx.inputs["generator"])
    if data and gen and data != gen:  # the generator may have seen the query / gallery people
        raise ConfigError(
            f"the file ({ctx.inputs['data'].stage}) and the pose generator ({ctx.inputs['generator'].stage}) come from "
            "different ingest outputs, so the generator may have trained on identities that are test identities "
            "here. Fix: bind both to stages that read the same ingest stage (the same split).")
    return 1


def _split(path, split: str) -> tuple[list[Any], Any, Any, Any]:
    import numpy as np

    from reidaug.data.h5format import open_h5
    from reidaug.errors import DataError

    with open_h5(path) as f:
        if f.info.image_resize == "pad":
            raise DataError(f"{path}: its images are letterboxed (export-hdf5 resize: pad), but the pose generator "
                            "trained on stretched images. Fix: evaluate on an export with resize: stretch.")
        m = f.meta(split)
        if m.keypoints is None:
            raise DataError(f"{path}: split {split!r} has no keypoints, and pose fusion needs each image's pose. "
                            "Fix: bind the export-hdf5 stage's inputs.keypoints to extract-pose.keypoints.")
        images = [f.read_image(split, i) for i in range(len(m))]
        return images, np.nan_to_num(m.keypoints).astype(np.float32), m.pid.astype(np.int64), m.camid.astype(np.int64)


def run_chunk(ctx: StageContext, index: int) -> None:
    import json

    from reidaug.data.images import image_grid
    from reidaug.eval.metrics import evaluate
    from reidaug.gen.common import pick_device
    from reidaug.gen.posefusion import FUSIONS, canonical_in_frame, fused_features
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.io.atomic import write_json, write_text
    from reidaug.train.model import load_model

    p: EvaluatePoseFusionParams = ctx.params
    device = pick_device(p.device, "params.device")
    model = load_model(ctx.input("model").path)
    gen = PoseGuidedGenerator.from_folder(ctx.input("generator").path, device, amp=p.amp)
    canonical = json.loads(ctx.input("canonical").path.read_text(encoding="utf-8"))
    poses = canonical_in_frame(canonical, gen.size)
    data = ctx.input("data").path
    bs = p.batch_size_on(device)
    out: dict[str, Any] = {}
    fused = {}
    for split in ("query", "gallery"):
        images, kp, pids, camids = _split(data, split)
        r = fused_features(model, gen, images, kp, poses, batch_size=bs, device=device, flip=p.flip,
                           keep_pictures=p.pictures if split == "query" else 0, min_keypoints=p.min_keypoints)
        fused[split] = (r, pids, camids)
    q, g = fused["query"], fused["gallery"]
    for fusion in FUSIONS:
        m = evaluate(q[0].features[fusion], g[0].features[fusion], q[1], g[1], q[2], g[2], metric=p.metric,
                     protocol=p.protocol)
        out[fusion] = {"rank1": m.rank(1), "rank5": m.rank(5), "rank10": m.rank(10), "mAP": m.mAP,
                       "mINP": m.mINP, "num_queries": m.num_queries}
    record = {"fusions": out, "k": len(poses), "metric": p.metric, "protocol": p.protocol, "flip": p.flip,
              "generator": {"model": gen.model_name, "checksum": gen.checksum}, "num_query": len(q[1]),
              "num_gallery": len(g[1]), "not_reposed": {"query": q[0].no_pose, "gallery": g[0].no_pose,
                                                        "min_keypoints": p.min_keypoints},
              "note": "one real-only re-ID model extracts all 1 + k features (PN-GAN trains its pose-view "
                      "features on synthesised images)"}
    write_json(ctx.work_dir / METRICS, record)
    lines = ["| feature | rank-1 (%) | rank-5 (%) | mAP (%) |", "|---|---|---|---|"]
    names = {"none": "original only", "max": f"max over 1 + {len(poses)} poses (PN-GAN)",
             "mean": f"mean over 1 + {len(poses)} poses"}
    for fusion in FUSIONS:
        x = out[fusion]
        lines.append(f"| {names[fusion]} | {100 * x['rank1']:.1f} | {100 * x['rank5']:.1f} | {100 * x['mAP']:.1f} |")
    write_text(ctx.work_dir / TABLE, "\n".join(lines) + "\n")
    pics = q[0].pose_images
    if pics is not None:
        image_grid([list(row) for row in pics], ctx.work_dir / PICTURE,
                   col_labels=["query"] + [f"pose {j}" for j in range(len(poses))], cell_hw=gen.size)
    ctx.write_chunk(index, {"k": len(poses)})


def finalize(ctx: StageContext) -> dict[str, Any]:
    import json

    record = json.loads((ctx.work_dir / METRICS).read_text(encoding="utf-8"))
    f = record["fusions"]
    report = [f"pose fusion ({record['protocol']}, {record['metric']}, {record['num_query']} queries, "
              f"k = {record['k']} canonical poses): rank-1 / mAP "
              + "; ".join(f"{name} {100 * f[name]['rank1']:.1f} / {100 * f[name]['mAP']:.1f}"
                          for name in ("none", "max", "mean")),
              f"not re-posed (own pose under {record['not_reposed']['min_keypoints']} keypoints, unfused feature "
              f"kept): {record['not_reposed']['query']} queries, {record['not_reposed']['gallery']} gallery images",
              f"table: {TABLE}; picture: {PICTURE} in this entry"]
    return {k: {"rank1": v["rank1"], "mAP": v["mAP"]} for k, v in f.items()} | {"report": report}


SPEC = StageSpec(
    name="evaluate-posefusion", version=1,
    description="PN-GAN's test-time pose fusion: query and gallery features max / mean over the canonical poses",
    params=EvaluatePoseFusionParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"model": "train-reid.model", "data": "export-hdf5.hdf5", "generator": "train-posegan.models",
            "canonical": "cluster-poses.canonical"},
    outputs={"metrics": METRICS, "table": TABLE, "picture": PICTURE, "chunks": "chunks"},
)
