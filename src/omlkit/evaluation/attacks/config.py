"""``AttackConfig``: the config (and flags) of ``oml attack``, derived from every registered attack.

Its fields are :class:`~omlkit.evaluation.config.AttackCommon`'s plus each attack's own options
(declared in the attack's file). :func:`attack_config` rebuilds it when an attack is registered later,
for example by a plugin or a test.
"""

from __future__ import annotations

from functools import lru_cache

from omlkit.evaluation.attacks.base import ATTACKS
from omlkit.evaluation.config import AttackCommon
from omlkit.options import with_options


def attack_config() -> type[AttackCommon]:
    """The config class of ``oml attack`` for the attacks registered now."""
    return _build(tuple(ATTACKS.items()))


@lru_cache(maxsize=8)
def _build(attacks: tuple) -> type[AttackCommon]:
    return with_options(AttackCommon, attacks, "AttackConfig", "attack")


AttackConfig = attack_config()
