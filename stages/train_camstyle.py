"""Stage ``train-camstyle``: CamStyle's camera-style generators, trained on the train split.

Zhong et al., "Camera Style Adaptation for Person Re-identification" (CVPR 2018) train one
CycleGAN per pair of cameras (identity loss on); ``model: stargan`` trains one multi-domain
StarGAN for all cameras instead. One chunk per model (so camera pairs train in parallel on a
dask cluster); each trains in ``train/<model>/`` of the stage's folder with atomic checkpoints
every ``checkpoint_every`` steps, a JSON-lines loss log and a sample grid every
``sample_every`` steps. A killed run resumes from the last checkpoint with the same schedule
(see :mod:`reidaug.gen.camstyle`). The outputs are the generator weights (``models/*.pt``, one
file per model: what ``generate-camstyle`` reads), the logs and the grids; the full training
checkpoints are deleted when a model is done unless ``keep_checkpoints``.

Identity-preserving options (CycleGAN): ``residual`` (generators that start as the identity map) and
PTGAN's foreground loss (Wei et al., CVPR 2018), ``lambda_foreground`` on the person mask of each real
image — PG2's body mask of its keypoints, so ``inputs.keypoints: extract-pose.keypoints`` (no
segmentation network); the mask follows the random crop and flip of its image. And a
feature-similarity loss, ``lambda_feature``, against a frozen re-ID model of the real train images
(``inputs.reid_model: <train-reid>.model``; never the judge).

Dataset-to-dataset transfer (PTGAN, Wei et al., CVPR 2018; SPGAN, Deng et al., CVPR 2018): ``domains:
datasets`` trains one CycleGAN between two *datasets* instead of per camera pair: domain A is every train
image of ``inputs.dataset`` (the labelled source), domain B every train image of ``inputs.target`` (another
ingest, the unlabelled target: its labels are never read, and its query / gallery images never seen).
``generate-camstyle`` then renders the source's train split in the target's style, each fake keeping its
person. PTGAN's foreground loss takes the person masks of both (``inputs.keypoints`` for the source,
``inputs.target_keypoints`` for the target); SPGAN's similarity-preserving loss, ``lambda_similarity``, trains
a siamese net with the generators (see :mod:`reidaug.models.cyclegan`): it needs two datasets, since its
negative pairs assume the two domains hold different people (two cameras of one dataset do not).

Budget: the paper trains each CycleGAN for 50 epochs at 256 x 128 on a GPU; on a 2-core CPU,
use 128 x 64, ``ngf: 32`` and a few thousand iterations (see BENCHMARKS.md).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import GPUTrainParams, StageSpec
from reidaug.validation import MAX_SEED

MODELS_DIR = "models"
TRAIN_DIR = "train"


class TrainCamStyleParams(GPUTrainParams):
    """What to train and how; device, amp and the checkpoint / sample / log cadence come from
    :class:`GPUTrainParams`."""

    model: Literal["cyclegan", "stargan"] = Field(
        "cyclegan", description="cyclegan: one per camera pair; stargan: one for all")
    domains: Literal["cameras", "datasets"] = Field("cameras", description=(
        "cameras: CamStyle, the cameras of one dataset; datasets: PTGAN / SPGAN, one CycleGAN from the train "
        "split of inputs.dataset (labelled source) to that of inputs.target (unlabelled target)"))
    cameras: list[int] | None = Field(None, description="0-based train cameras to use (default: all)")
    image_height: int = Field(256, ge=16, le=1024, description="training size (CamStyle: 256 x 128)")
    image_width: int = Field(128, ge=16, le=1024)
    ngf: int = Field(64, ge=4, le=256, description="generator width")
    ndf: int = Field(64, ge=4, le=256, description="discriminator width")
    n_blocks: int = Field(9, ge=0, le=16, description="residual blocks (9 for 256 px, 6 for 128)")
    d_layers: int | None = Field(
        None, ge=1, le=7, description="discriminator depth (default: 3 PatchGAN / StarGAN: 6 or what fits)")
    lambda_cycle: float = Field(10.0, ge=0)
    lambda_identity: float = Field(0.5, ge=0, description="times lambda_cycle (CamStyle keeps it on)")
    lr: float = Field(2e-4, gt=0, le=10)
    residual: bool = Field(False, description=(
        "cyclegan only: each generator predicts a change of its input and starts as the identity map, "
        "so a fake keeps the person unless the losses ask otherwise"))
    lambda_foreground: float = Field(0.0, ge=0, le=1e6, description=(
        "cyclegan only: PTGAN's foreground loss, lambda * mean(((G(x) - x) * M)^2) on the person mask M of "
        "each real image (PG2's body mask of the keypoints bound as inputs.keypoints); 0: off"))
    lambda_feature: float = Field(0.0, ge=0, le=1e6, description=(
        "cyclegan only: feature-similarity loss, lambda * mean(1 - cos(f(G(x)), f(x))) with f the frozen re-ID "
        "model bound as inputs.reid_model (a train-reid on the real train images; never the judge); 0: off"))
    lambda_similarity: float = Field(0.0, ge=0, le=1e6, description=(
        "domains: datasets only: SPGAN's similarity-preserving loss (contrastive, through a siamese net trained "
        "with the generators); SPGAN: 2; 0: off"))
    similarity_margin: float = Field(2.0, gt=0, le=2.0, description=(
        "SPGAN's margin m for the negative pairs, on unit-length embeddings (distance at most 2; SPGAN: 2)"))
    foreground_score_threshold: float = Field(0.3, ge=0, le=1, description=(
        "a keypoint above it counts for the person mask (others are missing)"))
    pool_size: int = Field(50, ge=0)
    iterations: int = Field(20000, ge=1, le=100_000_000, description="training steps per model")
    train_batch: int = Field(1, ge=1, le=256, description="images per domain per step (CycleGAN: 1)")
    decay_start: float = Field(0.5, ge=0, le=1, description="fraction of steps at constant lr before linear decay")
    flip: bool = True
    jitter: float = Field(1.12, ge=1.0, le=2.0, description="load at jitter x size, random-crop (CycleGAN: 286->256)")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _sizes(self) -> "TrainCamStyleParams":
        if self.image_height % 4 or self.image_width % 4:
            raise ValueError(f"image_height and image_width must be multiples of 4 (the generator downsamples "
                             f"twice); found {self.image_height} x {self.image_width}. Fix: e.g. 256 x 128 or 128 x 64")
        if self.model == "cyclegan":
            layers = self.d_layers or 3
            need = 3 * 2 ** layers  # n stride-2 convs, then two 4x4 stride-1 convs: every side must stay >= 3
            shortest = min(self.image_height, self.image_width)
            if shortest < need:
                raise ValueError(
                    f"image {self.image_height} x {self.image_width} is too small for a PatchGAN with "
                    f"d_layers={layers}: each side must be at least 3 * 2^{layers} = {need}. Fix: a larger image, "
                    f"or fewer d_layers (d_layers: {max(1, (shortest // 3).bit_length() - 1)} fits)")
        elif self.d_layers is not None and (self.image_height % 2 ** self.d_layers
                                            or self.image_width % 2 ** self.d_layers):
            from reidaug.gen.camstyle import stargan_d_layers

            raise ValueError(f"StarGAN's discriminator halves the image d_layers={self.d_layers} times, so "
                             f"{self.image_height} x {self.image_width} must be divisible by {2 ** self.d_layers}. "
                             f"Fix: leave d_layers unset (the deepest that fits: "
                             f"{stargan_d_layers(self.image_height, self.image_width)})")
        if self.lambda_foreground == 0 and self.foreground_score_threshold != 0.3:
            raise ValueError("foreground_score_threshold only shapes the person masks of the foreground loss, and "
                             "lambda_foreground is 0. Fix: set lambda_foreground, or leave the threshold out")
        if self.lambda_feature > 0 and self.model != "cyclegan":
            raise ValueError("lambda_feature is a CycleGAN option (a loss on G(x) against x). Fix: model: "
                             "cyclegan, or lambda_feature: 0")
        if self.lambda_foreground > 0 and self.model != "cyclegan":
            raise ValueError("lambda_foreground is a CycleGAN option (PTGAN's loss on G(x) - x). Fix: model: "
                             "cyclegan, or lambda_foreground: 0")
        if self.residual and self.model != "cyclegan":
            raise ValueError("residual: true is a CycleGAN option (its generators map an image onto itself); "
                             "StarGAN's generator takes the target camera as extra input channels. Fix: model: "
                             "cyclegan, or drop residual")
        if self.domains == "datasets" and self.model != "cyclegan":
            raise ValueError("domains: datasets trains one CycleGAN between two datasets (PTGAN / SPGAN). Fix: "
                             "model: cyclegan")
        if self.domains == "datasets" and self.cameras is not None:
            raise ValueError(f"cameras {self.cameras} choose camera pairs, and domains: datasets translates whole "
                             "datasets (every train camera of each). Fix: drop cameras, or domains: cameras")
        if self.lambda_similarity > 0 and self.domains != "datasets":
            raise ValueError(
                "lambda_similarity is SPGAN's loss between two datasets: its negative pairs (a translated image "
                "against the other domain's real images) assume the domains hold different people, and two cameras "
                "of one dataset share theirs. Fix: domains: datasets with inputs.target bound, or lambda_similarity: 0")
        if self.similarity_margin != 2.0 and self.lambda_similarity == 0:
            raise ValueError("similarity_margin only shapes SPGAN's loss, and lambda_similarity is 0. Fix: set "
                             "lambda_similarity (SPGAN: 2), or leave the margin out")
        if self.cameras is not None and len(set(self.cameras)) < 2:
            raise ValueError(f"cameras must list at least two cameras to translate between; found {self.cameras}")
        return self


def _jobs(ctx: StageContext):
    from reidaug.errors import DataError
    from reidaug.gen.camstyle import plan_jobs

    p: TrainCamStyleParams = ctx.params
    if p.domains == "datasets":
        return plan_jobs(p.model, [], domains="datasets")
    cams = p.cameras
    if cams is None:
        cams = _train_cameras(ctx)
        if len(cams) < 2:
            raise DataError(f"the train split of {ctx.input('dataset').path} has cameras {cams}; "
                            "camera-style transfer needs at least two.")
    else:
        have = set(_train_cameras(ctx))
        missing = sorted(set(cams) - have)
        if missing:
            raise DataError(f"cameras {missing} (params.cameras) have no train images; the train "
                            f"split has cameras {sorted(have)} (0-based). Fix: list cameras from those.")
    return plan_jobs(p.model, cams)


def _train_cameras(ctx: StageContext) -> list[int]:
    cams: set[int] = set()
    for arrays, _ in ctx.input("dataset").iter_chunks():
        cams.update(int(c) for c, s in zip(arrays["camid"], arrays["split"]) if s == "train")
    return sorted(cams)


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError
    from reidaug.gen.common import pick_device

    p: TrainCamStyleParams = ctx.params
    pick_device(p.device, "params.device")  # no CUDA: say so before any work
    _check_domains(ctx)
    bound = ctx.inputs.get("keypoints") is not None
    if p.lambda_foreground > 0 and not bound:
        raise ConfigError(
            f"params.lambda_foreground: {p.lambda_foreground} needs the person mask of every train image, "
            "made from its keypoints, and inputs.keypoints is not bound. Fix: add an extract-pose stage on the same "
            "ingest and bind `inputs: {keypoints: extract-pose.keypoints}`, or set lambda_foreground: 0.")
    if bound and p.lambda_foreground == 0:
        raise ConfigError(
            "inputs.keypoints is bound, but only the foreground loss reads it and params.lambda_foreground is 0. "
            "Fix: set lambda_foreground (e.g. 1.0), or remove the keypoints input.")
    bound = ctx.inputs.get("reid_model") is not None
    if p.lambda_feature > 0 and not bound:
        raise ConfigError(
            f"params.lambda_feature: {p.lambda_feature} needs a frozen re-ID model, and inputs.reid_model is not "
            "bound. Fix: bind `inputs: {reid_model: <a train-reid stage on the real images>.model}` (the same "
            "ingest's train split; never the judge), or set lambda_feature: 0.")
    if bound and p.lambda_feature == 0:
        raise ConfigError(
            "inputs.reid_model is bound, but only the feature-similarity loss reads it and params.lambda_feature "
            "is 0. Fix: set lambda_feature (e.g. 1.0), or remove the reid_model input.")
    return len(_jobs(ctx))


def _check_domains(ctx: StageContext) -> None:
    """The inputs ``domains`` needs: a target (and its keypoints for the foreground loss) with
    ``datasets``, none with ``cameras``; the target must be another ingest output."""
    from reidaug.errors import ConfigError

    p: TrainCamStyleParams = ctx.params
    target, target_kp = ctx.inputs.get("target"), ctx.inputs.get("target_keypoints")
    if p.domains == "cameras":
        for name, h in (("target", target), ("target_keypoints", target_kp)):
            if h is not None:
                raise ConfigError(
                    f"inputs.{name} is bound ({h.stage}), but params.domains is cameras: the target dataset is for "
                    "dataset-to-dataset transfer. Fix: set domains: datasets (PTGAN / SPGAN), or remove the input.")
        return
    if target is None:
        raise ConfigError(
            "params.domains: datasets translates the train images of inputs.dataset (the labelled source) into the "
            "style of another dataset, and inputs.target is not bound. Fix: add an ingest stage for the target "
            "dataset (e.g. `ingest-target: {uses: ingest, params: {format: cuhk01, root: ...}}`) and bind "
            "`inputs: {target: ingest-target.dataset}`.")
    source = ctx.inputs["dataset"]
    if (target.key, target.output) == (source.key, source.output):
        raise ConfigError(
            f"inputs.dataset and inputs.target are the same ingest output ({source.stage}): a CycleGAN between a "
            "dataset and itself learns nothing. Fix: bind target to the other dataset's ingest stage, or use "
            "domains: cameras for camera styles within one dataset.")
    if p.lambda_foreground > 0 and target_kp is None:
        raise ConfigError(
            f"params.lambda_foreground: {p.lambda_foreground} with domains: datasets needs the person masks of both "
            "datasets (PTGAN's loss runs in both directions), and inputs.target_keypoints is not bound. Fix: add an "
            "extract-pose stage on the target's ingest and bind `target_keypoints: <that stage>.keypoints`, or set "
            "lambda_foreground: 0.")
    if target_kp is not None and p.lambda_foreground == 0:
        raise ConfigError(
            "inputs.target_keypoints is bound, but only the foreground loss reads it and params.lambda_foreground "
            "is 0. Fix: set lambda_foreground (e.g. 1.0), or remove the input.")


def _hp(p: TrainCamStyleParams) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("image_height", "image_width", "ngf", "ndf", "n_blocks", "d_layers",
                                       "lambda_cycle", "lambda_identity", "lr", "pool_size", "residual",
                                       "lambda_foreground", "lambda_feature", "lambda_similarity",
                                       "similarity_margin")}


def _settings(p: TrainCamStyleParams):
    from reidaug.gen.camstyle import TrainSettings

    return TrainSettings(iterations=p.iterations, train_batch=p.train_batch, decay_start=p.decay_start, flip=p.flip,
                         jitter=p.jitter, seed=p.seed, **p.cadence())


def run_chunk(ctx: StageContext, index: int) -> None:
    from reidaug.gen.camstyle import collect_train_images, load_size, reid_feature_net, train_model
    from reidaug.gen.common import pick_device
    from reidaug.gen.loop import finish_run

    p: TrainCamStyleParams = ctx.params
    job = _jobs(ctx)[index]
    device = pick_device(p.device, "params.device")
    feature_net = None
    if p.lambda_feature > 0:  # before the images are collected: a wrong model fails fast
        from reidaug.data.datasets import train_label_map
        from reidaug.errors import DataError

        path = ctx.input("reid_model").path
        feature_net = reid_feature_net(path, device)
        n_ids = len(train_label_map(ctx.input("dataset").iter_chunks()))
        if feature_net.num_classes != n_ids:
            raise DataError(f"the re-ID model of inputs.reid_model ({path}) has {feature_net.num_classes} "
                            f"identity classes, but this dataset's train split has {n_ids}: it was trained on "
                            "another dataset or split. Fix: bind a train-reid on an export of this same ingest "
                            "(export-hdf5 with sets: [real]: a model that never saw fakes)")
    size = load_size(p.image_height, p.image_width, p.jitter)

    def collect(dataset: str, keypoints: str, cameras) -> dict[int, Any]:
        poses = ctx.inputs.get(keypoints)
        return collect_train_images(ctx.input(dataset).iter_chunks(), cameras, size,
                                    keypoint_chunks=poses.iter_chunks() if poses is not None else None,
                                    score_threshold=p.foreground_score_threshold)

    if p.domains == "datasets":  # domain 0: every train image of the source, 1: of the target
        images = {0: _all_cameras(collect("dataset", "keypoints", None), ctx.input("dataset").path),
                  1: _all_cameras(collect("target", "target_keypoints", None), ctx.input("target").path)}
    else:
        images = collect("dataset", "keypoints", job.cameras)
    run_dir = ctx.work_dir / TRAIN_DIR / job.name
    out = train_model(job, images, _hp(p), _settings(p), run_dir, ctx.work_dir / MODELS_DIR / f"{job.name}.pt",
                      device, amp=p.amp, feature_net=feature_net)
    finish_run(run_dir, p.keep_checkpoints)
    ctx.record(index, {"seconds": out.seconds, "images_per_s": out.images_per_s, "device": str(device),
                       "resumed_from": out.resumed_from})
    no_mask = [int((images[c][..., 3] == 0).all(axis=(1, 2)).sum()) if images[c].shape[3] > 3 else 0
               for c in job.cameras]  # images whose keypoints gave no person mask (no foreground loss on them)
    ctx.write_chunk(index, {
        "cameras": list(job.cameras), "steps": out.steps, "num_images": [int(len(images[c])) for c in job.cameras],
        **({"num_without_mask": no_mask} if p.lambda_foreground > 0 else {}),
    }, attrs={"model": job.name, "checksum": out.checksum, "last_losses": out.last_losses})


def _all_cameras(by_cam: dict[int, Any], where) -> Any:
    import numpy as np

    from reidaug.errors import DataError

    if not by_cam:
        raise DataError(f"{where} has no train images: a dataset-to-dataset CycleGAN needs the train split of both "
                        "datasets. Fix: check the ingest's split options (the target's labels are not read, but its "
                        "train split is its domain's images)")
    return np.concatenate([by_cam[c] for c in sorted(by_cam)])


def finalize(ctx: StageContext) -> dict[str, Any]:
    from reidaug.gen.common import run_record, timing_text

    p: TrainCamStyleParams = ctx.params
    models, report = [], []
    for (arrays, attrs), stats in zip(ctx.iter_own_chunks(), ctx.own_stats()):
        cams = [int(c) for c in arrays["cameras"]]
        models.append({"name": attrs["model"], "cameras": cams, "checksum": attrs["checksum"],
                       "steps": int(arrays["steps"]), "num_images": [int(n) for n in arrays["num_images"]],
                       "last_losses": attrs["last_losses"],
                       **run_record(stats, "images_per_s")})
        losses = attrs["last_losses"]
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items())
                          if k in ("G", "D_A", "D_B", "D", "cycle_A", "G_rec"))
        timing = timing_text(stats, "img/s", "images_per_s")
        report.append(f"{attrs['model']}: {int(arrays['steps'])} steps{timing}; "
                      f"last losses: {shown}")
        if p.lambda_foreground > 0:
            fg = ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items()) if k.startswith("fg_"))
            missing = [int(n) for n in arrays["num_without_mask"]]
            report.append(f"  foreground loss: {fg}; images without a person mask (no confident keypoint, "
                          f"so no foreground loss): {sum(missing)} of {sum(int(n) for n in arrays['num_images'])}")
        if p.lambda_similarity > 0:
            report.append(f"  SPGAN similarity loss {losses.get('sim', float('nan')):.3f}; siamese embedding "
                          f"distance of a translation to its source {losses.get('sim_pos', float('nan')):.3f}, to the "
                          f"other dataset's images {losses.get('sim_neg', float('nan')):.3f} (margin "
                          f"{p.similarity_margin})")
        if p.lambda_feature > 0:
            report.append("  feature loss: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(losses.items())
                                                       if k.startswith("feat_")))
    report.append(f"generators: {MODELS_DIR}/ in this entry; sample grids and loss logs: {TRAIN_DIR}/<model>/")
    if p.domains == "datasets":
        report.insert(0, f"dataset-to-dataset: {ctx.inputs['dataset'].stage} (source, domain A) -> "
                         f"{ctx.inputs['target'].stage} (target, domain B)")
    return {"model": p.model, "domains": p.domains, "models": models, "report": report}


SPEC = StageSpec(
    # 2: torch threads pinned (threads, 2) instead of the machine's core count; timings out of the chunk
    name="train-camstyle", version=2,
    description="CamStyle: a CycleGAN per camera pair (or one StarGAN) on the train split, resumable",
    params=TrainCamStyleParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"dataset": "ingest.dataset", "keypoints": "", "reid_model": "", "target": "", "target_keypoints": ""},
    optional_inputs=frozenset({"keypoints", "reid_model", "target", "target_keypoints"}),
    unkeyed_if_unbound=frozenset({"keypoints", "reid_model", "target", "target_keypoints"}),
    outputs={"models": MODELS_DIR, "train": TRAIN_DIR, "chunks": "chunks"},
    # added in wave 2: the keys of earlier pipelines stay
    unkeyed_at_default=frozenset({"residual", "lambda_foreground", "lambda_feature", "foreground_score_threshold",
                                  "domains", "lambda_similarity", "similarity_margin"}),
)
