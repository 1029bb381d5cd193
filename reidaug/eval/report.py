"""Evaluate a trained run on a reidaug HDF5 file: features, metrics, ``metrics.json``, ``cmc.png``.

:func:`evaluate_run` is what ``reidaug evaluate`` and the ``train-reid`` stage run: the model's
test features of the file's query and gallery splits (:func:`reidaug.train.features.extract_features`,
optionally flip-averaged), then :func:`reidaug.eval.metrics.evaluate` in bounded-memory query
blocks (optionally with k-reciprocal re-ranking, Zhong et al. CVPR 2017: k1 20, k2 6, lambda 0.3).

Protocol ``auto`` (the default) decides from the test split's cameras, as the field does:

- a *camera-pair* test set, every query from one camera and every gallery image from another
  (CUHK01 as reidaug parses it, VIPeR, PRID): ``cuhk03-sgs``, a single-shot gallery (one image
  per identity drawn at random, CMC averaged over 10 draws). Papers on CUHK01 report CMC in
  this single-shot setting (e.g. the 486-test-identity protocol); mAP and mINP are computed on
  the full gallery, as torchreid's ``eval_cuhk03`` does.
- anything else (Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP, whose query and gallery share
  cameras): ``market``, the multi-shot protocol with same-camera matches removed (Zheng et al.,
  ICCV 2015).

``metrics.json`` holds rank-1/5/10, mAP, mINP, the query counts, the full CMC, the protocol
and why it was chosen, the metric, flip and re-ranking settings, the data file (path,
``pipeline_key``, whether it is the file the model was trained on) and the model (sha256 of
``model.pt``; its path, just ``model.pt`` when it lies beside metrics.json, so a run folder can
move), and timings. Both files are written atomically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from reidaug import __version__
from reidaug.errors import ConfigError, DataError, unknown_name
from reidaug.io.checkpoint import file_sha256

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CMC_PLOT = "cmc.png"
PROTOCOL_CHOICES = ("auto", "market", "cuhk03-sgs")
#: ``features_on_disk=None`` keeps query + gallery features in memory up to this size, and writes
#: larger sets to disk and ranks them block by block (flat memory; reidaug.eval.metrics).
FEATURES_IN_MEMORY_BYTES = 128 << 20


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """What :func:`evaluate_run` produced; ``record`` is the content of ``metrics.json``."""

    record: dict[str, Any]
    metrics_path: Path
    plot_path: Path


def choose_protocol(q_camids: np.ndarray, g_camids: np.ndarray) -> tuple[str, str]:
    """``(protocol, why)`` for protocol ``auto``; see the module docstring."""
    qc = sorted(int(c) for c in np.unique(q_camids))
    gc = sorted(int(c) for c in np.unique(g_camids))
    if len(qc) == 1 and len(gc) == 1 and qc != gc:
        return "cuhk03-sgs", (
            f"auto: camera-pair test set (every query from camera {qc[0]}, every gallery image from "
            f"camera {gc[0]}, as CUHK01): single-shot CMC, as papers on such sets report"
        )
    return "market", f"auto: query cameras {qc} and gallery cameras {gc} overlap (Market-1501 style): multi-shot"


def training_data_of(run_dir: Path) -> Path | None:
    """The HDF5 file a run was trained on (from its ``config.json``), or None if unknown."""
    try:
        data = json.loads((run_dir / "config.json").read_text())["resolved"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(data)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data_path: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    protocol: str = "market",
    flip: bool = False,
    flip_fusion: str = "mean",
    metric: str = "cosine",
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_rank: int = 50,
    block_size: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
    num_workers: int = 0,
    split: str = "test",
    flip_beside: bool = True,
    features_on_disk: bool | None = None,
) -> EvalReport:
    """Evaluate the model of ``run_dir`` on the query/gallery splits of ``data_path``
    (``split="test"``), or on the train identities its training held out (``split="val"``,
    ``val_fraction``): every real image of them a query against all the others, market protocol
    (the query's own camera's images of its person left out), so settings are chosen without
    touching the test split.

    The defaults are the strong baseline's (Luo et al. 2019): market protocol, cosine distance,
    no flip; ``flip_beside`` also records the other flip setting's rank-1 / mAP
    (``record["flip_beside"]``), so both numbers are reported from one call.

    data_path: default the file the run was trained on. out_dir: where ``metrics.json`` and
    ``cmc.png`` go (default ``run_dir``). protocol: ``auto`` | ``market`` | ``cuhk03-sgs``.
    The rest as :func:`reidaug.eval.metrics.evaluate` and
    :func:`reidaug.train.features.extract_features` take them. Every mistake (no model, no such
    data file, no query or gallery split, an unknown protocol or metric) is a ``ReidAugError``.
    """
    from reidaug.data.h5format import open_h5
    from reidaug.eval.distance import METRICS
    from reidaug.eval.metrics import evaluate
    from reidaug.io.atomic import write_json
    from reidaug.train.features import extract_features
    from reidaug.train.model import load_model
    from reidaug.train.trainer import data_fingerprint

    t0 = time.perf_counter()
    run = Path(run_dir)
    if protocol not in PROTOCOL_CHOICES:
        raise unknown_name("evaluation protocol", str(protocol), PROTOCOL_CHOICES)
    if metric not in METRICS:
        raise unknown_name("metric", str(metric), METRICS)
    if not run.is_dir():
        raise DataError(f"run folder {run} does not exist. Fix: pass the --out folder of a finished `reidaug train`.")
    model_path = run / "model.pt"
    trained_on = training_data_of(run)
    if data_path is None:
        if trained_on is None:
            raise ConfigError(f"{run} does not say which data it was trained on (no config.json). Fix: pass --data.")
        data_path = trained_on
    data = Path(data_path)
    if split not in ("test", "val"):
        raise unknown_name("evaluation split", str(split), ("test", "val"))
    held_out = _held_out_ids(run) if split == "val" else None
    if held_out is not None and trained_on is not None and data.resolve() != trained_on.resolve():
        raise ConfigError(f"--split val measures on the identities the run held out of {trained_on}; {data} is "
                          "another file. Fix: evaluate validation on the training file (leave out --data)")
    if held_out is not None and protocol not in ("auto", "market"):
        raise ConfigError(f"the validation split is evaluated with the market protocol (every held-out image "
                          f"against the others); protocol {protocol!r} needs a query/gallery split. Fix: leave "
                          "the protocol at market")
    with open_h5(data) as f:
        missing = [s for s in ("query", "gallery") if s not in f.splits] if split == "test" else []
        if missing:
            raise DataError(
                f"{data} has no {' and no '.join(missing)} split (splits: {', '.join(f.splits)}), so there "
                "is nothing to evaluate. Fix: pass an HDF5 file exported with query and gallery splits (--data)."
            )
        pipeline_key = f.info.pipeline_key
        has_train = "train" in f.splits
        n_images = (f.num_samples("train") if held_out is not None  # features to extract, for features_on_disk
                    else sum(f.num_samples(s) for s in ("query", "gallery")))
    model = load_model(run)  # DataError when model.pt is missing or not a reidaug model
    same_as_training = trained_on is not None and trained_on.resolve() == data.resolve()
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)
    if features_on_disk is None:
        features_on_disk = n_images * model.feature_dim * 4 > FEATURES_IN_MEMORY_BYTES
    with _scratch(out if features_on_disk else None) as scratch:
        t_feat = time.perf_counter()
        kw = dict(batch_size=batch_size, device=device, num_workers=num_workers, flip_fusion=flip_fusion)

        def features(with_flip: bool):
            """(query, gallery) features, pids and camids; the validation split is its own gallery."""
            def to(name: str) -> Path | None:
                return scratch / f"{name}-flip{int(with_flip)}.npy" if scratch is not None else None

            if held_out is None:
                return (extract_features(model, data, "query", flip=with_flip, out=to("query"), **kw),
                        extract_features(model, data, "gallery", flip=with_flip, out=to("gallery"), **kw))
            q = extract_features(model, data, "train", sources=["real"], pids=held_out, flip=with_flip,
                                 out=to("val"), **kw)
            return q, q

        (qf, q_pids, q_camids), (gf, g_pids, g_camids) = features(flip)
        features_s = time.perf_counter() - t_feat

        if held_out is not None:
            chosen, why = "market", "validation: each held-out image against the others"
        elif protocol == "auto":
            chosen, why = choose_protocol(q_camids, g_camids)
        else:
            chosen, why = protocol, "given"

        def metrics(qf, gf):
            return evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=metric, protocol=chosen,
                            max_rank=max_rank, block_size=block_size, rerank=rerank, k1=k1, k2=k2,
                            lambda_value=lambda_value)

        t_eval = time.perf_counter()
        m = metrics(qf, gf)
        eval_s = time.perf_counter() - t_eval
        beside = None
        if flip_beside:  # the same evaluation with the other flip setting, reported beside the main one
            (qf2, _, _), (gf2, _, _) = features(not flip)
            m2 = metrics(qf2, gf2)
            beside = {"flip": not flip, "rank1": float(m2.rank(1)), "mAP": float(m2.mAP)}

        # beside metrics.json: a relative name, so the run folder can move (the train-reid stage
        # evaluates in its partial cache folder, renamed into place afterwards)
        model_ref = "model.pt" if out.resolve() == run.resolve() else str(model_path.resolve())
        record: dict[str, Any] = dict(m.as_dict())
        record.update(
            split=split,
            validation=None if held_out is None else {"identities": len(held_out), "pids": held_out},
            protocol=chosen,
            protocol_reason=why,
            metric=metric,
            flip=bool(flip),
            flip_fusion=flip_fusion,
            flip_beside=beside,
            rerank={"k1": k1, "k2": k2, "lambda": lambda_value} if rerank else None,
            num_query_images=int(len(q_pids)),
            num_gallery_images=int(len(g_pids)),
            feature_dim=int(qf.shape[1]),
            cmc=[round(float(x), 6) for x in m.cmc],
            data={"path": str(data.resolve()), "pipeline_key": pipeline_key,
                  "train_fingerprint": data_fingerprint(data) if has_train else None,
                  "same_as_training": same_as_training},
            model={"path": model_ref, "sha256": file_sha256(model_path),
                   "backbone": model.config.backbone, "head": model.config.head,
                   "input_size": list(model.config.input_size), "num_classes": model.config.num_classes},
            timings={"features_s": round(features_s, 3), "evaluate_s": round(eval_s, 3),
                     "total_s": round(time.perf_counter() - t0, 3)},
            device=str(device),
            reidaug=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        metrics_path, plot_path = out / METRICS_FILE, out / CMC_PLOT
        if held_out is not None:  # beside the test metrics, never over them
            metrics_path, plot_path = out / "metrics_val.json", out / "cmc_val.png"
        title = f"{model.config.backbone} on {data.name} ({chosen}{', re-ranked' if rerank else ''})"
        plot_cmc(m.cmc, plot_path, title=title, mAP=m.mAP)
        write_json(metrics_path, record)
        log.info("evaluated %s on %s: rank-1 %.4f, mAP %.4f (%s, %d queries) in %.1f s", run, data.name,
                 m.rank(1), m.mAP, chosen, m.num_queries, time.perf_counter() - t0)
        return EvalReport(record, metrics_path, plot_path)


@contextlib.contextmanager
def _scratch(parent: Path | None) -> Iterator[Path | None]:
    """A temporary folder in ``parent`` for on-disk features (a temp name, so what a killed run
    leaves is recognisable as such), removed afterwards; None when ``parent`` is None."""
    from reidaug.io.atomic import remove, temp_path_for

    if parent is None:
        yield None
        return
    path = temp_path_for(parent / "features")
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        remove(path)


def _held_out_ids(run: Path) -> list[int]:
    """The identities a run's training held out (its ``validation.json``)."""
    import json

    path = run / "validation.json"
    if not path.is_file():
        raise ConfigError(f"{run} was trained without a validation split (no {path.name}), so there is nothing to "
                          "validate on. Fix: train with val_fraction > 0 (e.g. --set val_fraction=0.15), or "
                          "evaluate on the test split")
    try:
        pids = json.loads(path.read_text())["pids"]
        return [int(x) for x in pids]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {e}); it lists the identities the run held out. "
                        "Fix: re-run the training (the same command rewrites it)") from None


def plot_cmc(cmc: np.ndarray, out_path: str | os.PathLike[str], *, title: str = "", mAP: float | None = None) -> None:
    """PNG of a CMC curve (matching rate against rank), written atomically (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from reidaug.io.atomic import atomic_path

    cmc = np.asarray(cmc, dtype=np.float64)
    ranks = np.arange(1, len(cmc) + 1)
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    label = f"rank-1 {cmc[0]:.1%}" + (f", mAP {mAP:.1%}" if mAP is not None else "")
    ax.plot(ranks, cmc, marker="o" if len(cmc) <= 20 else None, markersize=3, label=label)
    for k in (1, 5, 10):
        if k <= len(cmc):
            ax.annotate(f"{cmc[k - 1]:.1%}", (k, cmc[k - 1]), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (CMC)")
    ax.set_xlim(1, max(len(cmc), 2))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")
