"""Shipped system-prompt templates for prompt augmentation: a training set and a disjoint test set.

Training wraps keys in the ``train`` templates; evaluation measures robustness on the 10 ``test``
templates, which insertion never sees.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from omlkit.errors import ConfigError

MIN_TRAIN = 20
N_TEST = 10


@lru_cache(maxsize=1)
def _load() -> dict[str, tuple[str, ...]]:
    text = resources.files("omlkit").joinpath("data/system_prompts.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    train, test = tuple(raw["train"]), tuple(raw["test"])
    if len(train) < MIN_TRAIN or len(test) != N_TEST or set(train) & set(test):
        raise ConfigError(
            f"data/system_prompts.json: expected >= {MIN_TRAIN} train and exactly {N_TEST} disjoint test "
            "prompts"
        )
    return {"train": train, "test": test}


def train_system_prompts() -> list[str]:
    """The training system-prompt templates (at least 20) used by ``--prompt-augmentation``."""
    return list(_load()["train"])


def test_system_prompts() -> list[str]:
    """The 10 held-out test system prompts, disjoint from the training ones (for robustness evaluation)."""
    return list(_load()["test"])


test_system_prompts.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
