"""The Typer application every command module registers on (kept apart so modules never import cli)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="oml",
    help="OML 1.0 fingerprinting for LLMs: generate, insert and verify fingerprints; run the usage protocol.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    STATE["debug"] = debug
