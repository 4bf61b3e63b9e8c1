"""``oml demo``: the main job end to end on the embedded default model."""

from __future__ import annotations

from pathlib import Path

import typer

from omlkit.commands._app import app


@app.command("demo")
def demo(
    workdir: Path = typer.Option(Path("runs/demo"), help="Where the demo writes its files."),
    n: int = typer.Option(256, "-n", help="Number of fingerprints."),
) -> None:
    """Build the embedded base model (cached) and print its summary."""
    from omlkit.commands.base_model import print_summary
    from omlkit.models.base_config import BaseModelConfig
    from omlkit.models.embedded import build_base_model

    path, info = build_base_model(BaseModelConfig(preset="tiny"), progress=True)
    print_summary(path, info)
