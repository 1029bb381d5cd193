"""Compare re-ID runs: DVC's ``exp show`` for re-ID (``reidaug compare``).

A run is a folder that ``reidaug train`` or a ``train-reid`` stage wrote: ``config.json`` (the
training config and the data it read) and ``metrics.json`` (test) or ``metrics_val.json``
(validation, ``val_fraction``). :func:`read_run` reads one; :func:`group_runs` puts runs that differ
only by ``seed`` into one arm (same training params up to the non-semantic ones, same data file by
content, same split and evaluation settings, same file tested on, same pre-training arm when
fine-tuned); :func:`compare` gives each arm's mean ± sample std
(ddof 1) of rank-1 / rank-5 / mAP over its seeds, the params that differ between arms, and, against
a named baseline arm, the paired differences per seed both have (their mean ± std), which is the
number to read when seeds move both arms together. :func:`render` writes it as markdown, CSV or
JSON; the JSON has the shape of the campaign's results file,
``{"baseline", "arms": {ARM: {"seeds": {SEED: {"rank1", "rank5", "mAP"}}, ...}}, "paired"}``.

This module reads JSON only; the CLI resolves a pipeline YAML's ``train-reid`` stages to their run
folders in the cache, or to their records (``reidaug archive``).
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from reidaug.errors import ConfigError, DataError
from reidaug.train.config import NONSEMANTIC

METRIC_KEYS = ("rank1", "rank5", "mAP")
FORMATS = ("md", "csv", "json")
SEED_SUFFIX = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")
# training params that never change a result (the trainer's NONSEMANTIC, and the thread count), plus the
# seed (what an arm varies)
_NOT_COMPARED = NONSEMANTIC | {"threads", "seed"}
# evaluation settings an arm's runs must share (a different one is another arm); eval_data: the file tested
# on when it is not the training file (train on one dataset, test on another)
_EVAL_KEYS = ("split", "protocol", "metric", "flip", "eval_data")


@dataclasses.dataclass
class Run:
    """One trained and evaluated run."""

    name: str  # a train-reid stage's name, or the run folder's name
    folder: Path
    seed: int
    params: dict[str, Any]  # the training config, without the seed and the non-semantic knobs
    data: str  # the training file's content fingerprint (or its path when unknown)
    data_label: str  # how the table names the data (the export stage, or the file)
    evaluation: dict[str, Any]  # split, protocol, metric, flip
    metrics: dict[str, float] | None  # rank1, rank5, mAP (fractions); None: not evaluated
    status: str = "done"  # done | not evaluated | missing (a pipeline stage not in the cache)
    init: str = ""  # what the weights started from (fine-tuning), as grouped: "" for the usual start
    init_label: str = ""  # ... and as the table names it
    eval_label: str = ""  # how the table names the file tested on (evaluation["eval_data"] is what is grouped)


@dataclasses.dataclass
class Arm:
    name: str
    runs: list[Run]

    @property
    def done(self) -> list[Run]:
        return [r for r in self.runs if r.metrics is not None]

    def seeds(self) -> dict[str, dict[str, float]]:
        return {str(r.seed): dict(r.metrics) for r in sorted(self.done, key=lambda r: r.seed)}  # type: ignore[arg-type]

    def stat(self, key: str) -> dict[str, float] | None:
        xs = [r.metrics[key] for r in self.done if r.metrics and r.metrics.get(key) is not None]
        if not xs:
            return None
        return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def read_run(folder: str | Path, name: str | None = None, data_label: str | None = None,
             init_label: str | None = None, eval_label: str | None = None, init_group: str | None = None,
             _depth: int = 0) -> Run:
    """A run folder (``config.json`` + ``metrics.json`` or ``metrics_val.json``) as a :class:`Run`.

    A fine-tuned run (``init_from``, a ``train-reid`` ``init_model``) is another arm than the same recipe
    started from ImageNet, and fine-tunings of different pre-trainings are different arms: ``init_label``
    names the pre-training arm (the CLI passes the init stage's name without its seed) and ``init_group``
    identifies it (the CLI passes the init stage's pipeline key material less its seed, so the seeds of one
    pre-training arm share it and same-named stages of two pipelines that differ do not); without them the
    pre-training run's own folder is read when it is there (its arm signature), else its path stands.
    Likewise a run tested on another file than it trained on (``eval_data``) differs by that file's
    fingerprint (its pipeline key, else its path); ``eval_label`` only names it."""
    folder = Path(folder)
    if (folder / "run" / "config.json").is_file() and not (folder / "config.json").is_file():
        folder = folder / "run"  # a train-reid cache entry: its run folder
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{folder} is not a re-ID run folder: it has no config.json. Fix: pass the folder "
                          "`reidaug train` wrote (its -o), a train-reid cache entry, or a pipeline YAML.")
    try:
        cfg = json.loads(cfg_path.read_text())
        train, resolved = dict(cfg["train"]), cfg.get("resolved", {})
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{cfg_path}: not a reidaug training config ({e}). Fix: pass a run folder of "
                        "reidaug train.") from None
    seed = int(train.get("seed", 0))
    params = {k: v for k, v in (_defaults() | train).items() if k not in _NOT_COMPARED}
    data_path = str(resolved.get("data", ""))
    metrics, evaluation, status = None, {"split": "test" if not params.get("val_fraction") else "val"}, "not evaluated"
    for file, split in (("metrics.json", "test"), ("metrics_val.json", "val")):
        if (folder / file).is_file():
            m = json.loads((folder / file).read_text())
            metrics = {k: float(m[k]) for k in METRIC_KEYS if m.get(k) is not None}
            tested = m.get("data") if isinstance(m.get("data"), dict) else {}
            other = tested.get("same_as_training") is False
            tested_id = tested.get("train_fingerprint") or tested.get("pipeline_key") or tested.get("path")
            evaluation = {"split": split, "protocol": m.get("protocol"), "metric": m.get("metric"),
                          "flip": bool(m.get("flip", False)), "eval_data": str(tested_id) if other else "-"}
            status = "done"
            break
    init, label = "", ""
    if init_from := resolved.get("init_from"):
        init, label = _init_of(str(init_from), init_label, init_group, _depth)
    if evaluation.get("eval_data", "-") != "-":
        eval_label = eval_label or evaluation["eval_data"][:12]
    return Run(name=name or folder.name, folder=folder, seed=seed, params=params,
               data=str(resolved.get("data_fingerprint") or data_path),
               data_label=data_label or (Path(data_path).name if data_path else "?"),
               evaluation=evaluation, metrics=metrics, status=status, init=init, init_label=label,
               eval_label=eval_label or "")


_MAX_INIT_DEPTH = 8  # pre-trainings of pre-trainings; a loop of hand-copied folders stops here


def _init_of(init_from: str, label: str | None, group: str | None, depth: int) -> tuple[str, str]:
    """(grouping signature, display label) of the run a fine-tuning started from: the pre-training run's
    own signature (seed-free, so the seeds of one fine-tuning arm group) when its folder is readable,
    else its path. ``label`` (the CLI's init stage arm) names it; ``group`` (its seed-free key) groups it,
    else the label does."""
    if label:
        return (f"stage:{group}" if group else f"arm:{label}"), label
    path = Path(init_from)
    folder = path.parent if path.suffix == ".pt" else path  # an init_model bound to a train-reid's weights
    if depth < _MAX_INIT_DEPTH:
        try:
            pre = read_run(folder, _depth=depth + 1)
        except (ConfigError, DataError, OSError, ValueError):
            pre = None
        if pre is not None:
            return f"run:{_signature(pre)}", f"a run on {pre.data_label}"
    return f"path:{folder}", folder.parent.name[:12] or str(folder)


def _defaults() -> dict[str, Any]:
    """What a config written before a field existed meant by leaving it out (as the trainer reads it)."""
    from reidaug.train.config import LEGACY_VALUES, TrainConfig

    return TrainConfig().to_dict() | LEGACY_VALUES


def _signature(run: Run) -> str:
    return json.dumps([run.params, run.data, [run.evaluation.get(k) for k in _EVAL_KEYS], run.init],
                      sort_keys=True, default=str)


def _arm_name(runs: Sequence[Run]) -> str:
    bases = {(m["arm"] if (m := SEED_SUFFIX.match(r.name)) else r.name) for r in runs}
    return bases.pop() if len(bases) == 1 else runs[0].name


def group_runs(runs: Iterable[Run]) -> list[Arm]:
    """Runs that differ only by seed make one arm, in the order their first run came; a run not yet
    trained (``missing``) joins the arm its name says, or stands alone."""
    arms: dict[str, list[Run]] = {}
    pending: list[Run] = []
    for r in runs:
        if r.status == "missing":
            pending.append(r)
            continue
        arms.setdefault(_signature(r), []).append(r)
    out = [Arm(_arm_name(rs), rs) for rs in arms.values()]
    names = {a.name: a for a in out}
    if len(names) < len(out):  # two arms would read the same: say which run each holds
        for a in out:
            if sum(b.name == a.name for b in out) > 1:
                a.name = "/".join(r.name for r in a.runs)
        counts = collections.Counter(a.name for a in out)
        seen: collections.Counter[str] = collections.Counter()
        for a in out:  # same-named stages of two pipelines: still the same; number them in order
            if counts[a.name] > 1:
                seen[a.name] += 1
                a.name = f"{a.name} ({seen[a.name]})"
        names = {a.name: a for a in out}
    for r in pending:
        base = m["arm"] if (m := SEED_SUFFIX.match(r.name)) else r.name
        if base in names:
            names[base].runs.append(r)
        else:
            names[base] = Arm(base, [r])
            out.append(names[base])
    return out


def differing_params(arms: Sequence[Arm]) -> list[str]:
    """The training params (and the data) whose values are not the same in every arm."""
    firsts = [a.runs[0] for a in arms if a.runs and a.runs[0].status != "missing"]
    keys = sorted({k for r in firsts for k in r.params})
    out = [k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True, default=str) for r in firsts}) > 1]
    if len({r.data for r in firsts}) > 1:
        out.append("data")
    if len({r.init for r in firsts}) > 1:
        out.append("init")
    for k in _EVAL_KEYS:
        if len({str(r.evaluation.get(k)) for r in firsts}) > 1:
            out.append(k)
    return out


def paired_difference(mine: dict[str, dict[str, float]], base: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``mine - base`` per seed both have (``{seed: {"rank1", "mAP"}}`` each), with the mean ± sample std
    of the differences (std None below 2 seeds): ``{"seeds", "rank1": {...}, "mAP": {...}}``."""
    seeds = sorted(set(mine) & set(base), key=int)
    d: dict[str, Any] = {"seeds": seeds}
    for k in ("rank1", "mAP"):
        xs = [mine[s][k] - base[s][k] for s in seeds]
        d[k] = {"per_seed": xs, "mean": statistics.fmean(xs) if xs else None,
                "std": statistics.stdev(xs) if len(xs) > 1 else None}
    return d


def paired(arms: Sequence[Arm], baseline: str) -> dict[str, dict[str, Any]]:
    """Per arm: :func:`paired_difference` against the ``baseline`` arm."""
    by_name = {a.name: a for a in arms}
    if baseline not in by_name:
        raise ConfigError(f"--baseline {baseline!r} is none of the arms compared: {', '.join(by_name)}. "
                          "Fix: name one of them (an arm is a run name without its -s<seed> suffix).")
    base = by_name[baseline].seeds()
    return {a.name: paired_difference(a.seeds(), base) for a in arms if a.name != baseline}


def paired_markdown(diffs: dict[str, dict[str, Any]], baseline: str) -> list[str]:
    """The paired differences as a markdown table (points): mean ± std (per seed) per arm."""
    lines = [f"| arm − {baseline} (paired by seed) | seeds | rank-1 (points) | mAP (points) |", "|---|---|---|---|"]
    for name, d in diffs.items():
        cells = []
        for k in ("rank1", "mAP"):
            x = d[k]
            per = ", ".join(f"{100 * v:+.1f}" for v in x["per_seed"])
            cells.append("-" if x["mean"] is None else f"{100 * x['mean']:+.1f}" if len(x["per_seed"]) < 2 else
                         f"{100 * x['mean']:+.1f} ± {100 * x['std']:.1f} ({per})")
        lines.append(f"| {name} | {', '.join(d['seeds']) or '-'} | {cells[0]} | {cells[1]} |")
    return lines


def _value(run: Run, key: str) -> Any:
    if key == "data":
        return run.data_label
    if key == "init":
        return run.init_label or "-"
    if key == "eval_data":
        return run.eval_label or "-"
    if key in _EVAL_KEYS:
        return run.evaluation.get(key)
    return run.params.get(key)


def compare(runs: Iterable[Run], baseline: str | None = None) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (see the module docstring)."""
    arms = group_runs(runs)
    if not arms:
        raise ConfigError("nothing to compare: no re-ID runs found. Fix: pass run folders, train-reid cache "
                          "entries, or a pipeline YAML with train-reid stages.")
    cols = differing_params(arms)
    record: dict[str, Any] = {"baseline": baseline, "columns": cols, "arms": {},
                              "std": "sample standard deviation over seeds (ddof 1)"}
    for a in arms:
        first = next((r for r in a.runs if r.status != "missing"), a.runs[0])
        record["arms"][a.name] = {
            "n": len(a.done), "seeds": a.seeds(),
            "params": {k: _value(first, k) for k in cols} if first.status != "missing" else {},
            **{k: a.stat(k) for k in METRIC_KEYS},
            "runs": [{"name": r.name, "seed": r.seed, "status": r.status, "folder": str(r.folder)} for r in a.runs],
        }
    record["paired"] = paired(arms, baseline) if baseline else {}
    return record


def _pm(d: dict[str, float] | None, n: int = 2) -> str:
    if not d:
        return "-"
    return f"{100 * d['mean']:.1f}" if n < 2 else f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"


def _cell(v: Any) -> str:
    if v is None:  # a param left at "not set" (sources: every source; no init): as the init column shows it
        return "-"
    return json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)


def render(record: dict[str, Any], fmt: str = "md") -> str:
    """``record`` (:func:`compare`) as markdown tables, CSV (one row per arm) or JSON."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}.")
    if fmt == "json":
        return json.dumps(record, indent=2, default=str) + "\n"
    cols, arms = record["columns"], record["arms"]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["arm", "n", "seeds", *cols, *[f"{k}_{s}" for k in METRIC_KEYS for s in ("mean", "std")],
                    *([f"paired_{k}_{s}" for k in ("rank1", "mAP") for s in ("mean", "std")] if record["baseline"]
                      else [])])
        for name, a in arms.items():
            row = [name, a["n"], " ".join(a["seeds"]), *[_cell(a["params"].get(c, "")) for c in cols]]
            for k in METRIC_KEYS:
                row += [f"{a[k]['mean']:.6f}", f"{a[k]['std']:.6f}"] if a[k] else ["", ""]
            if record["baseline"]:
                d = record["paired"].get(name)
                for k in ("rank1", "mAP"):
                    x = d[k] if d else None
                    row += ["" if not x or x["mean"] is None else f"{x['mean']:.6f}",
                            "" if not x or x["std"] is None else f"{x['std']:.6f}"]
            w.writerow(row)
        return buf.getvalue()
    lines = ["| arm | n | " + "".join(f"{c} | " for c in cols) + "rank-1 (%) | rank-5 (%) | mAP (%) |",
             "|---|---|" + "---|" * len(cols) + "---|---|---|"]
    for name, a in arms.items():
        if not a["n"]:
            continue  # listed below as not in the table
        cells = "".join(f"{_cell(a['params'].get(c, '-'))} | " for c in cols)
        n = a["n"]
        lines.append(f"| {name} | {n} | {cells}{_pm(a['rank1'], n)} | {_pm(a['rank5'], n)} | {_pm(a['mAP'], n)} |")
    missing = [(r["name"], r["status"]) for a in arms.values() for r in a["runs"] if r["status"] != "done"]
    if missing:
        lines += ["", "Not in the table: " + ", ".join(f"{n} ({s})" for n, s in missing) + "."]
    if record["baseline"]:
        shown = {name: d for name, d in record["paired"].items() if arms[name]["n"]}
        lines += ["", *paired_markdown(shown, record["baseline"])]
    return "\n".join(lines) + "\n"
