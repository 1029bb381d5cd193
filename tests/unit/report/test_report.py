"""reidaug.report: the page from what the stages recorded, whatever state they are in."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidaug.errors import ConfigError
from reidaug.io.atomic import write_png
from reidaug.report import StageView, build_report, report_workspace
from reidaug.report.build import flatten_numbers
from reidaug.report.plots import dag_png, levels, loss_curves_png

PNG = b"\x89PNG\r\n\x1a\n"


def _entry(tmp_path: Path, name: str, meta: dict | None = None) -> Path:
    e = tmp_path / "cache" / name / "ab" / ("ab" + name)
    e.mkdir(parents=True)
    (e / "meta.json").write_text(json.dumps(meta or {}))
    return e


def _view(tmp_path, name, kind, state="cached", inputs=None, summary=None, **kw) -> StageView:
    entry = _entry(tmp_path, name) if state == "cached" else None
    meta = {"summary": summary or {}, "created": "2026-12-06T00:00:00+00:00",
            "timings": {"plan_s": 0.5, "chunks_wall_s": 61.0, "finalize_s": 0.5}} if state == "cached" else {}
    return StageView(name=name, kind=kind, key=("0123456789ab" * 6)[:64], inputs=inputs or {}, params={},
                     state=state, entry=entry, meta=meta, **kw)


def test_levels_put_each_stage_after_its_deepest_input():
    edges = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c", "a"]}
    assert levels(edges) == {"a": 0, "b": 1, "c": 1, "d": 2}


def test_dag_and_loss_plots_are_pngs_and_empty_input_draws_nothing():
    assert dag_png([("a", "cached", []), ("b", "partial", ["a"]), ("c", "missing", ["b", "a"])]).startswith(PNG)
    rows = [{"step": s, "phase": ph, "G1": 1.0 / s, "D": 0.5} for ph in ("G1", "G2") for s in (10, 20)]
    rows.append({"step": 30, "G1": float("nan")})  # a non-finite value must not break the plot
    assert loss_curves_png(rows, "pg2").startswith(PNG)
    assert loss_curves_png([], "x") is None and dag_png([]) is None


def test_flatten_numbers_names_every_leaf():
    got = dict(flatten_numbers({"ssim": {"fakes": 0.5, "n": 3}, "identity": None, "cmc": list(range(10)),
                                "splits": ["query", "gallery"], "ok": True}))
    assert got["ssim.fakes"] == 0.5 and got["ssim.n"] == 3 and got["splits"] == "query, gallery"
    assert "identity" not in got and "ok" not in got and got["cmc"].endswith("(10 values)]")


def test_report_shows_every_state_escapes_text_and_notes_what_it_cannot_draw(tmp_path):
    gan = _view(tmp_path, "train-camstyle", "train-camstyle", inputs={"dataset": "ingest.dataset"},
                summary={"report": ["<script>alert(1)</script> trained"]})
    m = gan.entry / "train" / "cyclegan_c0-c1"
    (m / "samples").mkdir(parents=True)
    (m / "losses.jsonl").write_text("\n".join(json.dumps({"step": s, "G": 2.0 - s / 100, "D_A": 0.3})
                                              for s in (50, 100)) + "\n{\"step\": 15")  # torn last line
    write_png(m / "samples" / "final.png", np.full((8, 8, 3), 128, np.uint8))
    scores = _view(tmp_path, "score-fakes", "score-fakes", inputs={"hdf5": "export-hdf5.hdf5"})
    (scores.entry / "metrics.json").write_text(json.dumps({"ssim": {"fakes": 0.527, "baseline": 0.521}}))
    (scores.entry / "pairs.png").write_bytes(b"not a png")  # damaged: a note, not a failed report
    poses = _view(tmp_path, "extract-pose", "extract-pose", inputs={"dataset": "ingest.dataset"})
    views = [_view(tmp_path, "ingest", "ingest"), gan, poses, scores,
             _view(tmp_path, "train-reid", "train-reid", state="partial", done=0, total=1),
             _view(tmp_path, "export-hdf5", "export-hdf5", state="missing")]
    (views[0].entry / "quarantine.json").write_text(json.dumps(
        {"counts": {"truncated": 2}, "quarantined": [{"path": "a/b.jpg", "reason": "truncated"}]}))
    out = build_report(views, tmp_path / "r" / "report.html", title="t<1>", source="p.yaml", workspace=tmp_path)
    page = out.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; trained" in page
    assert "reidaug report: t&lt;1&gt;" in page
    assert "partial 0/1" in page and "not run yet" in page and "1 partial" in page and "1 missing" in page
    assert '<span class="badge missing">missing</span>' in page
    assert "pairs.png: not a PNG file, left out" in page
    assert "cyclegan_c0-c1: logged losses" in page and "cyclegan_c0-c1: samples (final)" in page
    assert "truncated" in page and "a/b.jpg" in page
    assert "No cached export-hdf5 stage carries these keypoints" in page
    assert "1 min 02 s" in page  # a stage's time: plan + chunks + finalize
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert all(h in ids for h in re.findall(r'href="#([^"]+)"', page))
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []


def test_a_damaged_finished_entry_is_reported_as_damaged_with_its_results(tmp_path):
    from reidaug.pipeline.cache import Cache

    key = "f" * 64
    entry = Cache(tmp_path).entry_dir("score-fakes", key)
    (entry / "chunks").mkdir(parents=True)
    (entry / "chunks" / "00000.h5").write_bytes(b"12345")  # meta says 10 bytes: truncated
    (entry / "metrics.json").write_text(json.dumps({"ssim": {"fakes": 0.5}}))
    (entry / "meta.json").write_text(json.dumps({"key": key, "num_chunks": 1, "summary": {"report": ["scored"]},
                                                 "chunk_files": {"00000.h5": {"size": 10, "sha256": "0"}}}))
    run = tmp_path / "runs" / "20261206-000000-1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: t\nsource: t.yaml\nstages:\n  score-fakes:\n    key: {key}\n")
    page = report_workspace(tmp_path, tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<span class="badge damaged">damaged</span>' in page and "recomputes only them" in page
    assert "ssim.fakes" in page and "scored" in page  # what the entry recorded is still shown


def test_report_of_a_workspace_needs_a_run(tmp_path):
    with pytest.raises(ConfigError, match=r"no runs/<id>/config.yaml here.*reidaug report PIPELINE.yaml"):
        report_workspace(tmp_path)
    (tmp_path / "runs" / "1").mkdir(parents=True)
    (tmp_path / "runs" / "1" / "config.yaml").write_text("name: x\nstages: [1, 2]\n")
    with pytest.raises(ConfigError, match="not a resolved run config"):
        report_workspace(tmp_path)


def test_cli_report_of_a_pipeline_not_run_lists_its_stages_as_missing(tmp_path):
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-m", "reidaug.cli", "report", str(root / "configs" / "selftest.yaml"),
                          "-w", str(tmp_path / "ws"), "-o", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "not run yet" in page and '<span class="badge missing">missing</span>' in page
    assert not (tmp_path / "ws" / "cache").exists() or not any((tmp_path / "ws" / "cache").iterdir())
    bad = subprocess.run([sys.executable, "-m", "reidaug.cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "no runs/<id>/config.yaml" in bad.stderr and "Traceback" not in bad.stderr
