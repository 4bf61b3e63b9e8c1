"""Sweep plots (matplotlib, Agg backend): metrics against each numeric axis, persistence curves, and the
false-positive matrix. Each function returns the PNG it wrote, or None when the sweep has nothing to show.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omlkit.io import atomic_write_bytes
from omlkit.sweep.config import SweepConfig

#: (metric key, axis title) pairs drawn against a swept numeric field, when the points have them.
METRICS = (("recovery", "fingerprint recovery"), ("ppl_delta", "utility: Δ held-out perplexity"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _log_axis(xs: list[float]) -> bool:
    """A log2 x-axis for positive values spanning three doublings or more (n 16..4096, steps 16..1024)."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 8


def _symlog_threshold(ys: list[float]) -> float | None:
    """The linear range of a symlog y-axis when the nonzero values span three orders of magnitude or
    more (a perplexity delta from +0.2 to +2e6), else None (a linear axis)."""
    nonzero = [abs(y) for y in ys if y]
    return min(nonzero) if len(nonzero) >= 2 and max(nonzero) / min(nonzero) >= 1000 else None


def plot_metric_vs_axis(rows: list[dict[str, Any]], axis: str, path: Path) -> Path | None:
    """Recovery and utility delta against ``axis`` (one line per combination of the other axes)."""
    done = [r for r in rows if r["status"] == "done"]
    metrics = [(m, t) for m, t in METRICS if any(r["metrics"].get(m) is not None for r in done)]
    xs = [r["labels"][axis] for r in done]
    if not metrics or len(set(xs)) < 2 or not _numeric(xs):
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for r in done:
        key = " ".join(f"{k}={v}" for k, v in r["labels"].items() if k != axis)
        series.setdefault(key, []).append(r)
    plt = _pyplot()
    fig, axs = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    log_x = _log_axis(xs)
    for ax, (metric, title) in zip(axs[0], metrics, strict=True):
        for name, pts in series.items():
            pts = sorted((p["labels"][axis], p["metrics"].get(metric)) for p in pts)
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name or None)
        ax.set_xlabel(axis)
        ax.set_title(title)
        if metric == "recovery":
            ax.set_ylim(-0.05, 1.05)
        elif threshold := _symlog_threshold([r["metrics"][metric] for r in done
                                             if r["metrics"].get(metric) is not None]):
            ax.set_yscale("symlog", linthresh=threshold)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_persistence(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Surviving fraction of the fingerprints against attack strength, one line per point."""
    curves = []
    for r in rows:
        att = (r.get("results") or {}).get("attack")
        if r["status"] == "done" and att and att.get("results"):
            pts = [
                (a["strength"], a["persistence"]) for a in att["results"] if a.get("persistence") is not None
            ]
            label = " ".join(f"{k}={v}" for k, v in r["labels"].items()) or r["id"]
            curves.append((label, att.get("kind"), att.get("strength_name"), pts))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, _kind, _name, pts in curves:
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    if _log_axis([x for *_, pts in curves for x, _ in pts]):
        ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{curves[0][1]} attack: {curves[0][2]}")
    ax.set_ylabel("fingerprints surviving")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_false_positives(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Match rate of each point's fingerprint set (rows) on each clean model (columns), with -log10 p."""
    table = []
    for r in rows:
        fp = (r.get("results") or {}).get("false_positives")
        if r["status"] == "done" and fp and fp.get("models"):
            label = " ".join(f"{k}={v}" for k, v in r["labels"].items()) or r["id"]
            table.append((label, {m["model"]: m for m in fp["models"]}))
    if not table:
        return None
    models: list[str] = []
    for _, cells in table:
        models += [m for m in cells if m not in models]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(models), 1.2 + 0.55 * len(table)))
    grid = [[cells[m]["match_rate"] if m in cells else math.nan for m in models] for _, cells in table]
    vmax = max(0.05, max(max(g) for g in grid))
    im = ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
    for i, (_, cells) in enumerate(table):
        for j, m in enumerate(models):
            if m in cells:
                c = cells[m]
                color = "white" if c["match_rate"] > vmax / 2 else "black"
                text = f"{c['match_rate']:.1%}\np={c['p_value']:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(table)), [t for t, _ in table], fontsize=8)
    ax.set_title("match rate on non-fingerprinted models (p: ownership test)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path)


def write_plots(cfg: SweepConfig, rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Every plot the sweep's points support, written into ``folder``; returns their paths."""
    folder = Path(folder)
    axes = list(rows[0]["labels"]) if rows else []
    made = [plot_metric_vs_axis(rows, a, folder / f"vs_{a.replace('.', '_')}.png") for a in axes]
    made.append(plot_persistence(rows, folder / "persistence.png"))
    made.append(plot_false_positives(rows, folder / "false_positives.png"))
    return [p for p in made if p is not None]
