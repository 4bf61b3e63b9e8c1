"""``oml attack KIND``: attack a fingerprinted model at increasing strengths; persistence and utility."""

from __future__ import annotations

from omlkit.commands._app import app
from omlkit.config import config_command
from omlkit.evaluation.config import AttackConfig


def _attack(cfg: AttackConfig) -> None:
    from omlkit.commands.evaluate import say
    from omlkit.evaluation.persistence import markdown_table, run_attack

    path, result = run_attack(cfg, say=say)
    print(markdown_table(result))
    print(f"wrote {path}")


config_command(app, "attack", AttackConfig, _attack, arguments=("kind",))
