"""Run a sweep: every grid point through its stages, skipping what is already done, one progress view.

Layout of the output folder::

    <out>/sweep.json                 the sweep config of the latest invocation
    <out>/fingerprints/<hash>.json   fingerprint sets, shared by points with the same generate section
    <out>/runs/<run-id>/             insertion runs, shared by points with the same insert config + set
    <out>/points/<point-id>/         point.json (resolved config, per-stage results and timings), the
                                     point's own outputs (verify/, eval/, robustness/, attack/, ...)
    <out>/results.jsonl, results.md  one line / table row per point; plots/ beside them

A stage is skipped when its output exists and is complete; a point whose every stage is complete is not
touched. A failing point is recorded (``status: failed``, the stage and a one-line error; the traceback
in ``error.txt``) and the sweep goes on with the next one. A point is run by one process at a time
(``points/.<point-id>.lock``): sweeps of the same folder may run side by side on different points, and
one that reaches a point another process is running leaves it alone and reports it busy.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omlkit.errors import OmlError, RunDirError
from omlkit.io import atomic_write_json, atomic_write_text
from omlkit.locking import LockHeld, exclusive, holder_name
from omlkit.sweep.config import Point, SweepConfig
from omlkit.sweep.stages import STAGES, StageContext
from omlkit.sweep.stages.base import read_json

POINT_FORMAT = "omlkit.sweep.point/1"
SWEEP_FILE = "sweep.json"


@dataclass
class SweepSummary:
    """What one invocation did: points run, skipped (already complete), failed and busy (being run by
    another process), and the result files."""

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def prepare_out(cfg: SweepConfig, out: Path, force: bool = False) -> None:
    """Create ``out`` and record the sweep config in it.

    Refuses (RunDirError) a non-empty folder that is not a sweep folder, and one holding a sweep of
    another name unless ``force`` (points are content-addressed, so a sweep may be extended in place).
    """
    out = Path(out)
    marker = out / SWEEP_FILE
    if out.exists():
        if not out.is_dir():
            raise RunDirError(f"--out {out} exists and is not a folder")
        saved = read_json(marker)
        if saved is None and any(out.iterdir()):
            raise RunDirError(f"--out {out} is not empty and holds no {SWEEP_FILE}; choose another --out")
        if saved is not None and saved.get("name") != cfg.name and not force:
            raise RunDirError(
                f"--out {out} holds sweep {saved.get('name')!r}, not {cfg.name!r} (pass --force to share it)"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, cfg.model_dump(mode="json"))


def point_status(out: Path, point: Point) -> str:
    """``done``, ``failed``, ``partial`` (started, not finished) or ``todo``, from the point's point.json."""
    rec = read_json(Path(out) / "points" / point.id / "point.json")
    if rec is None:
        return "todo"
    return rec.get("status") if rec.get("status") in ("done", "failed") else "partial"


class _View:
    """One rich progress view: a bar over points and one over the current point's stages."""

    def __init__(self, cfg: SweepConfig, n_points: int, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Column

        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            expand=True,
            disable=not enabled,
        )
        self.enabled = enabled
        self.points = self.progress.add_task(f"sweep {cfg.name}", total=n_points)
        self.stages = self.progress.add_task("", total=len(cfg.stages))
        self.n_stages = len(cfg.stages)

    def __enter__(self) -> _View:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start_point(self, index: int, total: int, point: Point) -> None:
        self.prefix = f"[{index}/{total}] {point.id} {point.label}"
        self.progress.reset(self.stages, total=self.n_stages, description=self.prefix)

    def stage(self, name: str, skipped: bool) -> None:
        self.progress.update(self.stages, description=f"{self.prefix}: {name}{' (done)' if skipped else ''}")

    def stage_done(self) -> None:
        self.progress.advance(self.stages)

    def point_done(self, line: str) -> None:
        self.progress.advance(self.points)
        if self.enabled:
            self.progress.console.print(line, highlight=False)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, OmlError) else f"{type(exc).__name__}: {text}"


def run_point(
    cfg: SweepConfig, point: Point, out: Path, view: _View | None = None
) -> tuple[str, dict[str, Any]]:
    """Run (or skip) every stage of ``point``; returns ``(ran|skipped|failed, point record)``.

    ``point.json`` is rewritten after each stage, so an interruption loses at most the stage in flight.
    Exceptions of a stage are caught and recorded; KeyboardInterrupt is not.
    """
    ctx = StageContext(Path(out), point.id, point.sections)
    path = ctx.point_dir / "point.json"
    old = read_json(path) or {}
    old_stages = old.get("stages") or {}
    record: dict[str, Any] = {
        "format": POINT_FORMAT,
        "id": point.id,
        "sweep": cfg.name,
        "labels": point.labels,
        "stages_order": list(cfg.stages),
        "config": point.resolved,
        "status": "running",
        "error": None,
        "stages": {},
        "metrics": {},
    }
    ran_any = False
    for name in cfg.stages:
        stage = STAGES.get(name)()
        try:
            complete = stage.is_complete(ctx)
            prev = old_stages.get(name) or {}
            # a per-point output made before an earlier stage was redone is stale: redo it too
            if complete and prev.get("status") == "done" and (stage.shared or not ran_any):
                rec = prev
            elif complete and stage.shared:
                rec = {"status": "done", "seconds": 0.0, "reused": True, "result": stage.summarize(ctx)}
            else:
                if view:
                    view.stage(name, skipped=False)
                ctx.point_dir.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                result = stage.run(ctx)
                rec = {
                    "status": "done",
                    "seconds": time.perf_counter() - start,
                    "reused": False,
                    "result": result,
                }
                ran_any = True
        except Exception as exc:  # a failed point is recorded and the sweep goes on
            ctx.point_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(ctx.point_dir / "error.txt", traceback.format_exc())
            record["stages"][name] = {"status": "failed", "error": _one_line(exc)}
            record["status"] = "failed"
            record["error"] = {"stage": name, "message": _one_line(exc)}
            _save(path, record)
            return "failed", record
        record["stages"][name] = rec
        record["metrics"].update(stage.headline(rec["result"]))
        if view:
            view.stage_done()
        if ran_any:
            _save(path, record)
    record["status"] = "done"
    if ran_any or old.get("status") != "done" or not path.is_file():
        _save(path, record)
    (ctx.point_dir / "error.txt").unlink(missing_ok=True)
    return ("ran" if ran_any else "skipped"), record


def _save(path: Path, record: dict[str, Any]) -> None:
    record["seconds"] = sum(s.get("seconds") or 0.0 for s in record["stages"].values())
    atomic_write_json(path, record)


def run_sweep(
    cfg: SweepConfig,
    out: str | Path,
    *,
    progress: bool = True,
    force: bool = False,
    command: str | None = None,
    only: list[str] | None = None,
    say: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run every point of ``cfg`` (or the ``only`` ids) into ``out``; write results.jsonl, results.md, plots.

    Returns what ran, what was skipped and what failed. Refuses (ConfigError) ``only`` ids that are not
    points of the sweep, and (RunDirError) an ``out`` folder that belongs to something else.
    """
    from omlkit.errors import ConfigError
    from omlkit.sweep.results import write_results

    out = Path(out)
    points = all_points = cfg.points()
    if only:
        unknown = sorted(set(only) - {p.id for p in points})
        if unknown:
            raise ConfigError(f"--only: {unknown[0]} is not a point of sweep {cfg.name} (see --dry-run)")
        points = [p for p in points if p.id in set(only)]
    prepare_out(cfg, out, force=force)
    summary = SweepSummary(out)
    with _View(cfg, len(points), progress) as view:
        for i, point in enumerate(points, start=1):
            view.start_point(i, len(points), point)
            try:
                with exclusive(out / "points" / f".{point.id}.lock"):
                    outcome, record = run_point(cfg, point, out, view)
            except LockHeld as held:
                summary.busy.append(point.id)
                view.point_done(f"[yellow]busy[/yellow] {point.id} {point.label}: being run by "
                                f"{holder_name(held.pid)}")
                continue
            getattr(summary, outcome).append(point.id)
            view.point_done(_point_line(outcome, point, record))
            summary.files = write_results(cfg, all_points, out, command=command, plots=False)
    summary.files = write_results(cfg, all_points, out, command=command, plots=True)
    if say:
        say(
            f"sweep {cfg.name}: {len(summary.ran)} point(s) run, {len(summary.skipped)} already done, "
            f"{len(summary.failed)} failed"
            + (f", {len(summary.busy)} busy in another process" if summary.busy else "")
            + f"; results in {out / 'results.md'}"
        )
    return summary


def _point_line(outcome: str, point: Point, record: dict[str, Any]) -> str:
    if outcome == "failed":
        err = record["error"]
        return f"[red]failed[/red] {point.id} {point.label}: {err['stage']}: {err['message']}"
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in record["metrics"].items() if v is not None)
    word = "done" if outcome == "ran" else "already done"
    return f"[green]{word}[/green] {point.id} {point.label}: {shown} ({record.get('seconds', 0.0):.1f}s)"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
