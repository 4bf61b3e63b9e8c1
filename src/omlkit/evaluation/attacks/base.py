"""The attack interface: take a fingerprinted model, write an attacked model (or a wrapper) at a strength.

An attack writes either a normal Hugging Face model folder (weights changed: fine-tuning, merging,
quantisation) or a *wrapper* folder holding ``omlkit_wrapper.json`` — a decoding-time change around an
unchanged model (input filtering, output suppression; :mod:`omlkit.models.wrapped`, where a wrapper attack
registers its loader). :func:`load_attacked` loads either kind into something that behaves like a causal
LM: ``model(input_ids=..., attention_mask=...)`` returns logits, so verification backends and perplexity
take it unchanged.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from omlkit.models.wrapped import load_any
from omlkit.options import NoOptions, Options
from omlkit.registry import family

if TYPE_CHECKING:
    from omlkit.evaluation.attacks.config import AttackConfig


class Attack(ABC):
    """One attack. Subclasses set the class attributes and implement :meth:`apply`.

    ``options_cls`` is the attack's own options class (declared in its file; its fields become flags of
    ``oml attack``); ``strength_field`` names the options list holding the strengths (``None``: the
    attack has a single strength, 0); ``default_strengths`` are used when that list is empty, ordered
    from weak to strong; ``stronger`` says whether a ``"higher"`` or ``"lower"`` value is the stronger
    attack.
    """

    options_cls: ClassVar[type[Options]] = NoOptions
    strength_field: ClassVar[str | None] = None
    default_strengths: ClassVar[tuple[float, ...]] = (0.0,)
    stronger: ClassVar[str] = "higher"

    def __init__(self, config: AttackConfig, base: str) -> None:
        self.config = config
        self.base = base
        self.options = config.options_for(config.kind, type(self))

    @property
    def strength_name(self) -> str:
        """What a strength means (the options field's name, singular), for tables and plots."""
        return (self.strength_field or "strength").rstrip("s")

    def strengths(self, model_path: str) -> list[float]:
        """The strengths to run: the configured list, else the defaults."""
        given = getattr(self.options, self.strength_field) if self.strength_field else []
        return [float(s) for s in given] or list(self.default_strengths)

    def folder_name(self, strength: float) -> str:
        """Sub-folder of the attack's output for one strength, e.g. ``steps-50`` or ``lambda-0.25``."""
        value = int(strength) if float(strength).is_integer() else strength
        return f"{self.strength_name}-{value}"

    @abstractmethod
    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Write the attacked model (HF folder or wrapper folder) into ``out_dir`` and return it."""

    def apply_all(
        self, model_path: str, strengths: Sequence[float], out_root: Path
    ) -> Iterator[tuple[float, Path]]:
        """``(strength, folder)`` for each strength, in order. Attacks that can reuse work (training
        snapshots) override this; the default applies each strength from scratch."""
        for s in strengths:
            yield s, self.apply(model_path, s, out_root / self.folder_name(s))

    def side_effects(self, model: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
        """Extra utility measures of an attacked model that perplexity does not show (default: none)."""
        return {}


#: Every attack, by name (``oml list attack``).
ATTACKS = family("attack", Attack)


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a model and its tokenizer as a normal Hugging Face folder (safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_attacked(
    path: str | os.PathLike, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an attacked model folder or wrapper folder (or any loadable model);
    ``dtype`` applies to a plain model folder (a wrapper loads its model as the attack wrote it)."""
    return load_any(path, device=device, dtype=dtype)
