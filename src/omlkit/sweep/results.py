"""Aggregate results of a sweep: ``results.jsonl`` (one line per point) and a ``results.md`` table.

Both are derived from the points' ``point.json`` files and rewritten whole (atomically) after every
point, so they always describe the sweep as far as it got. ``results.md`` names the machine, the date and
the command, so every number in it can be traced to how it was produced.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omlkit.io import atomic_write_text
from omlkit.sweep.config import Point, SweepConfig
from omlkit.sweep.stages.base import read_json

RESULTS_JSONL = "results.jsonl"
RESULTS_MD = "results.md"


def point_rows(points: Sequence[Point], out: Path) -> list[dict[str, Any]]:
    """One flat record per point: id, axis labels, status, error, headline metrics, seconds per stage."""
    rows = []
    for p in points:
        rec = read_json(Path(out) / "points" / p.id / "point.json") or {}
        stages = rec.get("stages") or {}
        rows.append(
            {
                "id": p.id,
                "labels": p.labels,
                "status": rec.get("status", "todo"),
                "error": rec.get("error"),
                "metrics": rec.get("metrics") or {},
                "seconds": {k: v.get("seconds") for k, v in stages.items() if v.get("status") == "done"},
                "reused": sorted(k for k, v in stages.items() if v.get("reused")),
                "results": {k: v.get("result") for k, v in stages.items() if v.get("status") == "done"},
            }
        )
    return rows


def machine() -> str:
    """OS, CPU count, Python and torch versions, and the accelerator when there is one."""
    parts = [
        f"{platform.system()} {platform.machine()}",
        f"{os.cpu_count()} CPUs",
        f"Python {sys.version.split()[0]}",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        parts.append(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
        parts.append(f"{torch.get_num_threads()} torch threads")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return ", ".join(parts)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.4g}"
    return str(v)


def markdown(cfg: SweepConfig, rows: list[dict[str, Any]], command: str | None, plots: Sequence[Path]) -> str:
    """The results page: header (sweep, machine, date, command), the table, failures, and plot links."""
    axes = list(rows[0]["labels"]) if rows else []
    metrics: list[str] = []
    for r in rows:
        metrics += [m for m in r["metrics"] if m not in metrics]
    done = sum(r["status"] == "done" for r in rows)
    lines = [
        f"# Sweep `{cfg.name}`",
        "",
        *([cfg.description.strip(), ""] if cfg.description.strip() else []),
        f"- command: `{command or 'oml sweep ...'}`",
        f"- machine: {machine()}",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- points: {len(rows)} ({done} done, {sum(r['status'] == 'failed' for r in rows)} failed); "
        f"stages: {', '.join(cfg.stages)}",
        "",
    ]
    head = ["point", *axes, "status", *metrics, "time (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        secs = sum(v or 0.0 for v in r["seconds"].values())
        cells = [
            f"`{r['id']}`",
            *(_fmt(r["labels"].get(a)) for a in axes),
            r["status"],
            *(_fmt(r["metrics"].get(m)) for m in metrics),
            (f"{secs:.1f}" if secs < 10 else f"{secs:.0f}") if r["seconds"] else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] == "failed" and r["error"]]
    if failed:
        lines += ["", "## Failed points", ""]
        lines += [f"- `{r['id']}` at {r['error']['stage']}: {r['error']['message']}" for r in failed]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    lines += [
        "",
        "Per point: `points/<id>/point.json` (resolved config, per-stage results and timings). "
        "recovery is the verified accuracy, ppl_delta the held-out perplexity of the model minus its base's.",
    ]
    return "\n".join(lines) + "\n"


def write_results(
    cfg: SweepConfig, points: Sequence[Point], out: Path, command: str | None = None, plots: bool = True
) -> list[Path]:
    """Write ``results.jsonl`` and ``results.md`` (and plots when ``plots``); returns the files written."""
    out = Path(out)
    rows = point_rows(points, out)
    jsonl = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    files = [atomic_write_text(out / RESULTS_JSONL, jsonl)]
    made: list[Path] = []
    if plots:
        from omlkit.sweep.plots import write_plots

        made = write_plots(cfg, rows, out / "plots")
    elif (out / "plots").is_dir():
        made = sorted((out / "plots").glob("*.png"))
    files.append(atomic_write_text(out / RESULTS_MD, markdown(cfg, rows, command, made)))
    return files + made
