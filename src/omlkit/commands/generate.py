"""``oml generate`` (config-driven: every GenerateConfig field is a flag) and ``oml inspect FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import Field

from omlkit.commands._app import app
from omlkit.config import OmlConfig, config_command
from omlkit.fingerprints.config import GenerateConfig


def _generate(cfg: GenerateConfig) -> None:
    from omlkit.fingerprints.generate import run_generate

    path = run_generate(cfg)
    typer.echo(
        f"wrote {cfg.n} fingerprints ({cfg.key_strategy} keys, {cfg.response_strategy} responses) "
        f"to {path} (mode 0600; keep it secret)"
    )


config_command(
    app,
    "generate",
    GenerateConfig,
    _generate,
    help="Generate a secret fingerprint set (keys and responses from independently chosen strategies).",
    aliases={"n": "-n"},
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


class InspectConfig(OmlConfig):
    """Summarise a fingerprint set; keys and responses stay hidden unless --reveal."""

    file: Path = Field(description="Fingerprint file to summarise.")
    model: str | None = Field(
        None, description="Base model for token lengths and perplexity (default: the one the file records)."
    )
    perplexity: bool = Field(True, description="Compare the keys' perplexity with the held-out corpus's.")
    heldout: int = Field(200, ge=1, description="Held-out corpus paragraphs to score.")
    reveal: bool = Field(False, description="Also print every key and response (secret!).")
    as_json: bool = Field(False, description="Print the summary as JSON.")
    device: str | None = Field(None, description="torch device (default: cuda when available).")


def inspect_command(cfg: InspectConfig) -> None:
    """Summarise a fingerprint set; keys and responses stay hidden unless --reveal."""
    from rich.console import Console
    from rich.table import Table

    from omlkit.fingerprints.inspect import inspect_file

    file, reveal = cfg.file, cfg.reveal
    fp_set, summary = inspect_file(
        str(file), model_name=cfg.model, perplexity=cfg.perplexity, heldout_max=cfg.heldout, device=cfg.device
    )
    if reveal:
        summary["fingerprints"] = [fp.model_dump(mode="json") for fp in fp_set.fingerprints]
    if cfg.as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    table = Table(title=f"{file}", show_header=False)
    for name, value in summary.items():
        if name != "fingerprints":
            table.add_row(name, _fmt(value))
    console.print(table)
    if reveal:
        shown = Table("id", "key", "response", "response_prob", title="fingerprints (secret)")
        for fp in fp_set.fingerprints:
            prob = "" if fp.response_prob is None else f"{fp.response_prob:.3g}"
            shown.add_row(str(fp.id), repr(fp.key), repr(fp.response), prob)
        console.print(shown)


config_command(
    app, "inspect", InspectConfig, inspect_command, arguments=("file",), aliases={"as_json": "--json"}
)
