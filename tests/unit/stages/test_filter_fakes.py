"""filter-fakes, the quality gate: fakes scored by a real-only re-ID model of the train split,
kept by probability or rank, exported like unfiltered fakes; and its errors."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from reidaug.errors import ReidAugError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.context import read_h5_chunk
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, run_pipeline
from reidaug.stages import STAGES

PIPE = """\
    name: gate
    stages:
      demo-data: {params: {num_ids: 8, num_cams: 2, images_per_id_per_cam: 4, height: 64, width: 32}}
      ingest:
        params: {format: market1501, chunk_size: 16}
        inputs: {source: demo-data.dataset}
      export-real:
        uses: export-hdf5
        params: {sets: [real], encoding: raw, image_height: 64, image_width: 32}
      gate-model:
        uses: train-reid
        inputs: {data: export-real.hdf5}
        params: {backbone: tiny, pretrained: none, height: 64, width: 32, sampler: pk, p: 4, k: 4, loss: both,
                 schedule: step, epochs: 6, warmup_epochs: 1,
                 milestones: [5], lr: 0.001, log_every: 4, num_workers: 0, evaluate: false}
      generate-colortransfer: {}
      filter-fakes:
        params: GATE
        inputs: {fakes: generate-colortransfer.fakes, model: gate-model.model}
      assign-labels:
        params: {schemes: {camstyle: lsr}}
        inputs: {camstyle: filter-fakes.fakes}
      export-hdf5:
        params: {encoding: raw, image_height: 64, image_width: 32}
        inputs: {camstyle: filter-fakes.fakes, labels: assign-labels.labels}
"""


def _run(tmp: Path, gate: str):
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "p.yaml"
    path.write_text(textwrap.dedent(PIPE).replace("GATE", gate))
    report = run_pipeline(build_graph(load_pipeline(path), STAGES), tmp / "ws", options=RunOptions(workers=1))
    return {r.name: r.entry for r in report.results}, report


def _rows(entry: Path) -> dict[str, np.ndarray]:
    parts = [read_h5_chunk(p) for p in sorted((entry / "chunks").glob("*.h5"))]
    out = {k: np.concatenate([np.asarray(a[k]) for a, _ in parts]) for k in parts[0][0]}
    out["_all_scores"] = np.concatenate([np.asarray(attrs["gate_scores"]) for _, attrs in parts])
    return out


def test_the_gate_keeps_by_probability_and_the_kept_fakes_export(tmp_path):
    import json

    entries, _ = _run(tmp_path / "p", "{threshold: 0.25}")
    gated = _rows(entries["filter-fakes"])
    scores = gated["_all_scores"]
    total = sum(len(read_h5_chunk(p)[0]["path"]) for p in (entries["generate-colortransfer"] / "chunks").glob("*.h5"))
    assert len(scores) == total and 0 < len(gated["path"]) < total  # some kept, some dropped
    assert (gated["gate_prob"] >= 0.25).all() and len(gated["path"]) == int((scores >= 0.25).sum())
    assert (gated["gate_rank"] >= 1).all() and {"origin_path", "target_camid", "gen_checksum"} <= set(gated)
    summary = json.loads((entries["filter-fakes"] / "meta.json").read_text())["summary"]
    assert summary["kept"] == len(gated["path"]) and summary["kept_fraction_at"]["0.0"] == 1.0
    from reidaug.data.h5format import open_h5

    with open_h5(entries["export-hdf5"] / "dataset.h5") as f:
        assert int(f.meta("train").is_fake.sum()) == len(gated["path"])


def test_the_rank_rule_and_its_ladder(tmp_path):
    import json

    entries, _ = _run(tmp_path / "r", "{rule: rank, max_rank: 1}")
    gated = _rows(entries["filter-fakes"])
    assert len(gated["path"]) > 0 and (gated["gate_rank"] == 1).all()  # recognised as their own person
    summary = json.loads((entries["filter-fakes"] / "meta.json").read_text())["summary"]
    scores = gated["_all_scores"]
    assert summary["total"] == len(scores) and summary["rule"] == "gate_rank <= 1"
    for t, kept in summary["kept_fraction_at"].items():  # the ladder: what each threshold would keep
        assert kept == pytest.approx(float((scores >= float(t)).mean()), abs=1e-4)


OTHER = """\
      demo-other:
        uses: demo-data
        params: {num_ids: 10, num_cams: 2, images_per_id_per_cam: 4, height: 64, width: 32, seed: 1}
      ingest-other: {uses: ingest, params: {format: market1501}, inputs: {source: demo-other.dataset}}
      export-other:
        uses: export-hdf5
        params: {sets: [real], encoding: raw, image_height: 64, image_width: 32}
        inputs: {dataset: ingest-other.dataset}
"""


def test_a_gate_model_of_another_split_is_refused(tmp_path):
    text = textwrap.dedent(PIPE).replace("inputs: {data: export-real.hdf5}", "inputs: {data: export-other.hdf5}")
    text = text.replace("  gate-model:", textwrap.indent(textwrap.dedent(OTHER), "  ") + "  gate-model:", 1)
    path = tmp_path / "o.yaml"
    path.write_text(text.replace("GATE", "{}"))
    with pytest.raises(ReidAugError, match="predicts 5 identities, but this dataset's train split has 4"):
        run_pipeline(build_graph(load_pipeline(path), STAGES), tmp_path / "ws", options=RunOptions(workers=1))
