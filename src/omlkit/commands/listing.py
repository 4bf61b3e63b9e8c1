"""``oml list [FAMILY]``: what is registered in each family (strategies, regularizers, backends, ...)."""

from __future__ import annotations

from pydantic import Field

from omlkit.commands._app import app
from omlkit.config import OmlConfig, config_command


def load_families() -> None:
    """Fill every family registry. The command configs import the families whose options they derive
    (strategies, regularizers, backends, attacks); the sweep stages and the prompt formats are loaded by
    the commands that use them."""
    import omlkit.models.formats  # noqa: F401
    import omlkit.sweep.stages  # noqa: F401


class ListConfig(OmlConfig):
    """List registered implementations of each family."""

    family: str | None = Field(None, description="Family to list; all when omitted.")


def list_command(cfg: ListConfig) -> None:
    """Print each family's registered names."""
    from rich.console import Console

    from omlkit.registry import FAMILIES

    load_families()
    console = Console()
    family = cfg.family
    names = [family] if family else sorted(FAMILIES)
    for name in names:
        if name not in FAMILIES:
            from omlkit.errors import ConfigError

            raise ConfigError(f"unknown family {name!r} (known: {', '.join(sorted(FAMILIES)) or 'none'})")
        console.print(f"[bold]{name}[/bold]: {', '.join(FAMILIES[name].names()) or '(none)'}")


config_command(app, "list", ListConfig, list_command, arguments=("family",))
