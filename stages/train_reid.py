"""Stage ``train-reid``: a re-ID model trained on an exported HDF5 file, cached like any output.

Runs :func:`reidaug.train.trainer.train` (the strong baseline's recipe, Luo et al., "Bag of
Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019; IDE and CamStyle's
real:fake batches as options) on the train split of ``data`` (``export-hdf5.hdf5``), in
``<partial>/run``: the trainer's atomic checkpoints live there, and a partial cache folder
survives a kill, so the same ``reidaug run`` resumes the training where its last checkpoint
was (``checkpoint_every`` epochs) and ends with the same weights. With ``evaluate`` it also
writes ``run/metrics.json`` and ``run/cmc.png`` (:func:`reidaug.eval.report.evaluate_run` on the
file's query and gallery splits) — or, with ``val_fraction`` > 0 (identities held out of
training, ``val_seed``), ``run/metrics_val.json`` on those identities and nothing on the test
split: the fair protocol chooses settings on validation and touches the test once. One chunk.

The parameters are :class:`~reidaug.train.config.TrainConfig` itself (a subclass: same names,
types, ranges, defaults and checks, so a bad combination fails when the YAML loads, at its
line) plus the evaluation options; its :data:`~reidaug.train.config.NONSEMANTIC` options
(workers, device, logging, checkpoint cadence) and ``eval_batch_size`` are left out of the key.
``pretrained`` may name a file, keyed by its content.

Cross-dataset use (PTGAN / SPGAN's protocol): ``inputs.eval_data`` (another export) evaluates on *that*
file's query / gallery instead of ``data``'s — train on one dataset, test on another ("direct transfer");
``inputs.init_model`` (a ``train-reid``'s model) starts from its weights, all but the identity classifier
— pre-train on one dataset, fine-tune on another. Randomness comes from the ``seed`` param,
which is in the key, so a stage and ``reidaug train --seed S`` with the same options train the
same model. Outputs: ``model`` (the run folder: ``model.pt``, ``config.json``,
``train_log.jsonl``, ``curves.png``, ``metrics.json``), ``weights`` (its ``model.pt``), for
:func:`reidaug.train.features.extract_features` / :func:`~reidaug.train.features.predict_probs`
(e.g. a teacher for soft labels).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, model_validator

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import DEFAULT_THREADS, FileParam, Params, StageSpec, numerics_of
from reidaug.train.config import LEGACY_VALUES, NONSEMANTIC, TrainConfig

log = logging.getLogger(__name__)

RUN = "run"


class TrainReidParams(TrainConfig, Params):
    # options added after caches existed, whose default is what ran before: keyed only when set
    UNKEYED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({
        "threads", "val_fraction", "val_seed", "crop_pad", "drop_path", "backbone_bn_momentum", "input_scale"})
    # label_smoothing's default (0.1) is new behaviour: keyed, except at 0, what ran before it
    UNKEYED_AT: ClassVar[Mapping[str, Any]] = LEGACY_VALUES

    pretrained: Literal["imagenet", "none"] | FileParam = Field(  # type: ignore[assignment]
        "imagenet", description="imagenet | none | an ImageNet state_dict file (keyed by content)")
    threads: int = Field(DEFAULT_THREADS, ge=1, le=256, description=(  # type: ignore[assignment]
        "torch CPU threads: in the key, since the weights differ by thread count"))

    def numerics(self) -> str | None:
        return numerics_of(self.device, self.amp)

    @model_validator(mode="after")
    def _validation_protocol(self) -> "TrainReidParams":
        if self.evaluate and self.val_fraction > 0 and self.eval_protocol == "cuhk03-sgs":
            raise ValueError("val_fraction evaluates on the held-out identities with the market protocol (every "
                             "held-out image against the others); eval_protocol cuhk03-sgs needs the file's "
                             "query/gallery split. Fix: eval_protocol: market, or val_fraction: 0")
        return self
    # evaluation (metrics.json in the run folder)
    evaluate: bool = Field(True, description="also evaluate on the file's query/gallery splits")
    eval_protocol: Literal["auto", "market", "cuhk03-sgs"] = "market"
    eval_flip: bool = Field(False, description="the main numbers with flip; the other setting is reported beside")
    eval_rerank: bool = False
    eval_metric: Literal["euclidean", "cosine"] = "cosine"
    eval_batch_size: int = Field(128, ge=1)  # not in the key

    def train_config(self) -> TrainConfig:
        """The trainer's config these parameters mean (the file of ``pretrained`` as its path)."""
        d = self.model_dump(include=set(TrainConfig.model_fields))
        d["pretrained"] = self.pretrained if isinstance(self.pretrained, str) else str(self.pretrained.path)
        return TrainConfig.model_validate(d)


def run_chunk(ctx: StageContext, index: int) -> None:
    import multiprocessing

    from reidaug.train.trainer import train

    p: TrainReidParams = ctx.params
    config = p.train_config()
    if config.num_workers and multiprocessing.current_process().daemon:
        # dask-distributed workers are daemonic and may not start processes
        log.info("running in a daemonic process (a dask worker); DataLoader workers off")
        config = config.model_copy(update={"num_workers": 0})
    data = ctx.input("data").path
    run = ctx.work_dir / RUN
    init = ctx.inputs.get("init_model")
    result = train(config, data, run, init_from=init.path if init is not None else None)
    eval_data = ctx.input("eval_data").path if ctx.inputs.get("eval_data") is not None else data
    arrays: dict[str, Any] = {
        "steps": result.steps, "final_loss": result.final_loss,
        "final_accuracy": result.final_accuracy, "num_classes": result.num_classes,
    }
    stats: dict[str, Any] = {"images_per_s": result.images_per_s, "train_wall_s": result.wall_s}
    if p.evaluate:
        from reidaug.eval.report import evaluate_run

        # a run that holds out identities is validated on them, and never looks at the test split:
        # settings chosen on validation, the test touched once, by a run without val_fraction
        split = "val" if p.val_fraction > 0 else "test"
        rec = evaluate_run(run, eval_data, protocol=p.eval_protocol, flip=p.eval_flip, metric=p.eval_metric,
                           rerank=p.eval_rerank, batch_size=p.eval_batch_size, device=p.device, split=split).record
        arrays.update({k: rec[k] for k in ("rank1", "mAP", "mINP", "num_queries") if k in rec})
        # the other flip setting's numbers stay in metrics.json (and the summary): the chunk layout,
        # and so the bytes behind the stage's existing keys, stay as they were
        stats["eval_s"] = rec["timings"]["total_s"]
        attrs = {"protocol": rec["protocol"], **({"split": split} if split == "val" else {})}  # (test: as before)
    else:
        attrs = {}
    ctx.record(index, stats)
    ctx.write_chunk(index, arrays, attrs)


def plan(ctx: StageContext) -> int:
    from reidaug.errors import ConfigError

    p: TrainReidParams = ctx.params
    other = ctx.inputs.get("eval_data")
    if other is not None and (not p.evaluate or p.val_fraction > 0):
        why = "evaluate is false" if not p.evaluate else (
            f"val_fraction {p.val_fraction} evaluates on identities held out of data's train split instead")
        raise ConfigError(f"inputs.eval_data ({other.stage}) is the file to test on, and {why}: it would never be "
                          "read. Fix: remove eval_data, or set evaluate: true and val_fraction: 0.")
    return 1


def finalize(ctx: StageContext) -> dict[str, Any]:
    arrays, attrs = next(ctx.iter_own_chunks())
    v = {k: a.item() for k, a in arrays.items()}
    speed = ctx.own_stats()[0].get("images_per_s")
    final = Path(str(ctx.work_dir).removesuffix(".partial")) / RUN  # where it lives once committed
    report = [
        f"model: {final / 'model.pt'}",
        f"trained {int(v['steps'])} steps" + (f" ({speed:.1f} images/s)" if speed is not None else "")
        + f", final loss {v['final_loss']:.4f}, "
        f"train accuracy {v['final_accuracy']:.3f}, {int(v['num_classes'])} identities",
    ]
    beside = None
    if "rank1" in v:
        import json

        where, file = ("validation", "metrics_val.json") if attrs.get("split") == "val" else ("test", "metrics.json")
        other = ctx.inputs.get("eval_data")
        if other is not None and where == "test":
            where = f"test on {other.stage}'s file"
        report.append(f"{where}, {attrs.get('protocol')}: rank-1 {v['rank1']:.1%}, mAP {v['mAP']:.1%} over "
                      f"{int(v['num_queries'])} queries ({final / file})")
        with open(ctx.work_dir / RUN / file, encoding="utf-8") as f:
            beside = json.load(f).get("flip_beside")
        if beside:
            report.append(f"  with flip {'on' if beside['flip'] else 'off'}: rank-1 {beside['rank1']:.1%}, "
                          f"mAP {beside['mAP']:.1%}")
    report.append(f"curves: {final / 'curves.png'}")
    return v | ctx.own_stats()[0] | {"report": report, "protocol": attrs.get("protocol"),
                                     "split": attrs.get("split", "test"), "flip_beside": beside}


SPEC = StageSpec(
    name="train-reid", version=2,  # 2: torch threads pinned (threads, 2); timings out of the chunk
    description="train a re-ID model (strong baseline / IDE) on the exported HDF5; optional evaluation",
    params=TrainReidParams, run_chunk=run_chunk, finalize=finalize, plan=plan,
    inputs={"data": "export-hdf5.hdf5", "eval_data": "", "init_model": ""},
    optional_inputs=frozenset({"eval_data", "init_model"}),
    unkeyed_if_unbound=frozenset({"eval_data", "init_model"}),
    outputs={"model": RUN, "weights": f"{RUN}/model.pt", "chunks": "chunks"},
    nonsemantic=NONSEMANTIC | {"eval_batch_size"},
)
