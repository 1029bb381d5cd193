"""Stage ``score-posegan``: a pose-guided generator on held-out pairs of the test identities.

The protocol of PG2, Deformable GAN and PATN on Market-1501: pairs (A, B) of two images of one
*test* identity (never seen in training) in different poses; the generator gets image A and
B's pose, and its output is compared with the real image B:

- SSIM and mask-SSIM (SSIM inside the dilated body mask of B's pose, PG2's measure), beside the
  same for the condition image A itself ("copy the input": the score a generator must beat);
- with ``judge`` (an ONNX re-ID model never trained on this data): identity rank-1 / mAP of
  each fake as a query against every held-out real image (its condition image excluded),
  beside the condition images as queries; FReID per camera of B;
- ``pairs.png``: condition, target pose, generated (PG2: G1 and G2), real target for
  ``grid_pairs`` pairs. Open it and look.

On the synthetic demo data, bind ``synthetic`` to ``demo-data.dataset``: the fake of (A, B) is
also scored against the renderer's exact picture of it (A's person in B's pose through A's
camera, :func:`reidaug.eval.posegan.synthetic_truth_scores`), beside the real B, which differs
from that truth by its background window, sensor noise and, across cameras, the camera's style.
The scores and the table are :mod:`reidaug.eval.posegan`'s; this stage binds the inputs, runs
the generator and draws the picture. Pairs follow the training rule (:func:`reidaug.gen.poseguided.make_pairs`:
both poses with at least ``min_keypoints`` confident keypoints, poses that differ). On
Market-1501 (ingest ``format: market1501``) identity 0, its distractors, is left out and counted
(``distractors_left_out``); elsewhere (MSMT17, folder datasets numbered from 0) identity 0 is a
person like any other. Writes ``metrics.json``, ``metrics.md``, ``pairs.json``
and ``pairs.png``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import BatchedGPUParams, FileParam, StageSpec
from reidaug.validation import MAX_SEED

METRICS = "metrics.json"
TABLE = "metrics.md"
PAIRS = "pairs.json"
PICTURE = "pairs.png"


class ScorePoseGANParams(BatchedGPUParams):
    """What to score; device, amp and batch_size come from :class:`BatchedGPUParams`."""

    judge: FileParam | None = Field(
        None, description="ONNX re-ID model (e.g. osnet_x0_25_msmt17.onnx); none: SSIM only")
    splits: list[Literal["query", "gallery"]] = Field(["query", "gallery"], min_length=1,
        description="held-out splits whose identities give the pairs (never train: the generator's own identities)")
    num_pairs: int | None = Field(1000, ge=1, description="seeded draw of this many pairs (none: all)")
    min_keypoints: int = Field(8, ge=0, le=17, description="confident keypoints both poses need")
    min_pose_change: float = Field(
        0.02, ge=0, description="mean keypoint displacement / image height below which two poses are the same")
    score_threshold: float | None = Field(
        None, ge=0, le=1, description="keypoint confidence (default: the generator's training threshold)")
    grid_pairs: int = Field(16, ge=0, le=256, description="pairs drawn in pairs.png")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    fd_eps: float = Field(0.0, ge=0.0, description="ridge added to covariances in FReID (N < D needs it)")


def _generator(ctx: StageContext):
    from reidaug.gen.common import pick_device
    from reidaug.gen.poseguided import PoseGuidedGenerator

    device = pick_device(ctx.params.device, "params.device")
    return PoseGuidedGenerator.from_folder(ctx.input("models").path, device, amp=ctx.params.amp,
                                           where="the models input")


def plan(ctx: StageContext) -> int:
    _generator(ctx)  # no CUDA, or a missing or foreign generator file: say so before any work
    return 1


def held_out_pairs(ctx: StageContext, size_hw: tuple[int, int], threshold: float):
    """The held-out images (all ``splits``, model size, keypoints in that frame) and the pairs."""
    import numpy as np

    from reidaug.errors import DataError
    from reidaug.gen.poseguided import PoseImages, collect_pose_images, make_pairs

    p: ScorePoseGANParams = ctx.params
    data = PoseImages.concat([
        collect_pose_images(ctx.input("dataset").iter_chunks(), ctx.input("keypoints").iter_chunks(),
                            size_hw, threshold, split=split, where=f"the {split} split") for split in p.splits])
    # Market-1501's identity 0 is its distractors, not one person; MSMT17 and folder datasets
    # number real identities from 0
    fmt = (ctx.input("dataset").meta.get("params") or {}).get("format")
    keep = np.flatnonzero(data.pids != 0) if fmt == "market1501" else np.arange(len(data))
    distractors = len(data) - len(keep)
    data = data.take(keep)
    if len(data) == 0:
        raise DataError(f"the splits {p.splits} of {ctx.input('dataset').path} hold no image of a "
                        "test identity. Fix: params.splits must name held-out splits (query, gallery).")
    plan_ = make_pairs(data, p.min_keypoints, p.min_pose_change, size_hw[0], max_pairs=p.num_pairs, seed=p.seed)
    plan_.counts["distractors_left_out"] = distractors
    if len(plan_.pairs) == 0:
        raise DataError(f"no held-out pair found ({plan_.counts}); pairs need two images of one "
                        f"identity whose poses both have >= {p.min_keypoints} keypoints above {threshold} and differ. "
                        "Fix: lower params.min_keypoints or params.min_pose_change.")
    return data, plan_


def score(ctx: StageContext) -> dict[str, Any]:
    """Generate the fake of every held-out pair, score them (:mod:`reidaug.eval.posegan`), draw pairs.png."""
    import numpy as np

    from reidaug.eval.posegan import pose_transfer_report, score_pose_transfer
    from reidaug.data.images import image_grid
    from reidaug.gen.poseguided import pairs_document, pose_picture
    from reidaug.io.atomic import write_json

    p: ScorePoseGANParams = ctx.params
    gen = _generator(ctx)
    threshold = gen.score_threshold if p.score_threshold is None else p.score_threshold
    data, plan_ = held_out_pairs(ctx, gen.size, threshold)
    a, b = plan_.pairs[:, 0], plan_.pairs[:, 1]
    bs = p.batch_size_on(gen.device, gen.size)
    fakes = np.zeros((len(a),) + data.images.shape[1:], np.uint8)
    g1 = np.zeros_like(fakes) if gen.model_name == "pg2" else None
    for s in range(0, len(a), bs):
        ia, ib = a[s:s + bs], b[s:s + bs]
        x = gen.to_tensor(data.images[ia])
        # at the threshold the pairs and masks use, so the generator sees the poses they count
        fakes[s:s + bs] = gen.generate_tensor(x, data.keypoints[ia], data.keypoints[ib],
                                              threshold=threshold).cpu().numpy()
        if g1 is not None:
            g1[s:s + bs] = gen.generate_tensor(x, data.keypoints[ia], data.keypoints[ib], stage="g1",
                                               threshold=threshold).cpu().numpy()
    synthetic = ctx.inputs.get("synthetic")
    result = score_pose_transfer(
        data.images, data.pids, data.camids, data.paths, data.keypoints, plan_.pairs, fakes, g1,
        judge=p.judge.path if p.judge is not None else None, fd_eps=p.fd_eps,
        synthetic_root=synthetic.path if synthetic is not None else None)
    result["pairs"] = {"counts": plan_.counts, "splits": p.splits, "score_threshold": threshold,
                       "cross_camera": int((data.camids[a] != data.camids[b]).sum())}
    result["generator"] = {"model": gen.model_name, "checksum": gen.checksum, "size": list(gen.size),
                           "file": gen.file.name}
    result["report"] = pose_transfer_report(result, judged=p.judge is not None)
    # the picture: condition / target pose / generated (G1, G2) / real, first grid_pairs of a seeded order
    if p.grid_pairs:
        order = np.random.default_rng([p.seed, 16]).permutation(len(a))[:p.grid_pairs]
        rows, labels = [], []
        for r in order:
            row = [data.images[a[r]], pose_picture(data.keypoints[b[r]], gen.size)]
            row += ([g1[r]] if g1 is not None else []) + [fakes[r], data.images[b[r]]]
            rows.append(row)
            labels.append(f"id {int(data.pids[a[r]])} c{int(data.camids[a[r]])}->c{int(data.camids[b[r]])}")
        cols = ["condition", "target pose"] + (["G1", "G2"] if g1 is not None else ["generated"]) + ["real target"]
        image_grid(rows, ctx.work_dir / PICTURE, row_labels=labels, col_labels=cols)
    write_json(ctx.work_dir / PAIRS, pairs_document(data, plan_, {
        "splits": p.splits, "min_keypoints": p.min_keypoints, "min_pose_change": p.min_pose_change,
        "score_threshold": threshold, "num_pairs": p.num_pairs, "seed": p.seed}))
    return result


def run_chunk(ctx: StageContext, index: int) -> None:
    import json

    from reidaug.io.atomic import write_json, write_text

    result = score(ctx)
    write_json(ctx.work_dir / METRICS, {k: v for k, v in result.items() if k != "report"})
    write_text(ctx.work_dir / TABLE, result["report"])
    ctx.write_chunk(index, {"done": 1}, attrs={"report": json.dumps(result["report"])})


def finalize(ctx: StageContext) -> dict[str, Any]:
    report = (ctx.work_dir / TABLE).read_text().rstrip("\n").splitlines()
    return {"report": report + [f"metrics: {METRICS}, {TABLE}, {PAIRS}; picture: {PICTURE} (condition, target pose, "
                                "generated, real) in this entry"]}


SPEC = StageSpec(
    # 2: identity 0 kept outside Market-1501, poses at the stage's threshold; 3: torch threads pinned
    name="score-posegan", version=3,
    description="SSIM / mask-SSIM / identity (external judge) / FReID of a pose-guided generator "
                "on held-out test pairs",
    params=ScorePoseGANParams, plan=plan, run_chunk=run_chunk, finalize=finalize,
    inputs={"models": "train-posegan.models", "dataset": "ingest.dataset", "keypoints": "extract-pose.keypoints",
            "synthetic": ""},
    optional_inputs=frozenset({"synthetic"}),
    unkeyed_if_unbound=frozenset({"synthetic"}),  # added later: keys without it stay as they were
    outputs={"metrics": METRICS, "table": TABLE, "pairs": PAIRS, "picture": PICTURE},
)
