"""Stage ``train-reid``: a re-ID model trained on an exported HDF5 file, cached like any output.

Runs :func:`reidaug.train.trainer.train` (the strong baseline's recipe, Luo et al., "Bag of
Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019; IDE and CamStyle's
real:fake batches as options) on the train split of ``data`` (``export-hdf5.hdf5``), in
``<partial>/run``: the trainer's atomic checkpoints live there, and a partial cache folder
survives a kill, so the same ``reidaug run`` resumes the training where its last checkpoint
was (``checkpoint_every`` epochs) and ends with the same weights. With ``evaluate`` it also
writes ``run/metrics.json`` and ``run/cmc.png`` (:func:`reidaug.eval.report.evaluate_run` on the
file's query and gallery splits). One chunk.

The parameters are :class:`~reidaug.train.trainer.TrainConfig`'s fields, under the same names
(``train_batch_size`` is its ``batch_size``: any param called ``batch_size`` is left out of
keys), and the same defaults; the ones that do not change the weights (workers, device,
logging, checkpoint cadence) are left out of the key. Randomness comes from the ``seed``
param, which is in the key, so a stage and ``reidaug train --seed S`` with the same options
train the same model. Outputs: ``model`` (the run folder: ``model.pt``, ``config.json``,
``train_log.jsonl``, ``curves.png``, ``metrics.json``), ``weights`` (its ``model.pt``), for
:func:`reidaug.train.features.extract_features` / :func:`~reidaug.train.features.predict_probs`
(e.g. a teacher for soft labels).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import FileParam, Params, StageSpec

log = logging.getLogger(__name__)

RUN = "run"
# The trainer's names for these live in reidaug.train, which imports torch; this module must not.
Backbone = Literal["efficientnet_lite0", "resnet18", "resnet50", "tiny"]


class TrainReidParams(Params):
    # model
    backbone: Backbone = Field("efficientnet_lite0", description="efficientnet_lite0 has ImageNet weights installed")
    pretrained: Literal["imagenet", "none"] | FileParam = Field(
        "imagenet", description="imagenet | none | an ImageNet state_dict file (keyed by content)")
    last_stride: int = Field(1, ge=1, le=2)
    head: Literal["bnneck", "ide", "triplet"] = "bnneck"
    bottleneck: Optional[Literal["bn", "fc1024", "none"]] = Field(None, description="None: the head's default")
    dropout: float = Field(0.5, ge=0, lt=1)
    # loss
    loss: Literal["both", "ide", "triplet"] = "both"
    id_weight: float = Field(1.0, ge=0)
    triplet_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    soft_margin: bool = False
    # input and batches
    height: int = Field(256, ge=8, le=2048)
    width: int = Field(128, ge=8, le=2048)
    sampler: Literal["pk", "realfake", "random"] = "pk"
    p: int = Field(16, ge=1, description="pk: identities per batch")
    k: int = Field(4, ge=1, description="pk: images per identity")
    train_batch_size: int = Field(64, ge=1, description="realfake / random: images per batch (TrainConfig.batch_size)")
    real_per_batch: int = Field(48, ge=1)
    fake_per_batch: int = Field(16, ge=0)
    sources: Optional[list[str]] = Field(None, description="train on these image sources only (e.g. [real])")
    random_erasing: bool = False
    # optimisation
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(3.5e-4, ge=0)
    backbone_lr_mult: float = Field(1.0, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0)
    warmup_epochs: float = Field(10.0, ge=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [40, 70])
    gamma: float = Field(0.1, gt=0, le=1)
    epochs: int = Field(120, ge=1)
    seed: int = Field(0, ge=0)
    amp: bool = Field(False, description="mixed precision (CUDA only)")
    # evaluation (metrics.json in the run folder)
    evaluate: bool = Field(True, description="also evaluate on the file's query/gallery splits")
    eval_protocol: Literal["auto", "market", "cuhk03-sgs"] = "auto"
    eval_flip: bool = True
    eval_rerank: bool = False
    eval_metric: Literal["euclidean", "cosine"] = "euclidean"
    # execution: not in the key
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes")
    worker_start: Literal["auto", "fork", "forkserver", "spawn"] = "auto"
    deterministic: bool = False
    checkpoint_every: int = Field(1, ge=1)
    checkpoint_unit: Literal["epoch", "step"] = "epoch"
    log_every: int = Field(20, ge=1)
    keep_checkpoint: bool = False
    eval_batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _combinations(self) -> "TrainReidParams":
        # The trainer checks these too (at planning); here they fail when the YAML loads, with
        # its location, before any upstream stage runs.
        if self.head == "triplet" and self.loss != "triplet":
            raise ValueError(f"loss {self.loss!r} needs a classifier, and head 'triplet' has none: use head "
                             "bnneck (or ide), or loss triplet")
        if self.sampler == "realfake" and self.real_per_batch + self.fake_per_batch != self.train_batch_size:
            raise ValueError(f"sampler realfake needs real_per_batch + fake_per_batch == train_batch_size; found "
                             f"{self.real_per_batch} + {self.fake_per_batch} vs {self.train_batch_size}")
        if self.milestones != sorted(self.milestones):
            raise ValueError(f"milestones must increase; found {self.milestones}")
        return self

    def train_config(self) -> Any:
        """The :class:`~reidaug.train.trainer.TrainConfig` these parameters mean (imports torch)."""
        from reidaug.train.trainer import TrainConfig

        d = self.model_dump(exclude={"train_batch_size", "pretrained", "evaluate", "eval_protocol", "eval_flip",
                                     "eval_rerank", "eval_metric", "eval_batch_size"})
        d["batch_size"] = self.train_batch_size
        d["pretrained"] = self.pretrained if isinstance(self.pretrained, str) else str(self.pretrained.path)
        return TrainConfig.from_user(d)


NONSEMANTIC = frozenset({"device", "num_workers", "worker_start", "deterministic", "checkpoint_every",
                         "checkpoint_unit", "log_every", "keep_checkpoint", "eval_batch_size"})


def plan(ctx: StageContext) -> int:
    ctx.params.train_config()  # a bad combination (head triplet + loss both ...) fails before any work
    return 1


def run_chunk(ctx: StageContext, index: int) -> None:
    import multiprocessing

    from reidaug.train.trainer import train

    p: TrainReidParams = ctx.params
    config = p.train_config()
    if config.num_workers and multiprocessing.current_process().daemon:
        # dask-distributed workers are daemonic and may not start processes
        log.info("train-reid: running in a daemonic process (a dask worker); DataLoader workers off")
        config = type(config).from_dict(config.to_dict() | {"num_workers": 0})
    data = ctx.input("data").path
    run = ctx.work_dir / RUN
    result = train(config, data, run)
    arrays: dict[str, Any] = {
        "steps": result.steps, "images_per_s": result.images_per_s, "final_loss": result.final_loss,
        "final_accuracy": result.final_accuracy, "num_classes": result.num_classes, "train_wall_s": result.wall_s,
    }
    if p.evaluate:
        from reidaug.eval.report import evaluate_run

        rec = evaluate_run(run, data, protocol=p.eval_protocol, flip=p.eval_flip, metric=p.eval_metric,
                           rerank=p.eval_rerank, batch_size=p.eval_batch_size, device=p.device).record
        arrays.update({k: rec[k] for k in ("rank1", "mAP", "mINP", "num_queries") if k in rec})
        arrays["eval_s"] = rec["timings"]["total_s"]
        attrs = {"protocol": rec["protocol"]}
    else:
        attrs = {}
    ctx.write_chunk(index, arrays, attrs)


def finalize(ctx: StageContext) -> dict[str, Any]:
    arrays, attrs = next(ctx.iter_own_chunks())
    v = {k: a.item() for k, a in arrays.items()}
    final = Path(str(ctx.work_dir).removesuffix(".partial")) / RUN  # where it lives once committed
    report = [
        f"model: {final / 'model.pt'}",
        f"trained {int(v['steps'])} steps ({v['images_per_s']:.1f} images/s), final loss {v['final_loss']:.4f}, "
        f"train accuracy {v['final_accuracy']:.3f}, {int(v['num_classes'])} identities",
    ]
    if "rank1" in v:
        report.append(f"{attrs.get('protocol')}: rank-1 {v['rank1']:.1%}, mAP {v['mAP']:.1%} over "
                      f"{int(v['num_queries'])} queries ({final / 'metrics.json'})")
    report.append(f"curves: {final / 'curves.png'}")
    return v | {"report": report, "protocol": attrs.get("protocol")}


SPEC = StageSpec(
    name="train-reid", version=1,
    description="train a re-ID model (strong baseline / IDE) on the exported HDF5; optional evaluation",
    params=TrainReidParams, plan=plan, run_chunk=run_chunk, finalize=finalize,
    inputs={"data": "export-hdf5.hdf5"},
    outputs={"model": RUN, "weights": f"{RUN}/model.pt", "chunks": "chunks"},
    nonsemantic=NONSEMANTIC,
)
