"""Stage ``score-fakes``: how good are the generated images of an exported file?

Reads the train split of ``export-hdf5``'s file and scores its fakes against its real images
with :func:`reidaug.eval.generation.score_generated_file` (this stage only binds it):

- identity consistency with an external judge (``judge``: an ONNX re-ID model never trained
  on this data, e.g. OSNet-x0.25 from torchreid's model zoo exported to ONNX): rank-1 / mAP of
  each fake as a query against every real image (its own origin excluded), beside the same for
  the origin images themselves;
- FReID per target camera: Fréchet distance between the judge's features of the fakes for
  camera c and of the real images of camera c, beside the untransferred origins';
- SSIM (and mask-SSIM) against the true image where one exists: bind ``synthetic`` to the
  ``demo-data`` output, whose renderer draws every person under every camera style;
- for dataset-to-dataset translations (PTGAN / SPGAN): bind ``target`` to an export of the target
  dataset, and FReID is also measured against its real train images (the style the fakes were
  translated into), beside the untranslated origins'.

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
    judge: FileParam | None = Field(
        None, description="ONNX re-ID model (e.g. osnet_x0_25_msmt17.onnx); none: SSIM only")
    sources: list[str] | None = Field(None, description="generated sources to score (default: all fakes in the file)")
    fd_eps: float = Field(0.0, ge=0.0, description="ridge added to covariances in FReID (N < D needs it)")


def run_chunk(ctx: StageContext, index: int) -> None:
    import json

    from reidaug.eval.generation import score_generated_file
    from reidaug.io.atomic import write_json, write_text

    p: ScoreFakesParams = ctx.params
    synthetic, target = ctx.inputs.get("synthetic"), ctx.inputs.get("target")
    result = score_generated_file(ctx.input("hdf5").path, p.judge.path if p.judge is not None else None,
                                  synthetic_root=synthetic.path if synthetic is not None else None,
                                  sources=p.sources, fd_eps=p.fd_eps,
                                  target=target.path if target is not None else None)
    write_json(ctx.work_dir / METRICS, {k: v for k, v in result.items() if k != "report"})
    write_text(ctx.work_dir / TABLE, result["report"])
    ctx.write_chunk(index, {"done": 1}, attrs={"report": json.dumps(result["report"])})


def _check_bindings(params: ScoreFakesParams, bound: frozenset[str]) -> str | None:
    if "target" in bound and params.judge is None:
        return ("inputs.target is bound, but FReID to the target needs the judge's features and params.judge is "
                "not set. Fix: set judge: to an ONNX re-ID model (e.g. ../shared/models/osnet_x0_25_msmt17.onnx), "
                "or unbind target.")
    return None


def finalize(ctx: StageContext) -> dict[str, Any]:
    report = (ctx.work_dir / TABLE).read_text().rstrip("\n").splitlines()
    return {"report": report + [f"metrics: {METRICS} and {TABLE} in this entry"]}


SPEC = StageSpec(
    name="score-fakes", version=1,
    description="identity consistency (external judge), FReID and SSIM of the fakes in an exported file",
    params=ScoreFakesParams, run_chunk=run_chunk, finalize=finalize,
    inputs={"hdf5": "export-hdf5.hdf5", "synthetic": "", "target": ""},
    optional_inputs=frozenset({"synthetic", "target"}),
    unkeyed_if_unbound=frozenset({"target"}),  # added later: keys without it stay as they were
    check_bindings=_check_bindings,
    outputs={"metrics": METRICS, "table": TABLE},
)
