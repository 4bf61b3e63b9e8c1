"""``oml list [FAMILY]``: what is registered in each family (strategies, regularizers, backends, ...)."""

from __future__ import annotations

import typer

from omlkit.commands._app import app


def load_families() -> None:
    """Fill every family registry. The command configs import the families whose options they derive
    (strategies, regularizers, backends, attacks); the sweep stages are the one family only ``oml sweep``
    loads."""
    import omlkit.sweep.stages  # noqa: F401


@app.command("list")
def list_command(family: str = typer.Argument(None, help="Family to list; all when omitted.")) -> None:
    """List registered implementations of each family."""
    from rich.console import Console

    from omlkit.registry import FAMILIES

    load_families()
    console = Console()
    names = [family] if family else sorted(FAMILIES)
    for name in names:
        if name not in FAMILIES:
            from omlkit.errors import ConfigError

            raise ConfigError(f"unknown family {name!r} (known: {', '.join(sorted(FAMILIES)) or 'none'})")
        console.print(f"[bold]{name}[/bold]: {', '.join(FAMILIES[name].names()) or '(none)'}")
