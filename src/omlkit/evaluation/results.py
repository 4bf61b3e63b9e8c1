"""Where evaluation results live and how they are written: run directories and result JSON files.

A run directory (made by ``oml insert``) holds the model in ``model/``. Evaluations write
``RUN/eval/utility.json`` and ``RUN/eval/robustness.json``; attacks write ``RUN/attacks/KIND/attack.json``
next to the attacked models. Every result carries a ``format`` tag so ``oml report`` can find it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omlkit.errors import ConfigError, RunDirError
from omlkit.io import atomic_write_json

UTILITY_FORMAT = "omlkit.eval.utility/1"
ROBUSTNESS_FORMAT = "omlkit.eval.robustness/1"
ATTACK_FORMAT = "omlkit.attack/1"
RESULT_FILES = {
    UTILITY_FORMAT: "utility.json",
    ROBUSTNESS_FORMAT: "robustness.json",
    ATTACK_FORMAT: "attack.json",
}


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: what to load, and the run directory it belongs to (None for a bare model)."""

    name: str
    run_dir: Path | None

    @property
    def label(self) -> str:
        """A short name for tables: the run directory's or model folder's name, else the id."""
        if self.run_dir is not None:
            return self.run_dir.name
        return Path(self.name).name if Path(self.name).exists() else self.name


def resolve_model_ref(name: str) -> ModelRef:
    """A run directory resolves to its ``model/`` folder; anything else (folder, id, preset) stays as is."""
    path = Path(name).expanduser()
    if path.is_dir() and (path / "model" / "config.json").is_file():
        return ModelRef(str(path / "model"), path)
    return ModelRef(name, None)


def run_base_model(run_dir: Path | None) -> str | None:
    """The base model recorded in a run's ``config.json`` (keys ``base_model``, ``base`` or ``model``)."""
    if run_dir is None or not (run_dir / "config.json").is_file():
        return None
    try:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    for key in ("base_model", "base", "model"):
        if isinstance(cfg, dict) and isinstance(cfg.get(key), str) and cfg[key]:
            return cfg[key]
    return None


def resolve_base(base: str | None, ref: ModelRef) -> str:
    """``base`` if given, else the run's recorded base model, else the embedded default."""
    if base:
        return resolve_model_ref(base).name
    from omlkit.models.loading import DEFAULT_MODEL

    return run_base_model(ref.run_dir) or DEFAULT_MODEL


def output_dir(out: Path | None, ref: ModelRef, *parts: str, flag: str = "--out") -> Path:
    """``out`` if given, else ``RUN/<parts>`` of a run dir; ConfigError for a bare model without ``out``."""
    if out is not None:
        return Path(out)
    if ref.run_dir is None:
        raise ConfigError(f"{flag}: required when --model {ref.name} is not a run directory")
    return ref.run_dir.joinpath(*parts)


def now() -> str:
    """UTC timestamp (ISO 8601, seconds) recorded in results."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_result(path: Path, result: dict[str, Any], force: bool = False) -> Path:
    """Write a result JSON atomically; refuses (RunDirError) to replace an existing file unless ``force``."""
    try:
        return atomic_write_json(path, result, overwrite=force)
    except FileExistsError:
        raise RunDirError(f"{path} already exists (pass --force to overwrite)") from None


def read_result(path: Path) -> dict[str, Any] | None:
    """A result JSON with a known ``format`` tag, or None for anything else (unreadable, other files)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and data.get("format") in RESULT_FILES:
        return data
    return None
