"""The attack interface: take a fingerprinted model, write an attacked model (or a wrapper) at a strength.

An attack writes either a normal Hugging Face model folder (weights changed: fine-tuning, merging,
quantisation) or a *wrapper* folder holding ``omlkit_wrapper.json`` — a decoding-time change around an
unchanged model (input filtering, output suppression). :func:`load_attacked` loads either kind into
something that behaves like a causal LM: ``model(input_ids=..., attention_mask=...)`` returns logits, so
verification backends and perplexity take it unchanged.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from omlkit.errors import ConfigError, ModelLoadError
from omlkit.evaluation.config import STRENGTH_FIELDS, AttackConfig
from omlkit.io import atomic_write_json
from omlkit.registry import family

WRAPPER_FILE = "omlkit_wrapper.json"
WRAPPER_FORMAT = "omlkit.wrapper/1"


class Attack(ABC):
    """One attack. Subclasses set the class attributes and implement :meth:`apply`.

    ``strength_field`` names the :class:`AttackConfig` list holding the strengths (``None``: the attack
    has a single strength, 0); ``default_strengths`` are used when that list is empty, ordered from weak
    to strong; ``stronger`` says whether a ``"higher"`` or ``"lower"`` value is the stronger attack.
    """

    strength_field: ClassVar[str | None] = None
    default_strengths: ClassVar[tuple[float, ...]] = (0.0,)
    stronger: ClassVar[str] = "higher"

    def __init__(self, config: AttackConfig, base: str) -> None:
        self.config = config
        self.base = base

    @property
    def strength_name(self) -> str:
        """What a strength means (the config field's name, singular), for tables and plots."""
        return (self.strength_field or "strength").rstrip("s")

    def strengths(self, model_path: str) -> list[float]:
        """The strengths to run: the configured list, else the defaults; refuses other attacks' lists."""
        for name in STRENGTH_FIELDS:
            if name != self.strength_field and getattr(self.config, name):
                own = f"--{self.strength_field}" if self.strength_field else "none"
                raise ConfigError(
                    f"--{name} does not apply to attack {self.config.kind!r} (its strengths: {own})"
                )
        given = getattr(self.config, self.strength_field) if self.strength_field else []
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

    @classmethod
    def load_wrapper(cls, spec: dict[str, Any], device: str | None = None) -> tuple[Any, Any]:
        """Rebuild ``(model, tokenizer)`` from a wrapper spec; only wrapper attacks implement it."""
        raise ModelLoadError(f"attack {spec.get('attack')!r} does not write wrappers")


#: Every attack, by name (``oml list attack``).
ATTACKS = family("attack", Attack)


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a model and its tokenizer as a normal Hugging Face folder (safetensors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_wrapper(out_dir: Path, attack: str, model: str, params: dict[str, Any]) -> Path:
    """Write a wrapper folder: ``omlkit_wrapper.json`` naming the attack, the wrapped model and its params."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = Path(model)
    spec = {
        "format": WRAPPER_FORMAT,
        "attack": attack,
        "model": str(model_path.resolve()) if model_path.exists() else model,
        "params": params,
    }
    atomic_write_json(out_dir / WRAPPER_FILE, spec)
    return out_dir


def is_wrapper(path: str | os.PathLike) -> bool:
    """True when ``path`` is a wrapper folder written by a decoding-time attack."""
    return (Path(path) / WRAPPER_FILE).is_file()


def load_attacked(
    path: str | os.PathLike, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of an attacked model folder or wrapper folder (or any loadable model);
    ``dtype`` applies to a plain model folder (a wrapper loads its model as the attack wrote it)."""
    if not is_wrapper(path):
        from omlkit.models.loading import load_model

        return load_model(path, device=device, dtype=dtype)
    spec_path = Path(path) / WRAPPER_FILE
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{spec_path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != WRAPPER_FORMAT:
        raise ModelLoadError(f"{spec_path}: format is not {WRAPPER_FORMAT!r}")
    return ATTACKS.get(str(spec.get("attack"))).load_wrapper(spec, device=device)
