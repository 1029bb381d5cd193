"""Stage ``cluster-poses``: PN-GAN's canonical poses.

Qian et al., "Pose-Normalized Image Generation for Person Re-identification" (ECCV 2018),
cluster the training poses with k-means and render every identity in the k = 8 cluster
centres. This stage normalises the confident train poses from ``extract-pose`` (centre on the
torso, scale by torso length; :func:`reidaug.pose.canonical.normalize_poses`), runs a seeded
k-means with missing joints left out of distances, and outputs the canonical pose set (in a
``out_height x out_width`` frame, ready for a generator), each image's assignment (-1 where its
pose was not confident enough, -2 where it was set aside as an outlier) and a picture of the k
canonical skeletons.

Outlier rejection (``min_cluster_size``): a cluster of fewer poses than that is not a canonical pose
but a handful of odd ones (a pose detector's crossed-leg "diamond" on a person it missed, a
half-visible crop). Its poses are set aside and k-means runs again on the rest, same k and seed,
until every cluster has at least ``min_cluster_size`` poses
(:func:`reidaug.pose.canonical.kmeans_poses_robust`). ``min_cluster_size: 1`` is plain k-means.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field

from reidaug.io.atomic import write_json
from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import Params, StageSpec
from reidaug.validation import MAX_SEED

CANONICAL = "canonical_poses.json"
PICTURE = "canonical_poses.png"


class ClusterPosesParams(Params):
    k: int = Field(8, ge=1, le=256, description="number of canonical poses (PN-GAN: 8)")
    split: Literal["train", "query", "gallery"] = "train"
    min_confident: int = Field(12, ge=4, le=17, description="keypoints above score_threshold a pose needs")
    score_threshold: float = Field(0.3, ge=0, le=1)
    n_init: int = Field(10, ge=1, le=100)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    out_height: int = Field(256, ge=16, le=2048)
    out_width: int = Field(128, ge=8, le=2048)
    min_cluster_size: int = Field(3, ge=1, le=100000, description=(
        "outlier rejection: poses in a cluster smaller than this are set aside and k-means reruns on the "
        "rest until every cluster has this many (1: plain k-means)"))

    # 1 is what the stage did before the rule (plain k-means): a pipeline that sets 1 keeps its old key
    UNKEYED_AT: ClassVar[Mapping[str, Any]] = {"min_cluster_size": 1}


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.errors import DataError
    from reidaug.pose.canonical import kmeans_poses_robust, normalize_poses, render_canonical

    p: ClusterPosesParams = ctx.params
    kps, recs = [], []
    for arrays, _ in ctx.input("keypoints").iter_chunks():
        mask = np.asarray([s == p.split for s in arrays["split"]], bool)
        kps.append(arrays["keypoints"][mask])
        recs.append(arrays["record_index"][mask])
    kp = np.concatenate(kps) if kps else np.zeros((0, 17, 3), np.float32)
    record_index = np.concatenate(recs) if recs else np.zeros(0, np.int64)
    norm, kept = normalize_poses(kp, min_confident=p.min_confident, score_threshold=p.score_threshold)
    need = p.k * p.min_cluster_size
    if len(kept) < need:
        raise DataError(
            f"only {len(kept)} of {len(kp)} {p.split} poses have >= {p.min_confident} keypoints above "
            f"{p.score_threshold} and a full torso; k={p.k} clusters of at least min_cluster_size="
            f"{p.min_cluster_size} need {need}. Lower k, min_cluster_size or min_confident, or use a stronger "
            "pose backend in extract-pose"
        )
    centers, labels, _ = kmeans_poses_robust(norm, k=p.k, seed=p.seed, n_init=p.n_init,
                                             min_cluster_size=p.min_cluster_size)
    assignment = np.full(len(kp), -1, np.int64)
    assignment[kept] = np.where(labels >= 0, labels, -2)  # -2: an outlier, set aside by min_cluster_size
    canonical = render_canonical(centers, (p.out_height, p.out_width))  # (k, 17, 3)
    ctx.write_chunk(index, {"centers": centers, "canonical": canonical, "assignment": assignment,
                            "record_index": record_index})


def finalize(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    from reidaug.pose.canonical import skeleton_sheet

    p: ClusterPosesParams = ctx.params
    arrays, _ = next(ctx.iter_own_chunks())
    assignment = arrays["assignment"]
    sizes = np.bincount(assignment[assignment >= 0], minlength=p.k).tolist()
    excluded, outliers = int((assignment == -1).sum()), int((assignment == -2).sum())
    write_json(ctx.work_dir / CANONICAL, {
        "k": p.k, "frame_hw": [p.out_height, p.out_width],
        "keypoints": np.round(arrays["canonical"], 3).tolist(),  # (k, 17, 3) x, y, score
        "cluster_sizes": sizes, "excluded": excluded, "outliers": outliers,
    })
    skeleton_sheet(arrays["canonical"], ctx.work_dir / PICTURE, hw=(p.out_height, p.out_width))
    report = [
        f"{p.k} canonical poses from {int((assignment >= 0).sum())} confident {p.split} poses "
        f"({excluded} not confident enough, {outliers} set aside as outliers in clusters under "
        f"min_cluster_size {p.min_cluster_size}); cluster sizes {sizes}",
        f"picture: {PICTURE} in this entry",
    ]
    return {"cluster_sizes": sizes, "excluded": excluded, "outliers": outliers, "report": report}


SPEC = StageSpec(
    name="cluster-poses", version=1,
    description="PN-GAN canonical poses: k-means over normalised train poses",
    params=ClusterPosesParams, run_chunk=run_chunk, finalize=finalize,
    inputs={"keypoints": "extract-pose.keypoints"},
    outputs={"canonical": CANONICAL, "picture": PICTURE, "chunks": "chunks"},
)
