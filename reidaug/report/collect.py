"""What a report is made of: each stage of one pipeline, resolved to its cache entry.

A :class:`StageView` is one stage as the report sees it: its name and kind, its key, its state in
the cache (cached / partial n/m / missing), the entry folder and its ``meta.json`` (timings, size,
summary). :func:`views_from_graph` takes them from a loaded pipeline; :func:`views_from_run_dir`
from the resolved ``config.yaml`` that ``reidaug run`` saves in every ``runs/<id>/`` folder, so a
workspace alone is enough to report its latest run.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from reidaug.errors import ConfigError
from reidaug.pipeline.cache import Cache, dir_size


@dataclasses.dataclass
class StageView:
    name: str  # the stage's name in the pipeline
    kind: str  # the stage kind (its `uses:`)
    key: str
    inputs: dict[str, str]  # slot -> "upstream.output"
    params: dict[str, Any]
    state: str  # cached | damaged (finished, some chunk files damaged) | partial | missing
    done: int | None = None  # chunks done (partial)
    total: int | None = None
    entry: Path | None = None  # the cache entry (cached) or the partial folder
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        return dir_size(self.entry) if self.entry is not None else 0

    @property
    def seconds(self) -> float | None:
        """Wall time of the run that made the entry (plan + chunks + finalize), when recorded."""
        t = self.meta.get("timings") or {}
        parts = [t.get(k) for k in ("plan_s", "chunks_wall_s", "finalize_s")]
        return float(sum(p for p in parts if isinstance(p, (int, float)))) if any(parts) else None

    @property
    def summary(self) -> dict[str, Any]:
        s = self.meta.get("summary")
        return s if isinstance(s, dict) else {}

    @property
    def upstream(self) -> list[str]:
        return sorted({ref.split(".", 1)[0] for ref in self.inputs.values()})


def _view(cache: Cache, name: str, kind: str, key: str, inputs: dict[str, str], params: dict[str, Any]) -> StageView:
    st = cache.state(kind, key)
    v = StageView(name=name, kind=kind, key=key, inputs=inputs, params=params, state=st.status)
    meta = cache.load_meta(kind, key) if st.status == "partial" else None
    if st.status == "cached":
        v.entry = cache.entry_dir(kind, key)
        v.meta = st.meta or {}
    elif meta is not None:  # a finished entry with damaged chunk files (the cache reports it as partial)
        v.state, v.entry, v.meta = "damaged", cache.entry_dir(kind, key), meta
        v.done, v.total = st.done, st.total
    elif st.status == "partial":
        v.entry = cache.partial_dir(kind, key)
        v.done, v.total = st.done, st.total
    return v


def views_from_graph(graph: Any, workspace: Path) -> list[StageView]:
    """Every stage of a built pipeline graph, in the graph's order."""
    cache = Cache(workspace)
    out = []
    for name, node in graph.nodes.items():
        inputs = {slot: f"{r[0]}.{r[1]}" for slot, r in node.inputs.items() if r}
        out.append(_view(cache, name, node.spec.name, graph.keys[name], inputs,
                         node.params.model_dump(mode="json")))
    return out


def latest_run_dir(workspace: Path) -> Path:
    """The newest ``runs/<stamp>-<pid>`` folder of a workspace that holds a resolved config."""
    runs = sorted(p for p in (workspace / "runs").glob("*/config.yaml")) if (workspace / "runs").is_dir() else []
    if not runs:
        raise ConfigError(
            f"{workspace}: no runs/<id>/config.yaml here, so there is no run to report. Expected the workspace "
            "folder of a pipeline that `reidaug run` has run (it has cache/ and runs/). Fix: pass the workspace "
            "of a run, or the pipeline YAML itself: reidaug report PIPELINE.yaml")
    return runs[-1].parent


def views_from_run_dir(run_dir: Path, workspace: Path) -> tuple[list[StageView], dict[str, Any]]:
    """Every stage of the run whose resolved config is ``run_dir/config.yaml``; and that config."""
    path = run_dir / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        stages = cfg["stages"]
        if not isinstance(stages, dict):
            raise TypeError("stages is not a mapping")
        specs = [(str(name), str(s.get("uses", name)), str(s["key"]), dict(s.get("inputs") or {}),
                  dict(s.get("params") or {})) for name, s in stages.items()]
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise ConfigError(f"{path}: not a resolved run config that reidaug run wrote ({type(e).__name__}: {e}). "
                          "Fix: report the pipeline YAML instead: reidaug report PIPELINE.yaml") from None
    cache = Cache(workspace)
    return [_view(cache, *spec) for spec in specs], cfg


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines log; a torn last line (a killed writer) is left out."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
