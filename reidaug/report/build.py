"""One self-contained HTML page of a pipeline's results: ``reidaug report`` (and the end of ``reidaug run``).

Everything comes from what the stages recorded in the cache — ``meta.json`` (state, key, timings,
summary), the loss logs and sample grids of the generators, the exported HDF5 file (grids of real
and fake images, pose overlays), the scores' ``metrics.json``, and each re-ID run's folder — so a
report never recomputes a stage and can be made while a run is still going (unfinished stages show
as partial or missing). Images are embedded as ``data:`` URIs: the file opens anywhere, offline,
with no server. A part that cannot be drawn (a damaged file) becomes a note in its section, never a
failed report.

A section per stage kind: :data:`SECTIONS` maps a kind to the function that adds its blocks; every
stage also gets its header (state, key, time, size, inputs) and the summary lines it printed.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from reidaug.report import plots
from reidaug.report.collect import StageView, read_json, read_jsonl

log = logging.getLogger(__name__)

# what a damaged file or an odd record raises while a part is drawn; the part becomes a note. Broad on
# purpose (h5py raises RuntimeError on a damaged file, a JSON of the wrong shape AttributeError): a report
# is a view of finished work and must not fail because one picture cannot be made (the traceback is
# logged at debug level).
_FAILURES = (Exception,)



@dataclasses.dataclass
class Block:
    kind: str  # text | pre | table | image | note
    text: str = ""
    rows: list[list[str]] = dataclasses.field(default_factory=list)  # table: first row is the header
    src: str = ""  # image: a data URI
    caption: str = ""


@dataclasses.dataclass
class Section:
    view: StageView
    blocks: list[Block] = dataclasses.field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "stage-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in self.view.name)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_block(png: bytes | None, caption: str) -> Block | None:
    return Block("image", src=data_uri(png), caption=caption) if png else None


def file_image(path: Path, caption: str) -> Block | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Block("note", text=f"{path.name}: not a PNG file, left out")
    return image_block(data, caption)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_time(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def flatten_numbers(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every number / string leaf of a JSON object (lists of numbers shortened)."""
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list):
        if d and all(isinstance(x, (int, float)) for x in d) and len(d) > 6:
            out.append((prefix, f"[{', '.join(_fmt(x) for x in d[:5])}, … ({len(d)} values)]"))
        elif all(not isinstance(x, (dict, list)) for x in d):
            out.append((prefix, ", ".join(_fmt(x) for x in d)))
    elif d is not None and not isinstance(d, bool):
        out.append((prefix, d))
    return out


# -- per kind ---------------------------------------------------------------------------------
def _ingest(s: Section, ctx: "_Context") -> None:
    q = read_json(s.view.entry / "quarantine.json") or {}
    counts = {**{f"quarantined: {k}": v for k, v in (q.get("counts") or {}).items()},
              **{f"skipped: {k}": v for k, v in (q.get("skipped_counts") or {}).items()}}
    if counts:
        s.blocks.append(Block("table", rows=[["files set aside", "count"],
                                             *[[k, str(v)] for k, v in sorted(counts.items())]]))
        examples = [f"{e.get('path', '?')}: {e.get('reason', '')} {e.get('detail', '')}".strip()
                    for e in (q.get("quarantined") or [])[:10]]
        if examples:
            s.blocks.append(Block("pre", text="\n".join(examples), caption="first quarantined files"))
    else:
        s.blocks.append(Block("text", text="No file was quarantined or skipped."))


def _exports_binding(ctx: "_Context", ref: str) -> list[StageView]:
    return [v for v in ctx.views if v.kind == "export-hdf5" and v.state == "cached" and ref in v.inputs.values()]


def _extract_pose(s: Section, ctx: "_Context") -> None:
    from reidaug.data.inspect import pose_grid

    exports = _exports_binding(ctx, f"{s.view.name}.keypoints")
    if not exports:
        s.blocks.append(Block("note", text="No cached export-hdf5 stage carries these keypoints, so no overlay "
                                           "is drawn (bind export-hdf5's inputs.keypoints to it)."))
        return
    e = exports[0]
    ctx.add_png(s, lambda out: pose_grid(e.entry / "dataset.h5", out, split="train", count=16),
                f"skeletons on 16 train crops of {e.name}'s file (every keypoint with a score > 0 is drawn)")


def _cluster_poses(s: Section, ctx: "_Context") -> None:
    b = file_image(s.view.entry / "canonical_poses.png", "the canonical poses (PN-GAN), one skeleton per cluster")
    if b:
        s.blocks.append(b)


def _train_gan(s: Section, ctx: "_Context") -> None:
    train = s.view.entry / "train"
    models = sorted(p for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not models:
        s.blocks.append(Block("note", text="no training folder recorded (train/<model>/)"))
    for m in models:
        b = image_block(plots.loss_curves_png(read_jsonl(m / "losses.jsonl"), m.name), f"{m.name}: logged losses")
        if b:
            s.blocks.append(b)
        samples = sorted((m / "samples").glob("*.png")) if (m / "samples").is_dir() else []
        pick = next((p for p in samples if p.name == "final.png"), samples[-1] if samples else None)
        if pick is not None:
            b = file_image(pick, f"{m.name}: samples ({pick.stem})")
            if b:
                s.blocks.append(b)


def _export(s: Section, ctx: "_Context") -> None:
    from reidaug.data.h5format import open_h5
    from reidaug.data.inspect import fakes_grid, grid, summary

    path = s.view.entry / "dataset.h5"
    if not s.view.summary.get("report"):  # the stage's own lines already hold inspect's summary
        s.blocks.append(Block("pre", text=summary(path), caption="reidaug inspect"))
    ctx.add_png(s, lambda out: grid(path, out, split="train", per_cell=3),
                "train images by source (rows) and camera (columns; a camera-style fake sits under its target camera)")
    with open_h5(path) as f:
        m = f.meta("train")
        fake_sources = sorted({m.source_names[int(c)] for c in set(m.source[m.origin >= 0].tolist())})
        has_kp = m.keypoints is not None
    for src in fake_sources:
        ctx.add_png(s, lambda out, src=src: fakes_grid(path, out, split="train", count=8, source=src),
                    f"{src}: real images (first column) beside their fakes")
    if has_kp and not any(v.kind == "extract-pose" for v in ctx.views):
        from reidaug.data.inspect import pose_grid

        ctx.add_png(s, lambda out: pose_grid(path, out, split="train", count=16), "stored keypoints on 16 train crops")


def _scores(s: Section, ctx: "_Context") -> None:
    metrics = read_json(s.view.entry / "metrics.json")
    if metrics:
        rows = [[k, _fmt(v)] for k, v in flatten_numbers(metrics)]
        s.blocks.append(Block("table", rows=[["metric", "value"], *rows]))
    for png in sorted(s.view.entry.glob("*.png")):
        b = file_image(png, png.name)
        if b:
            s.blocks.append(b)


def _train_reid(s: Section, ctx: "_Context") -> None:
    run = s.view.entry / "run"
    for name, split in (("metrics.json", "test"), ("metrics_val.json", "validation")):
        m = read_json(run / name)
        if not m:
            continue
        header = ["split", "protocol", "metric", "flip", "queries", "rank-1", "rank-5", "rank-10", "mAP", "mINP"]
        pct = [f"{100 * m[k]:.1f}%" if isinstance(m.get(k), (int, float)) else "-"
               for k in ("rank1", "rank5", "rank10", "mAP", "mINP")]
        row = [split, str(m.get("protocol", "-")), str(m.get("metric", "-")), str(m.get("flip", "-")),
               str(m.get("num_queries", "-")), *pct]
        rows = [header, row]
        fb = m.get("flip_beside")
        if isinstance(fb, dict) and "rank1" in fb:
            rows.append([split, row[1], row[2], str(fb.get("flip")), row[4], f"{100 * fb['rank1']:.1f}%", "-", "-",
                         f"{100 * fb['mAP']:.1f}%", "-"])
        s.blocks.append(Block("table", rows=rows))
    for png, caption in (("curves.png", "training loss and accuracy"), ("cmc.png", "CMC curve (test)"),
                         ("cmc_val.png", "CMC curve (validation)")):
        b = file_image(run / png, caption)
        if b:
            s.blocks.append(b)


#: stage kind -> what its section shows besides the header and the summary lines
SECTIONS: dict[str, Callable[[Section, "_Context"], None]] = {
    "ingest": _ingest,
    "extract-pose": _extract_pose,
    "cluster-poses": _cluster_poses,
    "train-camstyle": _train_gan,
    "train-posegan": _train_gan,
    "train-dcgan": _train_gan,
    "train-dgnet": _train_gan,
    "export-hdf5": _export,
    "score-fakes": _scores,
    "score-posegan": _scores,
    "evaluate-posefusion": _scores,
    "score-dgnet": _scores,
    "train-reid": _train_reid,
}


class _Context:
    def __init__(self, views: Sequence[StageView], tmp: Path) -> None:
        self.views = list(views)
        self.tmp = tmp
        self._n = 0

    def add_png(self, s: Section, draw: Callable[[Path], Any], caption: str) -> None:
        """Run ``draw(out_png)`` (an inspect grid) and embed what it wrote; a failure becomes a note."""
        self._n += 1
        out = self.tmp / f"{self._n:04d}.png"
        try:
            written = draw(out)
        except _FAILURES as e:
            log.debug("report: %s: %s failed", s.view.name, caption, exc_info=True)
            s.blocks.append(Block("note", text=f"{caption}: not drawn ({e})"))
            return
        if written is not None and out.exists():
            b = file_image(out, caption)
            if b:
                s.blocks.append(b)


def _runs_section(views: Sequence[StageView]) -> dict[str, Any] | None:
    """The compare table of every cached train-reid stage (mean ± std over seeds) and its bar chart."""
    from reidaug.eval.compare import compare, read_run

    runs = []
    for v in views:
        if v.kind == "train-reid" and v.state == "cached":
            try:
                runs.append(read_run(v.entry / "run", name=v.name, data_label=v.inputs.get("data", "")))
            except _FAILURES as e:
                log.debug("report: run %s unreadable: %s", v.name, e)
    if not runs:
        return None
    record = compare(runs)
    cols = record["columns"]
    rows = [["arm", "seeds", *cols, "rank-1 (%)", "rank-5 (%)", "mAP (%)"]]
    for name, a in record["arms"].items():
        if not a["n"]:
            continue
        cells = []
        for k in ("rank1", "rank5", "mAP"):
            x = a[k]
            cells.append("-" if not x else f"{100 * x['mean']:.1f}" if a["n"] < 2 else
                         f"{100 * x['mean']:.1f} ± {100 * x['std']:.1f}")
        rows.append([name, str(a["n"]), *[str(a["params"].get(c, "-")) for c in cols], *cells])
    png = plots.runs_png([(n, a["rank1"], a["mAP"]) for n, a in record["arms"].items() if a["n"]])
    return {"rows": rows, "image": image_block(png, "rank-1 and mAP per arm (error bars: std over seeds)")}


def build_report(views: Sequence[StageView], out: str | Path, *, title: str, source: str, workspace: Path,
                 run_dir: Path | None = None) -> Path:
    """Write the report of ``views`` (every stage of one pipeline) to ``out``; returns its path."""
    from reidaug.io.atomic import write_text

    sections = []
    with tempfile.TemporaryDirectory(prefix="reidaug-report-") as tmp:
        ctx = _Context(views, Path(tmp))
        for v in views:
            s = Section(v)
            lines = v.summary.get("report")
            if isinstance(lines, list) and lines:
                s.blocks.append(Block("pre", text="\n".join(str(x) for x in lines)))
            fill = SECTIONS.get(v.kind)
            if v.state == "damaged":
                s.blocks.append(Block("note", text=(
                    f"damaged: {v.total - v.done if v.total is not None else '?'} chunk file(s) of this finished "
                    "entry fail their size check; `reidaug run` recomputes only them (`reidaug cache verify` "
                    "checks every sha256)")))
            if fill is not None and v.state in ("cached", "damaged") and v.entry is not None:
                try:
                    fill(s, ctx)
                except _FAILURES as e:
                    log.debug("report: section %s failed", v.name, exc_info=True)
                    s.blocks.append(Block("note", text=f"part of this section could not be drawn: {e}"))
            elif v.state in ("partial", "missing"):
                s.blocks.append(Block("note", text=(
                    f"partial: {v.done}/{v.total if v.total is not None else '?'} chunks done; "
                    "`reidaug run` resumes it" if v.state == "partial" else "not run yet (no cache entry)")))
            sections.append(s)
        try:
            runs = _runs_section(views)
        except _FAILURES as e:
            log.debug("report: runs table failed", exc_info=True)
            runs = {"rows": [["the runs table could not be made", f"{type(e).__name__}: {e}"]], "image": None}
    try:
        dag = plots.dag_png([(v.name, v.state, v.upstream) for v in views])
    except _FAILURES:
        log.debug("report: stage graph failed", exc_info=True)
        dag = None
    versions = next((v.meta.get("versions") for v in views if isinstance(v.meta.get("versions"), dict)), {})
    states: dict[str, int] = {}
    for v in views:
        states[v.state] = states.get(v.state, 0) + 1
    total = sum(v.seconds or 0.0 for v in views)
    page = _render(
        title=title, source=source, workspace=str(workspace), run_dir=str(run_dir) if run_dir else None,
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        states=states, total_time=human_time(total), versions=versions,
        dag=data_uri(dag) if dag else None, colours=plots.STATE_COLOURS,
        stages=[{"anchor": s.anchor, "name": s.view.name, "kind": s.view.kind, "state": _state(s.view),
                 "state_class": s.view.state, "key": s.view.key[:12], "time": human_time(s.view.seconds),
                 "size": human_size(s.view.size) if s.view.entry else "-",
                 "created": s.view.meta.get("created", ""),
                 "inputs": ", ".join(f"{k} ← {r}" for k, r in s.view.inputs.items()),
                 "entry": str(s.view.entry) if s.view.entry else "", "blocks": s.blocks} for s in sections],
        runs=runs,
    )
    write_text(out, page)
    return Path(out)


def _state(v: StageView) -> str:
    if v.state == "partial":
        return f"partial {v.done}/{v.total if v.total is not None else '?'}"
    return v.state


def _render(**context: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)
