"""Stage ``filter-fakes``: the quality gate — fakes scored by the model they are meant to improve.

Each fake (of ``generate-camstyle``, ``generate-colortransfer`` or ``generate-poseguided``) is
scored by a re-ID model trained on the *real* images of the same train split (a ``train-reid``
stage on an ``export-hdf5`` with ``sets: [real]``; never an external judge, which would leak
another dataset's knowledge into the choice): ``gate_prob``, the model's softmax probability of
the identity the fake should keep, and ``gate_rank``, that identity's rank among all train
identities (1 = the model's top guess). A fake is kept when ``gate_prob >= threshold``
(``rule: probability``) or ``gate_rank <= max_rank`` (``rule: rank``); the rest are dropped
with their count. Fakes that lose their person teach the model noise; fakes the real-only model
already finds trivially easy teach little, which is why the threshold is a parameter chosen on
validation (``val_fraction`` in train-reid), not fixed here.

The output has the input's layout (every column, filtered, plus ``gate_prob`` and ``gate_rank``),
so it binds wherever the unfiltered fakes did (``assign-labels`` / ``export-hdf5`` slots
``camstyle`` or ``poseguided``). The summary holds the kept fraction at a ladder of thresholds
(from every fake's score), so one run shows what each threshold would keep.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import BatchedGPUParams, StageSpec

LADDER = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


class FilterFakesParams(BatchedGPUParams):
    rule: Literal["probability", "rank"] = Field(
        "probability", description="probability: keep gate_prob >= threshold; rank: keep gate_rank <= max_rank")
    threshold: float = Field(0.05, ge=0.0, le=1.0, description="rule probability: the least probability kept")
    max_rank: int = Field(5, ge=1, le=100_000, description="rule rank: the worst rank kept")


def _label_map(ctx: StageContext) -> dict[int, int]:
    from reidaug.data.datasets import train_label_map

    return ctx.memo("label_map", lambda: train_label_map(ctx.input("dataset").iter_chunks()))


def plan(ctx: StageContext) -> int:
    return len(ctx.input("fakes").chunk_paths())


def _model(ctx: StageContext):
    from reidaug.gen.common import pick_device
    from reidaug.train.model import load_model

    p: FilterFakesParams = ctx.params
    device = pick_device(p.device, "params.device")
    return ctx.memo(f"gate|{device}", lambda: load_model(ctx.input("model").path)), device


def run_chunk(ctx: StageContext, index: int) -> None:
    import numpy as np

    from reidaug.data.images import decode_stored
    from reidaug.errors import DataError
    from reidaug.pipeline.context import read_h5_chunk
    from reidaug.train.features import predict_probs

    p: FilterFakesParams = ctx.params
    arrays, attrs = read_h5_chunk(ctx.input("fakes").chunk_paths()[index])
    n = len(arrays.get("path", []))
    label_of = _label_map(ctx)
    pids = [int(x) for x in arrays.get("pid", [])]
    unknown = sorted({q for q in pids if q not in label_of})
    if unknown:
        raise DataError(f"fakes chunk {index} holds identities that are not train identities (e.g. pid {unknown[0]}); "
                        "the gate scores a fake by the identity it keeps. Fix: gate fakes of the train split only "
                        "(not LSRO's unconditional samples)")
    model, device = _model(ctx)
    if n:
        probs = predict_probs(model, [decode_stored(b) for b in arrays["image"]],
                              batch_size=p.batch_size_on(device, model.config.input_size), device=device)
        if probs.shape[1] != len(label_of):
            raise DataError(f"the gate model ({ctx.input('model').path}) predicts {probs.shape[1]} identities, but "
                            f"this dataset's train split has {len(label_of)}. Fix: train it on the real images of the "
                            "same train split (export-hdf5 of the same ingest with sets: [real])")
        labels = np.asarray([label_of[q] for q in pids])
        prob = probs[np.arange(n), labels].astype(np.float32)
        rank = 1 + (probs > prob[:, None]).sum(axis=1)
    else:
        prob, rank = np.zeros(0, np.float32), np.zeros(0, np.int64)
    keep = prob >= p.threshold if p.rule == "probability" else rank <= p.max_rank
    rows = np.flatnonzero(keep)
    out: dict[str, Any] = {}
    for name, column in arrays.items():
        out[name] = [column[r] for r in rows] if column.dtype == object else np.asarray(column)[rows]
    out["gate_prob"], out["gate_rank"] = prob[rows], rank[rows].astype(np.int64)
    ctx.write_chunk(index, out, attrs={**attrs, "gate_scores": [round(float(x), 6) for x in prob],
                                       "gate_total": n})


def finalize(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

    p: FilterFakesParams = ctx.params
    scores, kept = [], 0
    for arrays, attrs in ctx.iter_own_chunks():
        scores.extend(attrs.get("gate_scores", []))
        kept += len(arrays.get("path", []))
    s = np.asarray(scores, np.float64)
    total = len(s)
    ladder = {str(t): round(float((s >= t).mean()), 4) if total else None for t in LADDER}
    rule = f"gate_prob >= {p.threshold}" if p.rule == "probability" else f"gate_rank <= {p.max_rank}"
    report = [f"kept {kept} of {total} fakes ({100 * kept / total if total else 0:.1f}%): {rule}; the gate model's "
              f"probability of the kept identity: median {np.median(s) if total else 0:.3f}",
              "kept fraction by threshold: "
              + ", ".join(f">= {t}: {v:.0%}" for t, v in ladder.items() if v is not None)]
    return {"kept": kept, "total": total, "rule": rule,
            "median_prob": round(float(np.median(s)), 4) if total else None,
            "kept_fraction_at": ladder, "report": report}


SPEC = StageSpec(
    name="filter-fakes", version=1,
    description="quality gate: keep the fakes a real-only re-ID model of the train split still recognises",
    params=FilterFakesParams, run_chunk=run_chunk, plan=plan, finalize=finalize,
    inputs={"fakes": "", "dataset": "ingest.dataset", "model": "train-reid.model"},
    outputs={"fakes": "chunks"},
)
