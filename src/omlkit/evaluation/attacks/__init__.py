"""Attacks on fingerprinted models, one file each; importing this package registers them all."""

from omlkit.evaluation.attacks import (  # noqa: F401  (imported to register)
    dummy,
    finetune,
    instruct,
    lora,
    meraser,
    merge,
    perplexity_filter,
    quantize,
    suppress,
    suppress_lookahead,
    suppress_neighbor,
    suppress_topk,
)
from omlkit.evaluation.attacks.base import ATTACKS, Attack, load_attacked
from omlkit.evaluation.attacks.config import AttackConfig, attack_config
from omlkit.models.wrapped import is_wrapper

__all__ = ["ATTACKS", "Attack", "AttackConfig", "attack_config", "is_wrapper", "load_attacked"]
