"""The report's own figures (matplotlib, Agg): the stage graph, GAN loss curves, the runs' metrics.

Each function returns PNG bytes (or None when there is nothing to draw); the report embeds them.
"""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

STATE_COLOURS = {"cached": "#b7e1b0", "damaged": "#f2a7a0", "partial": "#f7d08a", "missing": "#dddddd"}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _figure(w: float, h: float) -> Any:
    """A figure outside pyplot's registry (no backend switch, nothing to close or leak on an error)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def levels(edges: dict[str, list[str]]) -> dict[str, int]:
    """Column of each stage: the longest path from a source stage (``edges``: stage -> upstream stages)."""
    memo: dict[str, int] = {}

    def depth(n: str, seen: frozenset[str]) -> int:
        if n in memo:
            return memo[n]
        ups = [u for u in edges.get(n, []) if u in edges and u not in seen]
        memo[n] = 0 if not ups else 1 + max(depth(u, seen | {n}) for u in ups)
        return memo[n]

    return {n: depth(n, frozenset()) for n in edges}


def dag_png(stages: Sequence[tuple[str, str, list[str]]]) -> bytes | None:
    """The pipeline as boxes in columns (by depth) with arrows from each input; ``stages``: (name, state, upstream).

    Boxes are coloured by cache state (cached green, partial amber, missing grey).
    """
    if not stages:
        return None
    edges = {n: ups for n, _, ups in stages}
    state = {n: s for n, s, _ in stages}
    col = levels(edges)
    columns: dict[int, list[str]] = {}
    for n, _, _ in stages:
        columns.setdefault(col[n], []).append(n)
    ncol, nrow = max(columns) + 1, max(len(v) for v in columns.values())
    box_w, box_h, gap_x, gap_y = 2.0, 0.5, 0.7, 0.3
    scale = 0.55  # inches per unit: 8-point labels stay readable when the page shows the figure at ~1200 px
    fig = _figure(max(3.0, (ncol * (box_w + gap_x) - gap_x + 0.4) * scale),
                  max(1.2, (nrow * (box_h + gap_y) + 1.2) * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    pos = {}
    height = nrow * (box_h + gap_y)
    for c, names in columns.items():
        top = (height - len(names) * (box_h + gap_y)) / 2
        for r, n in enumerate(names):
            pos[n] = (c * (box_w + gap_x), height - top - r * (box_h + gap_y) - box_h)
    for n, ups in edges.items():
        x1, y1 = pos[n]
        for u in ups:
            if u not in pos:
                continue
            x0, y0 = pos[u]
            # an edge that skips columns bends, so it does not run straight through the boxes between
            skip = col[n] - col[u] > 1
            rad = -min(0.3, 1.6 / max(x1 - x0 - box_w, 1e-6)) if skip else 0.0  # the bend peaks ~0.8 above
            ax.annotate("", xy=(x1, y1 + box_h / 2), xytext=(x0 + box_w, y0 + box_h / 2),
                        arrowprops={"arrowstyle": "->", "color": "#777777" if skip else "#444444", "lw": 0.8,
                                    "shrinkA": 1, "shrinkB": 1,
                                    "connectionstyle": f"arc3,rad={rad:.3f}"})
    from matplotlib.patches import FancyBboxPatch

    for n, (x, y) in pos.items():
        ax.add_patch(FancyBboxPatch((x, y), box_w, box_h, boxstyle="round,pad=0.03",
                                    fc=STATE_COLOURS.get(state[n], "#ffffff"), ec="#333333", lw=0.8))
        label = n if len(n) <= 26 else n[:25] + "…"
        ax.text(x + box_w / 2, y + box_h / 2, label, ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.2, ncol * (box_w + gap_x) - gap_x + 0.2)
    ax.set_ylim(-0.2, height + 1.0)
    ax.axis("off")
    return _png(fig)


def loss_curves_png(rows: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """A GAN's logged losses against the step, one panel per phase (PG2 trains G1, then G2 + D).

    Generator terms and discriminator terms (keys starting with ``D``) on separate axes, so the
    small adversarial losses do not flatten next to the weighted cycle / L1 terms.
    """
    rows = [r for r in rows if isinstance(r.get("step"), (int, float))]
    if not rows:
        return None
    phases: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        phases.setdefault(str(r.get("phase", "")), []).append(r)
    fig = _figure(4.2 * len(phases), 3.0)
    for i, (phase, rs) in enumerate(phases.items()):
        ax = fig.add_subplot(1, len(phases), i + 1)
        keys = sorted({k for r in rs for k, v in r.items()
                       if k not in ("step", "lr", "phase") and isinstance(v, (int, float)) and math.isfinite(v)})
        steps = [r["step"] for r in rs]
        d_ax = None
        for k in keys:
            ys = [r.get(k, float("nan")) for r in rs]
            if k.startswith("D"):
                d_ax = d_ax or ax.twinx()
                d_ax.plot(steps, ys, "--", lw=1, label=k)
            else:
                ax.plot(steps, ys, lw=1.2, label=k)
        ax.set_xlabel("step")
        ax.set_ylabel("generator losses")
        ax.set_title(f"{title}{' — ' + phase if phase else ''}", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        if d_ax is not None:
            d_ax.set_ylabel("discriminator losses")
            h2, l2 = d_ax.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=6, loc="upper right", ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def runs_png(arms: Sequence[tuple[str, dict[str, float] | None, dict[str, float] | None]]) -> bytes | None:
    """Rank-1 and mAP (%) per arm with the seeds' std as error bars; ``arms``: (name, rank1, mAP) stats."""
    arms = [a for a in arms if a[1] and a[2]]
    if not arms:
        return None
    import numpy as np

    fig = _figure(max(4.0, 0.9 * len(arms) + 2), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(arms))
    for off, idx, label in ((-0.2, 1, "rank-1"), (0.2, 2, "mAP")):
        means = [100 * a[idx]["mean"] for a in arms]
        stds = [100 * (a[idx].get("std") or 0.0) for a in arms]
        bars = ax.bar(x + off, means, 0.38, yerr=stds, capsize=3, label=label)
        for b, m in zip(bars, means):
            ax.text(b.get_x() + b.get_width() / 2, m + 0.5, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [a[0] for a in arms], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
