"""Ablation table: mean ± std of rank-1 / rank-5 / mAP per arm, from a pipeline's train-reid stages.

Reads the cache of a workspace; trains nothing. Every ``train-reid`` stage of the pipeline whose
instance name ends in ``-s<seed>`` is one run of the arm named by the rest (``reid-b-lsr-s2`` is
seed 2 of arm ``reid-b-lsr``). Per run: rank-1 / mAP / mINP from the stage's summary, rank-5 and
rank-10 from its ``run/metrics.json`` CMC, steps, images/s and wall times. Each arm is described
from the graph: the export it trains on (its sets) and, for generated sets, the assign-labels
scheme (epsilon, teacher temperature / top-k, and the teacher's agreement with the identity the
fake keeps). Mean ± sample std (ddof 1) over seeds; a run whose entry is missing is listed as
such and left out of its arm's numbers.

    .venv/bin/python bench/ablation_table.py configs/ablations/cuhk01_camstyle.yaml \
        [-w WORKSPACE] [--json bench/results/ablation_cuhk01.json]

Prints the markdown tables (the BENCHMARKS.md section's numbers) and writes the JSON. The
user-facing table is ``reidaug compare PIPELINE.yaml -b BASELINE`` (reidaug/eval/compare.py: arms by
params rather than by name, md / csv / json); this script adds per-run timings, the label schemes of
each arm's data and ``--arm-from`` for runs whose cache is gone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from common import write_result
from reidaug.eval.compare import paired_difference, paired_markdown
from reidaug.pipeline.cache import Cache
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import Graph, build_graph
from reidaug.stages import STAGES

SEED = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")


def workspace_of(graph: Graph, override: str | None) -> Path:
    """As ``reidaug run`` resolves it: -w, else the YAML's ``workspace:`` (relative to the YAML)."""
    if override:
        return Path(override).expanduser().resolve()
    ws = graph.loaded.config.workspace
    if ws:
        w = Path(ws).expanduser()
        return (w if w.is_absolute() else graph.base_dir / w).resolve()
    return (Path("workspace") / graph.loaded.config.name).resolve()


def _meta(cache: Cache, graph: Graph, name: str) -> dict[str, Any] | None:
    return cache.load_meta(graph.nodes[name].spec.name, graph.keys[name])


def describe_data(graph: Graph, cache: Cache, export: str) -> dict[str, Any]:
    """Sets of an export and, per generated set, the label scheme it got (and the teacher's agreement)."""
    node = graph.nodes[export]
    sets = list(node.params.sets or ["real", *[s for s, slot in (("camstyle", "camstyle"),) if node.inputs.get(slot)]])
    out: dict[str, Any] = {"export": export, "sets": sets, "labels": {},
                           "made_by": {s: node.inputs[s][0] for s in sets if s != "real" and node.inputs.get(s)}}
    ref = node.inputs.get("labels")
    if ref is None:
        return out
    labels = ref[0]
    lp = graph.nodes[labels].params
    meta = _meta(cache, graph, labels)
    for s in sets:
        if s == "real":
            continue
        scheme = lp.schemes[s]
        d: dict[str, Any] = {"stage": labels, "scheme": scheme}
        if scheme == "lsr":
            d["epsilon"] = lp.epsilon
        if scheme == "teacher":
            d.update(temperature=lp.temperature, topk=lp.topk,
                     teacher=graph.nodes[labels].inputs["teacher"][0])
            if meta is not None:
                d["teacher_agreement"] = meta["summary"]["sets"].get(s, {}).get("teacher_agreement")
        out["labels"][s] = d
    return out


def collect(graph: Graph, cache: Cache) -> dict[str, Any]:
    arms: dict[str, dict[str, Any]] = {}
    for name, node in graph.nodes.items():
        m = SEED.match(name)
        if node.spec.name != "train-reid" or m is None:
            continue
        arm = arms.setdefault(m["arm"], {"runs": [], "data": describe_data(graph, cache, node.inputs["data"][0])})
        p = node.params
        run: dict[str, Any] = {"stage": name, "seed": p.seed, "key": graph.keys[name][:12]}
        meta = _meta(cache, graph, name)
        if meta is None:
            run["status"] = cache.state(node.spec.name, graph.keys[name]).status
            arm["runs"].append(run)
            continue
        s = meta["summary"]
        entry = cache.entry_dir(node.spec.name, graph.keys[name])
        split = s.get("split", "test")
        metrics = json.loads((entry / "run" / ("metrics_val.json" if split == "val" else "metrics.json")).read_text())
        cmc = metrics["cmc"]

        def rounded(key: str, digits: int = 1, s: dict[str, Any] = s) -> float | None:
            return round(float(s[key]), digits) if s.get(key) is not None else None

        run.update(
            status="cached", split=split, rank1=s["rank1"], rank5=cmc[4], rank10=cmc[9], mAP=s["mAP"],
            mINP=s.get("mINP"), protocol=s.get("protocol"), num_queries=int(s["num_queries"]), steps=int(s["steps"]),
            images_seen=int(s["steps"]) * p.train_batch_size, images_per_s=rounded("images_per_s", 2),
            final_loss=round(s["final_loss"], 4), final_train_accuracy=round(s["final_accuracy"], 4),
            train_wall_s=rounded("train_wall_s"), eval_s=rounded("eval_s"),
            stage_wall_s=round(meta["timings"]["chunks_wall_s"], 1), created=meta["created"],
        )
        arm["runs"].append(run)
        arm.setdefault("params", {k: v for k, v in meta["params"].items() if k != "seed"})
    for arm in arms.values():
        done = [r for r in arm["runs"] if r["status"] == "cached"]
        arm["n"] = len(done)
        for k in ("rank1", "rank5", "mAP", "mINP"):
            xs = [r[k] for r in done if r.get(k) is not None]
            if xs:
                arm[k] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}
        arm["steps"] = sorted({r["steps"] for r in done})
        arm["seeds"] = {str(r["seed"]): {"rank1": r["rank1"], "mAP": r["mAP"]} for r in done}
    return arms


def paired(arms: dict[str, dict[str, Any]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per arm: (arm - baseline) per seed both have, and their mean ± sample std (compare's rule)."""
    base = arms.get(baseline, {}).get("seeds", {})
    return {name: paired_difference(arm.get("seeds", {}), base) for name, arm in arms.items() if name != baseline}


def _pm(d: dict[str, float] | None) -> str:
    return "-" if not d else f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}"


def describe(arm: dict[str, Any]) -> str:
    gen = arm["data"]["labels"]
    if not gen:
        return "real only"
    parts = []
    for s, d in gen.items():
        extra = {"lsr": f" (ε {d.get('epsilon')})",
                 "teacher": f" (T {d.get('temperature')}, top-{d.get('topk')})"}.get(d["scheme"], "")
        by = arm["data"].get("made_by", {}).get(s)
        parts.append(f"+ {s}{f' ({by})' if by else ''} {d['scheme']}{extra}")
    return " ".join(parts)


def markdown(arms: dict[str, dict[str, Any]]) -> str:
    lines = ["| arm | training data | n | rank-1 (%) | rank-5 (%) | mAP (%) | steps |",
             "|---|---|---|---|---|---|---|"]
    for name, a in arms.items():
        lines.append(f"| {name} | {describe(a)} | {a['n']} | {_pm(a.get('rank1'))} | {_pm(a.get('rank5'))} | "
                     f"{_pm(a.get('mAP'))} | {', '.join(map(str, a['steps'])) or '-'} |")
    lines += ["",
              "| run | seed | rank-1 (%) | rank-5 (%) | mAP (%) | final train loss | train acc | train s | eval s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a in arms.values():
        for r in a["runs"]:
            if r["status"] != "cached":
                lines.append(f"| {r['stage']} | {r['seed']} | {r['status']} | | | | | | |")
                continue
            lines.append(f"| {r['stage']} | {r['seed']} | {100 * r['rank1']:.1f} | {100 * r['rank5']:.1f} | "
                         f"{100 * r['mAP']:.1f} | {r['final_loss']:.3f} | {r['final_train_accuracy']:.3f} | "
                         f"{r['train_wall_s']:.0f} | {r['eval_s']:.0f} |")
    teachers = [(n, s, d) for n, a in arms.items() for s, d in a["data"]["labels"].items() if d["scheme"] == "teacher"]
    for n, s, d in teachers:
        if d.get("teacher_agreement") is not None:
            lines += ["", f"{n}: teacher {d['teacher']} (T {d['temperature']}, top-{d['topk']}); its top-1 is the "
                          f"identity the {s} fake keeps for {100 * d['teacher_agreement']:.1f}% of the fakes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", help="the ablation's pipeline YAML")
    ap.add_argument("-w", "--workspace", help="workspace (default: as reidaug run resolves it)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="the same --set overrides the run used")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--baseline", default="real", help="the arm the paired differences are taken against")
    ap.add_argument("--arm-from", nargs=2, action="append", default=[], metavar=("JSON", "ARM"),
                    help="add ARM as an earlier run of this script recorded it in JSON (its cache is gone); "
                         "marked with that file as its source")
    args = ap.parse_args(argv)

    loaded = load_pipeline(args.pipeline, overrides=args.sets)
    graph = build_graph(loaded, STAGES)
    ws = workspace_of(graph, args.workspace)
    arms = collect(graph, Cache(ws))
    for path, name in args.arm_from:
        old = json.loads(Path(path).read_text())["arms"][name]
        done = [r for r in old["runs"] if r.get("status") == "cached"]
        old.setdefault("seeds", {str(r["seed"]): {"rank1": r["rank1"], "mAP": r["mAP"]} for r in done})
        arms[name] = {**old, "source": str(path)}
    if not arms:
        print(f"{args.pipeline}: no train-reid stage named <arm>-s<seed>", file=sys.stderr)
        return 1
    print(markdown(arms))
    diffs = paired(arms, args.baseline) if args.baseline in arms else {}
    if diffs:
        print()
        print("\n".join(paired_markdown(diffs, args.baseline)))
    if args.json:
        import torch

        record = {
            "pipeline": str(Path(args.pipeline)), "pipeline_name": loaded.config.name, "workspace": str(ws),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "python": platform.python_version(), "torch": torch.__version__},
            "std": "sample standard deviation over seeds (ddof 1)",
            "baseline": args.baseline if args.baseline in arms else None,
            "paired": diffs,
            "arms": arms,
        }
        print()
        write_result(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
