"""``oml sweep CONFIG.yaml``: run a grid of generate → insert → verify → evaluate (and more) points."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from pydantic import Field

from omlkit.commands._app import app
from omlkit.config import OmlConfig, config_command


class SweepCommandConfig(OmlConfig):
    """Run every point of a sweep, skipping points and stages already done; write results.jsonl/.md."""

    sweep_file: Path = Field(description="Sweep file (YAML/JSON/TOML): stage sections plus grid axes.")
    out: Path | None = Field(None, description="Output folder (default: sweeps/<sweep name>).")
    dry_run: bool = Field(False, description="Print the expanded grid and exit; run nothing.")
    only: list[str] = Field(default_factory=list, description="Run only this point id (repeatable).")
    force: bool = Field(False, description="Share an --out holding a sweep of another name.")
    progress: bool = Field(True, description="Show the progress view.")


def sweep_command(cmd: SweepCommandConfig) -> None:
    """Run (or with --dry-run list) the sweep's points."""
    config, out, only = cmd.sweep_file, cmd.out, cmd.only
    from omlkit.sweep.config import SweepConfig

    cfg = SweepConfig.load(config)
    out = out or Path("sweeps") / cfg.name
    if cmd.dry_run:
        print_grid(cfg, out)
        return
    from omlkit.sweep.runner import run_sweep

    command = " ".join(
        ["oml sweep", shlex.quote(str(config)), "--out", shlex.quote(str(out))]
        + [f"--only {p}" for p in only or []]
    )
    summary = run_sweep(
        cfg,
        out,
        progress=cmd.progress,
        force=cmd.force,
        only=only or None,
        command=command,
        say=lambda msg: typer.echo(msg, err=True),
    )
    typer.echo(out / "results.md")
    if summary.failed:
        raise typer.Exit(1)


config_command(app, "sweep", SweepCommandConfig, sweep_command, arguments=("sweep_file",))


def print_grid(cfg, out: Path) -> None:
    """The expanded grid: one row per point with its id, axis values and status in ``out``."""
    from rich.console import Console
    from rich.table import Table

    from omlkit.sweep.runner import point_status

    points = cfg.points()
    axes = list(points[0].labels) if points else []
    table = Table(title=f"sweep {cfg.name}: {len(points)} point(s)", title_justify="left")
    for col in ("#", "point", *axes, "status"):
        table.add_column(col)
    for i, p in enumerate(points, start=1):
        table.add_row(str(i), p.id, *(str(p.labels[a]) for a in axes), point_status(out, p))
    Console(width=200).print(table)
    typer.echo(f"stages: {' -> '.join(cfg.stages)}\noutput folder: {out}")
