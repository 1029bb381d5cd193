"""mAP (and rank-1) against the fake share per batch, N / (M + N), from ablation_table.py's JSON.

Every arm of the JSON is a point: ``sampler: realfake`` arms at ``fake_per_batch /
train_batch_size``, real-only arms (an export with ``sets: [real]``) at 0, one line per kind of
fakes (the stage that made them), each with the real-only arms of the same budget (epochs) as its
point at 0; the mean over the arm's seeds, with its sample std as an error bar when it has more
than one. Which split the numbers are on (validation or test) is the JSON's; the title says it.

    .venv/bin/python bench/fake_share_plot.py bench/results/campaign_cuhk01_val.json \
        --out bench/results/fake_share_cuhk01_val.png [--epochs 12] [--arms A,B,...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def points(record: dict[str, Any], epochs: int | None,
           arms: list[str] | None = None) -> dict[str, list[tuple[float, dict[str, Any], str]]]:
    """{kind of fakes: [(share, arm, name)]}; the real-only arms go into every kind's line at 0.
    ``arms``: only these (e.g. leave out real-only arms that change another lever)."""
    real: list[tuple[float, dict[str, Any], str]] = []
    lines: dict[str, list[tuple[float, dict[str, Any], str]]] = {}
    for name, arm in record["arms"].items():
        p = arm.get("params", {})
        if not arm.get("n") or (epochs is not None and p.get("epochs") != epochs) or (arms and name not in arms):
            continue
        fakes = arm["data"].get("made_by", {})
        if p.get("sampler") == "realfake" and fakes:
            kind = ", ".join(sorted(set(fakes.values())))
            lines.setdefault(kind, []).append((p["fake_per_batch"] / p["train_batch_size"], arm, name))
        elif arm["data"].get("sets") == ["real"] and p.get("sampler") in ("random", "pk"):
            if p.get("sampler") == "random":  # the recipe the realfake arms share (pk is another recipe)
                real.append((0.0, arm, name))
    for kind in lines:
        lines[kind] = sorted(real + lines[kind], key=lambda t: t[0])
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, help="bench/ablation_table.py --json output")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--epochs", type=int, help="only arms of this budget (passes over the real images)")
    ap.add_argument("--arms", help="comma-separated arm names to plot (default: every arm that fits)")
    ap.add_argument("--reference", action="append", default=[], metavar="ARM",
                    help="an arm drawn as a dashed horizontal line (e.g. real only at another budget)")
    args = ap.parse_args(argv)
    record = json.loads(args.json.read_text())
    lines = points(record, args.epochs, args.arms.split(",") if args.arms else None)
    if not lines:
        print(f"{args.json}: no realfake arm with results", file=sys.stderr)
        return 1
    splits = {r.get("split", "test") for a in record["arms"].values() for r in a.get("runs", []) if r.get("split")}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "mAP", "mAP (%)"), (axes[1], "rank1", "rank-1 (%)")):
        for kind, pts in lines.items():
            xs = [100 * x for x, _, _ in pts]
            ys = [100 * a[metric]["mean"] for _, a, _ in pts]  # the JSON holds fractions
            es = [100 * a[metric]["std"] if a["n"] > 1 else 0.0 for _, a, _ in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=kind)
            for x, y, (_, a, _) in zip(xs, ys, pts):
                ax.annotate(f"{y:.1f} (n={a['n']})", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for j, name in enumerate(args.reference):
            ref = record["arms"].get(name)
            if ref and ref.get("n"):
                y = 100 * ref[metric]["mean"]
                ax.axhline(y, ls="--", lw=1, color=f"C{len(lines) + j}",
                           label=f"{name} ({ref['params'].get('epochs')} passes, {ref['steps'][0]} steps): {y:.1f}")
        ax.set_xlabel("fakes per batch, N / (M + N) (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{record.get('pipeline_name', '')}: {metric_split(splits)}, same passes over the real images")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def metric_split(splits: set[str]) -> str:
    return {"val": "validation identities", "test": "test split"}.get(next(iter(splits)), "mixed splits") \
        if len(splits) == 1 else "mixed splits"


if __name__ == "__main__":
    raise SystemExit(main())
