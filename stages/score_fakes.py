"""Stage ``score-fakes``: how good are the generated images of an exported file?

Reads the train split of ``export-hdf5``'s file and scores its fakes against its real images
with :mod:`reidaug.eval.generation`:

- identity consistency with an external judge (``judge``: an ONNX re-ID model never trained
  on this data, e.g. OSNet-x0.25 from torchreid's model zoo exported to ONNX): rank-1 / mAP of
  each fake as a query against every real image (its own origin excluded), beside the same for
  the origin images themselves;
- FReID per target camera: Fréchet distance between the judge's features of the fakes for
  camera c and of the real images of camera c, beside the untransferred origins';
- SSIM (and mask-SSIM) against the true image where one exists: bind ``synthetic`` to the
  ``demo-data`` output, whose renderer draws every person under every camera style.

Without ``judge`` only SSIM is computed (and the report says so). Writes ``metrics.json`` and
``metrics.md`` (a table, also printed in the run summary).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from reidaug.pipeline.context import StageContext
from reidaug.pipeline.stage import FileParam, Params, StageSpec

METRICS = "metrics.json"
TABLE = "metrics.md"


class ScoreFakesParams(Params):
    judge: FileParam | None = Field(None, description="ONNX re-ID model (e.g. osnet_x0_25_msmt17.onnx); none: SSIM only")
    sources: list[str] | None = Field(None, description="generated sources to score (default: all fakes in the file)")
    fd_eps: float = Field(0.0, ge=0.0, description="ridge added to covariances in FReID (N < D needs it)")


def score(h5_path, judge_path, synthetic_root=None, sources=None, fd_eps: float = 0.0) -> dict[str, Any]:
    """Score the fakes of ``h5_path``; returns the result dict (with ``report``: markdown)."""
    import numpy as np

    from reidaug.eval.generation import evaluate_generated, format_report, read_generated_h5, ssim

    data = read_generated_h5(h5_path, sources=sources, synthetic_root=synthetic_root)
    if judge_path is not None:
        result = evaluate_generated(**data.arrays(), judge=judge_path, fd_eps=fd_eps)
        result["report"] = format_report(result)
        return result
    arrays = data.arrays()
    gts = arrays.get("gt_images")
    if gts is None:
        return {"ssim": None, "report": "no judge model and no ground truth: nothing to score. Set judge: to an ONNX "
                                         "re-ID model (e.g. ../shared/models/osnet_x0_25_msmt17.onnx)\n"}
    idx = [i for i, g in enumerate(gts) if g is not None]
    import cv2

    fakes, reals, origins = arrays["fake_images"], arrays["real_images"], arrays["fake_origins"]

    def fit(img, ref):
        return img if img.shape == ref.shape else cv2.resize(img, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)

    s_fake = np.array([ssim(fakes[i], fit(gts[i], fakes[i])) for i in idx])
    s_base = np.array([ssim(reals[origins[i]], fit(gts[i], reals[origins[i]])) for i in idx if origins[i] >= 0])
    result = {"ssim": {"fakes": float(s_fake.mean()) if len(idx) else None,
                       "baseline": float(s_base.mean()) if len(s_base) else None, "n": len(idx)},
              "identity": None, "freid": None}
    result["report"] = (f"SSIM vs ground truth: fakes {result['ssim']['fakes']:.3f}, untransferred origins "
                        f"{result['ssim']['baseline']:.3f} (n={len(idx)}); identity and FReID skipped: no judge "
                        "model given (params.judge)\n") if len(idx) else "no fake has a ground truth\n"
    return result


def run_chunk(ctx: StageContext, index: int) -> None:
    import json

    from reidaug.io.atomic import write_json, write_text

    p: ScoreFakesParams = ctx.params
    synthetic = ctx.inputs.get("synthetic")
    result = score(ctx.input("hdf5").path, p.judge.path if p.judge is not None else None,
                   synthetic_root=synthetic.path if synthetic is not None else None, sources=p.sources, fd_eps=p.fd_eps)
    write_json(ctx.work_dir / METRICS, {k: v for k, v in result.items() if k != "report"})
    write_text(ctx.work_dir / TABLE, result["report"])
    ctx.write_chunk(index, {"done": 1}, attrs={"report": json.dumps(result["report"])})


def finalize(ctx: StageContext) -> dict[str, Any]:
    report = (ctx.work_dir / TABLE).read_text().rstrip("\n").splitlines()
    return {"report": report + [f"metrics: {METRICS} and {TABLE} in this entry"]}


SPEC = StageSpec(
    name="score-fakes", version=1,
    description="identity consistency (external judge), FReID and SSIM of the fakes in an exported file",
    params=ScoreFakesParams, run_chunk=run_chunk, finalize=finalize,
    inputs={"hdf5": "export-hdf5.hdf5", "synthetic": ""},
    optional_inputs=frozenset({"synthetic"}),
    outputs={"metrics": METRICS, "table": TABLE},
)
