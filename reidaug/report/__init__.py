"""``reidaug report``: one self-contained HTML page of a pipeline's stages, pictures and numbers.

:func:`report_pipeline` reports a loaded pipeline graph; :func:`report_workspace` the latest run of a
workspace (from the resolved config ``reidaug run`` saved). The page is built by
:mod:`reidaug.report.build` from what :mod:`reidaug.report.collect` finds in the cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reidaug.report.build import SECTIONS, build_report
from reidaug.report.collect import StageView, latest_run_dir, views_from_graph, views_from_run_dir

DEFAULT_NAME = "report.html"

__all__ = ["DEFAULT_NAME", "SECTIONS", "StageView", "build_report", "report_pipeline", "report_workspace"]


def report_pipeline(graph: Any, workspace: Path, out: str | Path | None = None, *, run_dir: Path | None = None) -> Path:
    """The report of a built pipeline graph's stages in ``workspace`` (default ``WORKSPACE/report.html``)."""
    cfg = graph.loaded.config
    return build_report(views_from_graph(graph, workspace), out or workspace / DEFAULT_NAME, title=cfg.name,
                        source=str(graph.loaded.path), workspace=workspace, run_dir=run_dir)


def report_workspace(workspace: Path, out: str | Path | None = None) -> Path:
    """The report of the latest run in ``workspace`` (its ``runs/<id>/config.yaml``)."""
    run_dir = latest_run_dir(workspace)
    views, cfg = views_from_run_dir(run_dir, workspace)
    return build_report(views, out or workspace / DEFAULT_NAME, title=str(cfg.get("name", workspace.name)),
                        source=str(cfg.get("source", "?")), workspace=workspace, run_dir=run_dir)
