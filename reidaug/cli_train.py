"""``reidaug train`` and ``reidaug evaluate``: the re-ID trainer and its evaluation from the shell.

:mod:`reidaug.cli` adds both commands to its group, which prints any ``ReidAugError`` as one
line with a non-zero exit code. Heavy imports (torch) happen inside the commands, so that
``reidaug --help`` and the pipeline commands stay fast.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from reidaug.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)

#: CLI option (click parameter name) -> TrainConfig field, for the options given explicitly.
_TRAIN_OPTIONS = {
    "backbone": "backbone", "pretrained": "pretrained", "head": "head", "loss": "loss",
    "height": "height", "width": "width", "sampler": "sampler", "p": "p", "k": "k",
    "batch_size": "batch_size", "real_per_batch": "real_per_batch", "fake_per_batch": "fake_per_batch",
    "epochs": "epochs", "lr": "lr", "optimizer": "optimizer", "schedule": "schedule",
    "random_erasing": "random_erasing", "seed": "seed", "device": "device", "amp": "amp",
    "workers": "num_workers",
}


def _read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping of TrainConfig options; a run's ``config.json`` works too."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read training config {path}: {exc.strerror or exc}. Fix: check the --config path.") from None
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


def _parse_sets(sets: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_epochs=2 or --set milestones=[20,30].")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw  # a plain string; the option's type check says what it should be
    return out


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


@click.command("train")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", "-o", "out", required=True, type=click.Path(), metavar="RUN_DIR",
              help="Run folder: model.pt, config.json, train_log.jsonl, curves.png. The same command "
                   "again resumes an interrupted run (or skips a finished one).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="YAML mapping of training options (TrainConfig fields); a run's config.json works too.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any training option, e.g. --set warmup_epochs=2 --set milestones=[20,30] (repeatable; "
                   "wins over --config and the options below).")
@click.option("--backbone", help="efficientnet_lite0 (default: ImageNet weights ship with its pip package), "
                                 "resnet18, resnet50, tiny (tests).")
@click.option("--pretrained", metavar="imagenet|none|PATH",
              help="imagenet (default; efficientnet_lite0 only), none (random init), or a state_dict file "
                   "(e.g. torchvision's resnet50-11ad3fa6.pth).")
@click.option("--head", help="bnneck (default, Luo et al. 2019), ide, triplet.")
@click.option("--loss", help="both (default: ID + triplet), ide, triplet.")
@click.option("--height", type=int, help="Input height (default 256).")
@click.option("--width", type=int, help="Input width (default 128).")
@click.option("--sampler", help="pk (default: P ids x K images), realfake (M real : N fake), random.")
@click.option("--p", "p", type=int, help="Identities per batch, pk sampler (default 16).")
@click.option("--k", "k", type=int, help="Images per identity, pk sampler (default 4).")
@click.option("--batch-size", type=int, help="Batch size of the realfake and random samplers (default 64).")
@click.option("--real-per-batch", type=int, help="Real images per batch, realfake sampler (default 48).")
@click.option("--fake-per-batch", type=int, help="Generated images per batch, realfake sampler (default 16).")
@click.option("--epochs", type=int, help="Epochs (default 120).")
@click.option("--lr", type=float, help="Base learning rate (default 3.5e-4).")
@click.option("--optimizer", help="adam (default), sgd.")
@click.option("--schedule", help="step (default: x0.1 at the milestones), cosine.")
@click.option("--random-erasing/--no-random-erasing", default=None, help="Random erasing (default off).")
@click.option("--seed", type=int, help="Seed of batches, augmentation and init (default 0).")
@click.option("--device", help="auto (default), cpu, cuda.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA (default off).")
@click.option("--workers", type=int, help="DataLoader worker processes (default 2).")
def train_command(data: str, out: str, config_file: str | None, sets: tuple[str, ...], **options: Any) -> None:
    """Train a re-ID model on the train split of DATA (a reidaug HDF5 file).

    Default: EfficientNet-Lite0 with its bundled ImageNet weights, BNNeck, ID + triplet loss,
    P x K batches, 256x128, Adam with warm-up (the strong baseline's recipe; reidaug never
    downloads weights, so ResNet-50 needs --pretrained PATH or --pretrained none).
    """
    from reidaug.data.h5format import open_h5
    from reidaug.train.backbones import IMAGENET, is_random_init, pretrained_weights_path
    from reidaug.train.trainer import TrainConfig, train

    merged: dict[str, Any] = {}
    if config_file:
        merged.update(_read_config_file(Path(config_file)))
    for name, field in _TRAIN_OPTIONS.items():
        if options.get(name) is not None:
            merged[field] = options[name]
    merged.update(_parse_sets(sets))
    config = TrainConfig.from_user(merged)

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

    click.echo(f"training {config.backbone} ({'random init' if is_random_init(config.pretrained) else config.pretrained}"
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
    click.echo(f"  run folder  {result.run_dir}")
    click.echo(f"  model       {result.model_path}")
    click.echo(f"  config      {result.config_path}")
    click.echo(f"  log         {result.log_path}")
    click.echo(f"  plot        {result.plot_path}")
    click.echo(f"evaluate it:  reidaug evaluate {result.run_dir}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), metavar="DATA.h5",
              help="HDF5 file with query and gallery splits (default: the file the run was trained on).")
@click.option("--out", "-o", "out", type=click.Path(file_okay=False),
              help="Folder for metrics.json and cmc.png (default: RUN_DIR).")
@click.option("--protocol", default="auto", show_default=True,
              help="auto, market or cuhk03-sgs. auto: cuhk03-sgs (single-shot CMC) when every query comes from "
                   "one camera and every gallery image from another (CUHK01), else market.")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Average each feature with the horizontally flipped image's.")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (Zhong et al. 2017).")
@click.option("--k1", default=20, show_default=True, type=click.IntRange(1), help="Re-ranking k1.")
@click.option("--k2", default=6, show_default=True, type=click.IntRange(1), help="Re-ranking k2.")
@click.option("--lambda", "lambda_value", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Re-ranking weight of the original distance.")
@click.option("--metric", default="euclidean", show_default=True, help="euclidean or cosine.")
@click.option("--max-rank", default=50, show_default=True, type=click.IntRange(1), help="Length of the CMC curve.")
@click.option("--block-size", type=click.IntRange(1), default=None,
              help="Query rows per distance block (default: auto, about 1 GiB of working memory).")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="DataLoader worker processes.")
def evaluate_command(run_dir: str, data: str | None, out: str | None, protocol: str, flip: bool, rerank: bool,
                     k1: int, k2: int, lambda_value: float, metric: str, max_rank: int, block_size: int | None,
                     batch_size: int, device: str, workers: int) -> None:
    """Evaluate the model of RUN_DIR on the query and gallery splits of a reidaug HDF5 file.

    Writes metrics.json (rank-1/5/10, mAP, mINP, CMC, protocol, the data's pipeline_key, the
    model's sha256) and cmc.png, and prints a short table.
    """
    from reidaug.eval.report import evaluate_run

    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f'unknown device "{device}".{did_you_mean(device, ("auto", "cpu", "cuda"))} '
                          "Known devices: auto, cpu, cuda.")
    report = evaluate_run(run_dir, data, out, protocol=protocol, flip=flip, metric=metric, rerank=rerank,
                          k1=k1, k2=k2, lambda_value=lambda_value, max_rank=max_rank, block_size=block_size,
                          batch_size=batch_size, device=device, num_workers=workers)
    r = report.record
    click.echo(f"{r['model']['backbone']} model of {run_dir} on {r['data']['path']}")
    click.echo(f"protocol {r['protocol']} ({r['protocol_reason']}); metric {r['metric']}, flip "
               f"{'on' if r['flip'] else 'off'}, re-ranking {'k1=%d k2=%d lambda=%g' % (k1, k2, lambda_value) if rerank else 'off'}")
    header = ("queries", "gallery", "rank-1", "rank-5", "rank-10", "mAP", "mINP")
    values = (str(r["num_queries"]), str(r["num_gallery_images"]),
              *(f"{100 * r[k]:.1f}" if k in r else "-" for k in ("rank1", "rank5", "rank10", "mAP", "mINP")))
    widths = [max(len(h), len(v)) for h, v in zip(header, values)]
    click.echo("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
    click.echo("  " + "  ".join(v.rjust(w) for v, w in zip(values, widths)))
    if r["num_skipped"]:
        click.echo(f"  ({r['num_skipped']} queries without a valid gallery match were left out)")
    t = r["timings"]
    click.echo(f"features {t['features_s']:.1f} s, evaluation {t['evaluate_s']:.1f} s; wrote {report.metrics_path} "
               f"and {report.plot_path}")
