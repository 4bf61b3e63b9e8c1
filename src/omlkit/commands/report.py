"""``oml report RUN...``: report.md with PNG plots from a run's evaluation and attack results."""

from __future__ import annotations

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.evaluation.config import ReportConfig


def _report(cfg: ReportConfig) -> None:
    from omlkit.evaluation.report import write_report

    print(f"wrote {write_report(cfg.runs, cfg.out, force=cfg.force)}")


config_command(app, "report", ReportConfig, _report, arguments=("runs",))
