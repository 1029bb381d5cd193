"""Stage ``train-posegan``: a pose-guided person generator, trained on pairs of train images.

``model: pg2`` trains PG2 (Ma et al., "Pose Guided Person Image Generation", NeurIPS 2017):
G1 alone for ``iterations_g1`` steps (stage I, pose-mask L1), then G2 and the pair
discriminator for the rest (stage II). ``model: deformable`` trains Deformable GAN (Siarohin
et al., "Deformable GANs for Pose-based Human Image Generation", CVPR 2018: deformable skip
connections, nearest-neighbour loss on pixels by default). See :mod:`reidaug.models.pg2`,
:mod:`reidaug.models.deformable`.

Training pairs are two images of one identity of the **train split** (any cameras) whose poses
differ; a pose is usable with at least ``min_keypoints`` keypoints above ``score_threshold``
(from ``extract-pose``). How many images, usable poses, identities and pairs there were, and
what was left out, is counted in the report and in ``pairs.json``, which records every pair
(paths, records, identities). The pairs of step ``t`` are drawn from ``(seed, t)``. Test
identities are never seen: held-out pairs for metrics come from them.

One chunk (one model). It trains in ``train/<model>/`` with atomic checkpoints every
``checkpoint_every`` steps (a killed run resumes from the last one, bit-identically on the CPU),
a JSON-lines loss log and a sample grid every ``sample_every`` steps (condition, target pose,
G1, G2 / generated, ground truth). The output is ``models/<model>.pt``: the generator weights,
the config and their checksum (what ``generate-poseguided`` reads; every fake carries the
checksum). Full checkpoints are deleted when done unless ``keep_checkpoints``.

Budget: PG2 trains 22k + 14k iterations of batch 16 at 128 x 64 on Market-1501 on a GPU; on a
2-core CPU use a smaller ``ngf`` (e.g. 32) and a few thousand iterations (see BENCHMARKS.md).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GPUTrainParams, StageSpec
from reidaug.validation import MAX_SEED

MODELS_DIR = "models"
TRAIN_DIR = "train"
PAIRS = "pairs.json"
PG2_STAGE1_FRACTION = 22 / 36  # the paper's 22k G1 + 14k G2 iterations
DEFAULT_BATCH = {"pg2": 16, "deformable": 4}  # PG2's paper; pose-gan's reference code


class TrainPoseGANParams(GPUTrainParams):
    """What to train and how; device, amp and the checkpoint / sample / log cadence come from
    :class:`GPUTrainParams`."""

    model: Literal["pg2", "deformable"] = Field("pg2",
        description="pg2 (Ma et al. 2017) | deformable (Siarohin et al. 2018)")
    image_height: int = Field(128, ge=8, le=1024,
        description="training size; PG2's FC layer fixes it (128 x 64 or 256 x 128)")
    image_width: int = Field(64, ge=4, le=1024)
    ngf: int | None = Field(None, ge=2, le=256, description="generator width (default PG2: 128, Deformable GAN: 64)")
    ndf: int = Field(64, ge=2, le=256, description="discriminator width")
    d_layers: int | None = Field(None, ge=1, le=7,
        description="discriminator depth (default PG2: log2(H/8), Deformable GAN: 3)")
    z_dim: int | None = Field(None, ge=1, le=4096, description="pg2 only: FC bottleneck size (64)")
    lambda_l1: float | None = Field(None, ge=0, description="pg2 only: weight of G2's pose-mask L1 (10)")
    lambda_nn: float | None = Field(None, ge=0,
        description="deformable only: weight of the nearest-neighbour loss (100)")
    nn_features: Literal["pixels", "efficientnet_lite0"] | None = Field(
        None, description="deformable only: nearest-neighbour loss on pixels (default) or EfficientNet-Lite0 "
                          "stem features")
    lr: float | None = Field(None, gt=0, le=10,
        description="Adam lr of every network (default PG2: 2e-5, Deformable GAN: 2e-4)")
    iterations: int = Field(20000, ge=1, le=100_000_000, description="training steps (PG2: stage I + stage II)")
    iterations_g1: int | None = Field(None, ge=1,
        description="pg2 only: stage-I (G1) steps (default 22/36 of iterations)")
    train_batch: int | None = Field(None, ge=1, le=256,
        description="pairs per step (default PG2: 16, Deformable GAN: 4)")
    score_threshold: float = Field(0.3, ge=0, le=1, description="a keypoint above it counts (others are missing)")
    min_keypoints: int = Field(8, ge=0, le=17, description="confident keypoints a pose needs to be used in a pair")
    min_pose_change: float = Field(0.02, ge=0,
        description="poses of a pair differ by more than this mean keypoint shift (x height)")
    max_pairs: int | None = Field(None, ge=1, description="draw this many pairs, seeded (default: all)")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainPoseGANParams":
        from reidaug.gen.poseguided import size_problem

        problem = size_problem(self.model, self.image_height, self.image_width, self.d_layers)
        if problem:
            raise ValueError(f"image_height x image_width = {self.image_height} x {self.image_width} does not fit "
                             f"model {self.model}: {problem}. Fix: 128 x 64 or 256 x 128 (what both papers use)")
        only = {"pg2": ("z_dim", "lambda_l1", "iterations_g1"), "deformable": ("lambda_nn", "nn_features")}
        for model, names in only.items():
            if model != self.model:
                for name in names:
                    if getattr(self, name) is not None:
                        raise ValueError(f"{name} is a {model} option, but model is {self.model}. Fix: remove {name}, "
                                         f"or set model: {model}")
        if self.model == "pg2":
            if self.iterations < 2:
                raise ValueError(f"PG2 trains in two stages (G1, then G2), so iterations must be >= 2; found "
                                 f"{self.iterations}")
            if self.iterations_g1 is not None and self.iterations_g1 >= self.iterations:
                raise ValueError(f"iterations_g1 ({self.iterations_g1}) must be below iterations ({self.iterations}): "
                                 "the steps after it train G2. Fix: raise iterations or lower iterations_g1")
        return self

    @property
    def steps_g1(self) -> int:
        if self.model != "pg2":
            return 0
        if self.iterations_g1 is not None:
            return self.iterations_g1
        return min(self.iterations - 1, max(1, round(self.iterations * PG2_STAGE1_FRACTION)))

    @property
    def batch(self) -> int:
        return self.train_batch if self.train_batch is not None else DEFAULT_BATCH[self.model]


def _hp(p: TrainPoseGANParams) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("image_height", "image_width", "ngf", "ndf", "d_layers", "z_dim", "lambda_l1",
                                       "lambda_nn", "nn_features", "lr")}


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError, add_context
    from reidaug.gen.common import pick_device
    from reidaug.gen.poseguided import build_config

    p: TrainPoseGANParams = ctx.params
    pick_device(p.device, "params.device")  # no CUDA: say so before any work
    try:
        build_config(p.model, _hp(p), p.seed)  # the model's own checks, before any work
    except ConfigError as e:
        raise add_context(e, f"params of model {p.model}: ") from None
    return 1


def _no_pairs(ctx: StageContext, counts: dict[str, int]) -> Exception:
    from reidaug.errors import DataError

    p: TrainPoseGANParams = ctx.params
    return DataError(
        f"no training pairs. Expected two train images of one identity with usable, "
        f"different poses; found {counts['images']} train images of {counts['identities']} identities, "
        f"{counts['usable_poses']} with >= {p.min_keypoints} keypoints above {p.score_threshold} (min_keypoints, "
        f"score_threshold), {counts['same_pose_pairs_left_out']} pairs left out as the same pose (min_pose_change "
        f"{p.min_pose_change}). Fix: check extract-pose found people (its report), lower min_keypoints or "
        "score_threshold, or use a dataset with several images per identity.")


def run_chunk(ctx: StageContext, index: int) -> None:
    import json

    from reidaug.gen.common import pick_device
    from reidaug.gen.loop import finish_run
    from reidaug.gen.poseguided import (TrainSettings, collect_pose_images, make_pairs, pairs_document,
                                        train_model)
    from reidaug.io.atomic import write_text

    p: TrainPoseGANParams = ctx.params
    device = pick_device(p.device, "params.device")
    data = collect_pose_images(ctx.input("dataset").iter_chunks(), ctx.input("keypoints").iter_chunks(),
                               (p.image_height, p.image_width), p.score_threshold, where="inputs dataset, keypoints")
    pairs = make_pairs(data, p.min_keypoints, p.min_pose_change, p.image_height, p.max_pairs, p.seed)
    rule = {"split": "train", "min_keypoints": p.min_keypoints, "score_threshold": p.score_threshold,
            "min_pose_change": p.min_pose_change, "max_pairs": p.max_pairs, "seed": p.seed,
            "keypoint_frame": [p.image_height, p.image_width]}
    # compact: Market-1501 has ~0.5 M same-identity pairs
    write_text(ctx.work_dir / PAIRS, json.dumps(pairs_document(data, pairs, rule), sort_keys=True,
                                                separators=(",", ":")) + "\n")
    if len(pairs.pairs) == 0:
        raise _no_pairs(ctx, pairs.counts)
    settings = TrainSettings(iterations=p.iterations, iterations_g1=p.steps_g1, train_batch=p.batch, seed=p.seed,
                             **p.cadence())
    run_dir = ctx.work_dir / TRAIN_DIR / p.model
    out = train_model(p.model, data, pairs.pairs, _hp(p), settings, run_dir,
                      ctx.work_dir / MODELS_DIR / f"{p.model}.pt", device, amp=p.amp,
                      score_threshold=p.score_threshold)
    finish_run(run_dir, p.keep_checkpoints)
    ctx.record(index, {"seconds": out.seconds, "pairs_per_s": out.pairs_per_s, "device": str(device),
                       "resumed_from": out.resumed_from})
    ctx.write_chunk(index, {"steps": out.steps},
                    attrs={"model": p.model, "checksum": out.checksum, "last_losses": out.last_losses,
                           "pairs": pairs.counts, "steps_g1": p.steps_g1, "train_batch": p.batch})


def finalize(ctx: StageContext) -> dict[str, Any]:
    p: TrainPoseGANParams = ctx.params
    from reidaug.gen.common import run_record, timing_text

    arrays, attrs = next(ctx.iter_own_chunks())
    stats = ctx.own_stats()[0]
    c = attrs["pairs"]
    losses = attrs["last_losses"]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items()) if k in ("G1", "G2", "G", "D", "G_nn", "G2_l1"))
    stages = f" ({attrs['steps_g1']} G1 + {int(arrays['steps']) - attrs['steps_g1']} G2)" if p.model == "pg2" else ""
    report = [
        f"{p.model}: {int(arrays['steps'])} steps{stages} of {attrs['train_batch']} pairs"
        f"{timing_text(stats, 'pairs/s', 'pairs_per_s')}; last losses: {shown}",
        f"pairs: {c['pairs']} (of {c['candidate_pairs']}) from {c['identities_with_pairs']} of {c['identities']} train "
        f"identities; {c['usable_poses']} of {c['images']} train poses usable (>= {p.min_keypoints} keypoints above "
        f"{p.score_threshold}), {c['unusable_poses']} not; {c['same_pose_pairs_left_out']} same-pose pairs left out",
        f"generator: {MODELS_DIR}/{p.model}.pt (checksum {attrs['checksum'][:12]}); pairs: {PAIRS}; "
        f"sample grids and loss log: {TRAIN_DIR}/{p.model}/",
    ]
    return {"model": p.model, "checksum": attrs["checksum"], "steps": int(arrays["steps"]),
            "steps_g1": attrs["steps_g1"], "pairs": c, "last_losses": losses,
            **run_record(stats, "pairs_per_s"),
            "report": report}


SPEC = StageSpec(
    name="train-posegan", version=2,  # 2: torch threads pinned; timings and resume provenance out of the chunk
    description="pose-guided generator (PG2 or Deformable GAN) on same-identity train pairs, resumable",
    params=TrainPoseGANParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "keypoints": "extract-pose.keypoints"},
    outputs={"models": MODELS_DIR, "train": TRAIN_DIR, "pairs": PAIRS, "chunks": "chunks"},
)
