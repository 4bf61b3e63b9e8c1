"""``oml attack KIND``: attack a fingerprinted model at increasing strengths; persistence and utility."""

from __future__ import annotations

from typing import Any

import typer

from omlkit.commands._app import app
from omlkit.config import config_command


def _attack(cfg: Any) -> None:
    from omlkit.commands.evaluate import say
    from omlkit.evaluation.persistence import markdown_table, run_attack

    path, result = run_attack(cfg, say=say)
    print(markdown_table(result))
    print(f"wrote {path}")


def add_attack_command(target: typer.Typer) -> None:
    """Register ``attack`` on ``target`` with a flag for every option of every attack registered now."""
    from omlkit.evaluation.attacks import attack_config

    config_command(target, "attack", attack_config(), _attack, arguments=("kind",))


add_attack_command(app)
