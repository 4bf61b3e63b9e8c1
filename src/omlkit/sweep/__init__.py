"""Sweeps: a grid over any stage config fields, run generate → insert → verify → evaluate per point.

``SweepConfig.load(path)`` reads a sweep file and :meth:`SweepConfig.points` expands it; ``run_sweep``
runs the points, skipping what is already done, and writes ``results.jsonl``, ``results.md`` and plots.
"""

from omlkit.sweep.config import Point, SweepConfig
from omlkit.sweep.runner import SweepSummary, run_sweep

__all__ = ["Point", "SweepConfig", "SweepSummary", "run_sweep"]
