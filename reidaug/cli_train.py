"""``reidaug train`` and ``reidaug evaluate``: the re-ID trainer and its evaluation from the shell.

:mod:`reidaug.cli` adds both commands to its group, which prints any ``ReidAugError`` as one
line with a non-zero exit code. Heavy imports (torch) happen inside the commands, so that
``reidaug --help`` and the pipeline commands stay fast.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from reidaug.errors import ConfigError, did_you_mean
from reidaug.pipeline.config import parse_set_value
from reidaug.train.config import TrainConfig

log = logging.getLogger(__name__)

#: The common training options as flags (``--workers 0`` is ``--set num_workers=0``); every
#: other option of :class:`~reidaug.train.config.TrainConfig` is set with ``--set`` or ``--config``.
FLAGS = {"backbone": "backbone", "pretrained": "pretrained", "epochs": "epochs", "seed": "seed",
         "height": "height", "width": "width", "last-stride": "last_stride", "bottleneck": "bottleneck",
         "sampler": "sampler", "loss": "loss", "label-smoothing": "label_smoothing", "pad": "crop_pad",
         "val-fraction": "val_fraction", "device": "device", "workers": "num_workers", "threads": "threads"}


def _option_help(name: str) -> str:
    info = TrainConfig.model_fields[name]
    default = info.default
    if default is None or isinstance(default, (bool, tuple)):
        default = json.dumps(default)  # as YAML writes it: null, true, [40, 70]
    return f"{info.description}; default {default}" if info.description else f"default {default}"


def _with_flags(command: Any) -> Any:
    for flag, name in reversed(FLAGS.items()):
        command = click.option(f"--{flag}", name, metavar="VALUE",
                               help=f"{_option_help(name)}. Same as --set {name}=VALUE.")(command)
    return command


def _options_epilog() -> str:
    lines = [f"  {name:<17} {_option_help(name)}" for name in TrainConfig.model_fields]
    return "\b\nTraining options (--set NAME=VALUE, or NAME: VALUE in --config):\n" + "\n".join(lines)


def _read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping of TrainConfig options; a run's ``config.json`` works too."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read training config {path}: {exc.strerror or exc}. Fix: check the --config path."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if isinstance(data, dict) and set(data) == {"train", "resolved"} and isinstance(data["train"], dict):
        data = data["train"]  # the config.json of an earlier run: train again with its options
    if not isinstance(data, dict):
        raise ConfigError(
            f"training config {path} must be a mapping of options (e.g. `epochs: 60`); found a "
            f"{type(data).__name__}."
        )
    return data


def train_config(config_file: str | None, flags: dict[str, str | None], sets: tuple[str, ...]) -> TrainConfig:
    """The options of ``--config``, then the flags, then ``--set`` (later wins), validated once.

    Flag and ``--set`` values are read as YAML, exactly as ``reidaug run --set`` reads them."""
    merged = _read_config_file(Path(config_file)) if config_file else {}
    for name, raw in flags.items():
        if raw is not None:
            merged[name] = parse_set_value(f"{name}={raw}", raw)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE, e.g. --set warmup_epochs=2 or "
                              "--set milestones=[20,30].")
        merged[key.strip()] = parse_set_value(item, raw)
    return TrainConfig.from_user(merged)


def _check_out_dir(out: Path) -> None:
    """Refuse an --out that is a file, or a non-empty folder that holds no reidaug run."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file. Fix: pass a folder for the run (it is created if missing).")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise ConfigError(
            f"--out {out} is a non-empty folder that holds no reidaug run (no config.json). "
            "Fix: pass a new or empty folder, or the folder of the run to resume."
        )


def _check_pretrained_file(path: Path) -> None:
    """A --pretrained PATH must exist and hold a state_dict; checked before any folder is made."""
    from reidaug.train.backbones import load_state_file

    load_state_file(path)  # ConfigError (missing) / DataError (not a state_dict, unreadable)


@click.command("train", epilog=_options_epilog())
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", "-o", "out", required=True, type=click.Path(), metavar="RUN_DIR",
              help="Run folder: model.pt, config.json, train_log.jsonl, curves.png. The same command "
                   "again resumes an interrupted run (or skips a finished one).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="YAML mapping of training options (below); a run's config.json works too.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Any training option (below), e.g. --set warmup_epochs=2 --set milestones=[20,30] "
                   "(repeatable; wins over --config and the flags).")
@_with_flags
def train_command(data: str, out: str, config_file: str | None, sets: tuple[str, ...], **flags: str | None) -> None:
    """Train a re-ID model on the train split of DATA (a reidaug HDF5 file).

    Default: the strong baseline (BENCHMARKS.md, "Efficacy campaign"): EfficientNet-Lite0 with
    its bundled ImageNet weights, BNNeck, soft cross-entropy with label smoothing 0.1, random
    batches of 64, flip + pad-crop + random erasing, Adam 3.5e-4, warm-up then cosine, 256x128,
    120 epochs.
    CUHK01 on a CPU: --height 128 --width 64 --epochs 12 --set warmup_epochs=1. reidaug never
    downloads weights, so ResNet-50 needs --pretrained PATH or --pretrained none.
    """
    from reidaug.data.h5format import open_h5
    from reidaug.train.backbones import IMAGENET, is_random_init, pretrained_weights_path
    from reidaug.train.trainer import train

    config = train_config(config_file, flags, sets)

    data_path = Path(data)
    with open_h5(data_path) as f:  # missing / not HDF5 / not reidaug / damaged: one DataError line
        if "train" not in f.splits:
            raise ConfigError(f"{data_path} has no train split (splits: {', '.join(f.splits)}). "
                              "Fix: train on a file exported with its train split.")
    pretrained_weights_path(config.backbone, config.pretrained)
    if not is_random_init(config.pretrained) and str(config.pretrained).lower() != IMAGENET:
        _check_pretrained_file(Path(config.pretrained))
    run_dir = Path(out)
    _check_out_dir(run_dir)

    weights = "random init" if is_random_init(config.pretrained) else config.pretrained
    click.echo(f"training {config.backbone} ({weights}"
               f", head {config.head}, loss {config.loss}) on {data_path} for {config.epochs} epochs at "
               f"{config.height}x{config.width}; run folder {run_dir}")
    result = train(config, data_path, run_dir)
    if result.skipped:
        click.echo(f"{run_dir} already holds this finished run; didn't change, skipping")
    else:
        resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step is not None else ""
        click.echo(f"trained {result.steps} steps in {result.wall_s:.1f} s ({result.images_per_s:.1f} images/s on "
                   f"{result.device}{resumed}); final loss {result.final_loss:.4f}, train accuracy "
                   f"{result.final_accuracy:.3f}")
    for label, path in (("run folder", result.run_dir), ("model", result.model_path), ("config", result.config_path),
                        ("log", result.log_path), ("plot", result.plot_path)):
        click.echo(f"  {label:<11} {path}")
    click.echo(f"evaluate it:  reidaug evaluate {result.run_dir}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), metavar="DATA.h5",
              help="HDF5 file with query and gallery splits (default: the file the run was trained on).")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False),
              help="Folder for metrics.json and cmc.png (default: RUN_DIR).")
@click.option("--protocol", default="market", show_default=True,
              help="auto, market or cuhk03-sgs. auto: cuhk03-sgs (single-shot CMC) when every query comes from "
                   "one camera and every gallery image from another (CUHK01), else market.")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Average each feature with the horizontally flipped image's (the other setting is "
                   "reported beside).")
@click.option("--flip-fusion", type=click.Choice(["mean", "l2sum"]), default="mean", show_default=True,
              help="How the flipped image's feature joins the image's: mean of the raw features, or sum of "
                   "the L2-normalised ones.")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017).")
@click.option("--k1", default=20, show_default=True, type=click.IntRange(1), help="Re-ranking k1.")
@click.option("--k2", default=6, show_default=True, type=click.IntRange(1), help="Re-ranking k2.")
@click.option("--lambda", "lambda_value", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Re-ranking weight of the original distance.")
@click.option("--metric", default="cosine", show_default=True, help="cosine (the strong baseline's) or euclidean.")
@click.option("--max-rank", default=50, show_default=True, type=click.IntRange(1), help="Length of the CMC curve.")
@click.option("--block-size", type=click.IntRange(1), default=None,
              help="Query rows per distance block (default: auto, about 1 GiB of working memory).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="DataLoader worker processes.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test: the query/gallery splits; val: the train identities the run held out (val_fraction), "
                   "to metrics_val.json.")
@click.option("--on-disk/--in-memory", "features_on_disk", default=None,
              help="Write the features to disk and rank them block by block, so memory does not grow with the test "
                   "set (default: on disk when query + gallery features exceed 128 MiB). Same metrics either way.")
def evaluate_command(run_dir: str, data: str | None, out: str | None, protocol: str, flip: bool, flip_fusion: str,
                     rerank: bool, k1: int, k2: int, lambda_value: float, metric: str, max_rank: int,
                     block_size: int | None, batch_size: int, device: str, workers: int, split: str,
                     features_on_disk: bool | None) -> None:
    """Evaluate the model of RUN_DIR on the query and gallery splits of a reidaug HDF5 file.

    Writes metrics.json (rank-1/5/10, mAP, mINP, CMC, protocol, the data's pipeline_key, the
    model's sha256) and cmc.png, and prints a short table.
    """
    from reidaug.eval.report import evaluate_run

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f'unknown device "{device}".{did_you_mean(device, ("auto", "cpu", "cuda"))} '
                          "Known devices: auto, cpu, cuda.")
    report = evaluate_run(run_dir, data, out, protocol=protocol, flip=flip, flip_fusion=flip_fusion, metric=metric,
                          rerank=rerank, k1=k1, k2=k2, lambda_value=lambda_value, max_rank=max_rank,
                          block_size=block_size, batch_size=batch_size, device=device, num_workers=workers,
                          split=split, features_on_disk=features_on_disk)
    r = report.record
    click.echo(f"{r['model']['backbone']} model of {run_dir} on {r['data']['path']}")
    click.echo(f"protocol {r['protocol']} ({r['protocol_reason']}); metric {r['metric']}, flip "
               f"{'on' if r['flip'] else 'off'}, re-ranking "
               f"{'k1=%d k2=%d lambda=%g' % (k1, k2, lambda_value) if rerank else 'off'}")
    header = ("queries", "gallery", "rank-1", "rank-5", "rank-10", "mAP", "mINP")
    values = (str(r["num_queries"]), str(r["num_gallery_images"]),
              *(f"{100 * r[k]:.1f}" if k in r else "-" for k in ("rank1", "rank5", "rank10", "mAP", "mINP")))
    widths = [max(len(h), len(v)) for h, v in zip(header, values)]
    click.echo("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
    click.echo("  " + "  ".join(v.rjust(w) for v, w in zip(values, widths)))
    if r.get("flip_beside"):
        b = r["flip_beside"]
        click.echo(f"  with flip {'on' if b['flip'] else 'off'}: rank-1 {100 * b['rank1']:.1f}, "
                   f"mAP {100 * b['mAP']:.1f}")
    if r["num_skipped"]:
        click.echo(f"  ({r['num_skipped']} queries without a valid gallery match were left out)")
    t = r["timings"]
    click.echo(f"features {t['features_s']:.1f} s, evaluation {t['evaluate_s']:.1f} s; wrote {report.metrics_path} "
               f"and {report.plot_path}")
