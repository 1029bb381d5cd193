"""Stage ``evaluate-posefusion``: PN-GAN's test-time pose fusion, measured beside the plain feature.

Qian et al. (ECCV 2018) also use their canonical-pose generator at test time: every query and gallery
image is generated in the k canonical poses, and the re-ID feature is the max-pool of the 1 + k
features (the original's and the pose-normalised images'). This stage does it with the project's
pieces: a ``train-reid`` model, an exported file whose query and gallery images carry keypoints
(export-hdf5 with ``inputs.keypoints``), a ``train-posegan`` generator and ``cluster-poses``' canonical
poses. It reports rank-1 / rank-5 / mAP for the unfused feature, max fusion and mean fusion with the
same model (``metrics.json``, ``metrics.md``), and draws a few originals beside their pose images
(``pose_fusion.png``). Bind ``pose_model`` to a second ``train-reid`` model (PN-GAN's, trained on the
canonical-pose fakes) and the pose views are read by it, the fused feature being the original's feature
joined to the pooled pose views' (:mod:`reidaug.gen.posefusion`). Cached and resumable like any stage:
each chunk of ``chunk_size`` query or gallery images keeps its features in its chunk file, and
``finalize`` ranks them; nothing is written into the model or the file.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import BatchedGPUParams, StageSpec

METRICS = "metrics.json"
TABLE = "metrics.md"
PICTURE = "pose_fusion.png"
SPLITS = ("query", "gallery")


class EvaluatePoseFusionParams(BatchedGPUParams):
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="distance between fused features")
    protocol: Literal["market", "cuhk03-sgs"] = Field("market", description="evaluation protocol")
    flip: bool = Field(False, description="also fuse each view with its mirror image (the mean of the two)")
    pictures: int = Field(6, ge=1, le=64, description=(
        "query images drawn beside their pose images (from the first query chunk: at most chunk_size)"))
    min_keypoints: int = Field(8, ge=0, le=17, description=(
        "an image whose own pose has fewer keypoints above the generator's threshold is not re-posed: its fused "
        "feature is the unfused one (with a pose_model: its pose half is the pose model's feature of the "
        "original; counted in the report)"))
    chunk_size: int = Field(256, ge=1, le=65_536, description=(
        "query or gallery images per chunk, the unit of resume and of parallel work (1 + k generated views and "
        "features each); in the key, since chunk files of one layout cannot be resumed under another"))


def _ingest_key(handle) -> str | None:
    return ((handle.meta.get("material") or {}).get("inputs") or {}).get("dataset")


def _layout(path, chunk_size: int) -> list[tuple[str, int, int]]:
    """``(split, start, stop)`` of every chunk: the query images, then the gallery's, ``chunk_size`` at a
    time. Checks what the chunks will need: stretched images, both splits present and with keypoints."""
    from reidaug.data.h5format import open_h5
    from reidaug.errors import DataError

    out = []
    with open_h5(path) as f:
        if f.info.image_resize == "pad":
            raise DataError(f"{path}: its images are letterboxed (export-hdf5 resize: pad), but the pose generator "
                            "trained on stretched images. Fix: evaluate on an export with resize: stretch.")
        for split in SPLITS:
            n = f.num_samples(split) if split in f.splits else 0
            if n == 0:
                raise DataError(f"{path}: split {split!r} is {'empty' if split in f.splits else 'missing'} "
                                f"(splits: {', '.join(f.splits)}), and pose fusion evaluates query against gallery. "
                                "Fix: bind data to an export-hdf5 stage that writes the query and gallery splits.")
            if "keypoints" not in f.h5[split]:
                raise DataError(f"{path}: split {split!r} has no keypoints, and pose fusion needs each image's pose. "
                                "Fix: bind the export-hdf5 stage's inputs.keypoints to extract-pose.keypoints.")
            out += [(split, a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]
    return out


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
    pose = ctx.inputs.get("pose_model")
    trained_on = _training_stage_keys(pose.path) if pose is not None else None
    if data and trained_on is not None and data.split(":")[0] not in trained_on:
        raise ConfigError(
            f"the pose model ({pose.stage}) trained on a file that does not come from this file's ingest "
            f"({ctx.inputs['data'].stage}), so it may have trained on identities that are test identities here. "
            "Fix: train it on an export of the same ingest stage (the same split), e.g. its canonical-pose fakes.")
    return len(_layout(ctx.input("data").path, ctx.params.chunk_size))


def _training_stage_keys(run_dir) -> set[str] | None:
    """The cache keys of every stage behind the file a train-reid model trained on (its root attribute
    ``stage_keys``), or None when its run config or that file cannot be read (moved: nothing to check)."""
    import json
    from pathlib import Path

    from reidaug.data.h5format import open_h5
    from reidaug.errors import DataError

    try:
        resolved = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))["resolved"]
        with open_h5(resolved["data"]) as f:
            return set(f.info.stage_keys.values())
    except (OSError, KeyError, ValueError, TypeError, DataError):
        return None


def _split(path, split: str, start: int = 0, stop: int | None = None) -> tuple[list[Any], Any, Any, Any]:
    """Images ``start:stop`` of ``split`` (RGB uint8), their keypoints (NaN as 0), pids and camera ids."""
    import numpy as np

    from reidaug.data.h5format import open_h5

    with open_h5(path) as f:
        stop = f.num_samples(split) if stop is None else stop
        m = f.rows(split, start, stop, ("keypoints", "pid", "camid"))  # this chunk's rows only
        images = [f.read_image(split, i) for i in range(start, stop)]
        kp = np.nan_to_num(m["keypoints"]).astype(np.float32)
        return images, kp, m["pid"].astype(np.int64), m["camid"].astype(np.int64)


def run_chunk(ctx: StageContext, index: int) -> None:
    """Chunk ``index``: its images' unfused, max and mean features (and, in the first query chunk, the
    pictures), in its chunk file; :func:`finalize` ranks them."""
    import json

    import numpy as np

    from reidaug.gen.common import pick_device
    from reidaug.gen.posefusion import FUSIONS, canonical_in_frame, fused_features
    from reidaug.gen.poseguided import PoseGuidedGenerator
    from reidaug.train.model import load_model

    p: EvaluatePoseFusionParams = ctx.params
    device = pick_device(p.device, "params.device")
    model = ctx.memo(f"model|{device}", lambda: load_model(ctx.input("model").path))
    bound = ctx.inputs.get("pose_model")
    pose_model = None if bound is None else ctx.memo(f"pose_model|{device}", lambda: load_model(bound.path))
    gen = ctx.memo(f"generator|{device}|{p.amp}",
                   lambda: PoseGuidedGenerator.from_folder(ctx.input("generator").path, device, amp=p.amp))
    canonical = json.loads(ctx.input("canonical").path.read_text(encoding="utf-8"))
    poses = canonical_in_frame(canonical, gen.size)
    data = ctx.input("data").path
    split, start, stop = ctx.memo("layout", lambda: _layout(data, p.chunk_size))[index]
    images, kp, pids, camids = _split(data, split, start, stop)
    keep = min(p.pictures, stop - start) if (split, start) == ("query", 0) else 0
    # one batch size for all networks: the CPU default of the largest input (generator or re-ID models)
    sizes = [tuple(gen.size), *(tuple(m.config.input_size) for m in (model, pose_model) if m is not None)]
    size = max(sizes, key=lambda hw: hw[0] * hw[1])
    r = fused_features(model, gen, images, kp, poses, batch_size=p.batch_size_on(device, size), device=device,
                       flip=p.flip, keep_pictures=keep, min_keypoints=p.min_keypoints, pose_model=pose_model)
    arrays = {f"feat_{fusion}": r.features[fusion].astype(np.float32) for fusion in FUSIONS}
    arrays |= {"pid": pids, "camid": camids}
    if r.pose_images is not None:
        arrays["pictures"] = r.pose_images
    attrs = {"split": split, "start": start, "stop": stop, "no_pose": r.no_pose, "k": len(poses),
             "generator": {"model": gen.model_name, "checksum": gen.checksum}, "size": list(gen.size)}
    if pose_model is not None:  # only then: chunk files of one-model runs keep their bytes
        attrs["pose_model"] = True
    ctx.write_chunk(index, arrays, attrs)


def finalize(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from reidaug.data.images import image_grid
    from reidaug.eval.metrics import evaluate
    from reidaug.gen.posefusion import FUSIONS
    from reidaug.io.atomic import write_json, write_text

    p: EvaluatePoseFusionParams = ctx.params
    parts: dict[str, list[tuple[dict, dict]]] = {split: [] for split in SPLITS}
    for arrays, attrs in ctx.iter_own_chunks():
        parts[attrs["split"]].append((arrays, attrs))
    joined = {split: {name: np.concatenate([a[name] for a, _ in chunks])
                      for name in ("pid", "camid", *(f"feat_{f}" for f in FUSIONS))}
              for split, chunks in parts.items()}
    first = parts["query"][0][1]
    k, size = first["k"], tuple(first["size"])
    two = bool(first.get("pose_model", False))
    no_pose = {split: sum(attrs["no_pose"] for _, attrs in chunks) for split, chunks in parts.items()}
    q, g = joined["query"], joined["gallery"]
    out: dict[str, Any] = {}
    for fusion in FUSIONS:
        m = evaluate(q[f"feat_{fusion}"], g[f"feat_{fusion}"], q["pid"], g["pid"], q["camid"], g["camid"],
                     metric=p.metric, protocol=p.protocol)
        out[fusion] = {"rank1": m.rank(1), "rank5": m.rank(5), "rank10": m.rank(10), "mAP": m.mAP,
                       "mINP": m.mINP, "num_queries": m.num_queries}
    record = {"fusions": out, "k": k, "metric": p.metric, "protocol": p.protocol, "flip": p.flip,
              "generator": first["generator"], "num_query": len(q["pid"]), "num_gallery": len(g["pid"]),
              "not_reposed": {"query": no_pose["query"], "gallery": no_pose["gallery"],
                              "min_keypoints": p.min_keypoints},
              "note": "one real-only re-ID model extracts all 1 + k features (PN-GAN trains its pose-view "
                      "features on synthesised images)"}
    if two:  # (one-model records keep their bytes)
        record |= {"pose_model": True,
                   "note": "model reads the originals, pose_model the k pose views; fused = [original ; pooled "
                           "views], each half unit-length (PN-GAN's two models)"}
    write_json(ctx.work_dir / METRICS, record)
    lines = ["| feature | rank-1 (%) | rank-5 (%) | mAP (%) |", "|---|---|---|---|"]
    names = ({"none": "original only", "max": f"[original ; max over {k} poses, pose model] (PN-GAN)",
              "mean": f"[original ; mean over {k} poses, pose model]"} if two else
             {"none": "original only", "max": f"max over 1 + {k} poses (PN-GAN)", "mean": f"mean over 1 + {k} poses"})
    for fusion in FUSIONS:
        x = out[fusion]
        lines.append(f"| {names[fusion]} | {100 * x['rank1']:.1f} | {100 * x['rank5']:.1f} | {100 * x['mAP']:.1f} |")
    write_text(ctx.work_dir / TABLE, "\n".join(lines) + "\n")
    pics = parts["query"][0][0].get("pictures")
    if pics is not None:
        image_grid([list(row) for row in pics], ctx.work_dir / PICTURE,
                   col_labels=["query"] + [f"pose {j}" for j in range(k)], cell_hw=size)
    report = [f"pose fusion ({p.protocol}, {p.metric}, {len(q['pid'])} queries, k = {k} canonical poses): "
              "rank-1 / mAP " + "; ".join(f"{name} {100 * out[name]['rank1']:.1f} / {100 * out[name]['mAP']:.1f}"
                                          for name in FUSIONS),
              f"not re-posed (own pose under {p.min_keypoints} keypoints, "
              f"{'the pose model reads the original' if two else 'unfused feature kept'}): "
              f"{no_pose['query']} queries, {no_pose['gallery']} gallery images",
              f"table: {TABLE}; picture: {PICTURE} in this entry"]
    return {name: {"rank1": v["rank1"], "mAP": v["mAP"]} for name, v in out.items()} | {"report": report}


SPEC = StageSpec(
    # 2: chunks of chunk_size query / gallery images (resumable, parallel), ranked in finalize
    name="evaluate-posefusion", version=2,
    description="PN-GAN's test-time pose fusion: query and gallery features max / mean over the canonical poses",
    params=EvaluatePoseFusionParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"model": "train-reid.model", "data": "export-hdf5.hdf5", "generator": "train-posegan.models",
            "canonical": "cluster-poses.canonical", "pose_model": ""},
    # PN-GAN's second model for the pose views; added later: keys without it stay as they were
    optional_inputs=frozenset({"pose_model"}), unkeyed_if_unbound=frozenset({"pose_model"}),
    outputs={"metrics": METRICS, "table": TABLE, "picture": PICTURE, "chunks": "chunks"},
)
