"""Wrapper folders: a decoding-time change (input filtering, output suppression) around an unchanged
model, saved as ``omlkit_wrapper.json`` naming the wrapper, the wrapped model and its parameters.

:func:`load_any` loads a wrapper folder or any model folder into something that behaves like a causal
LM (``model(input_ids=..., attention_mask=...)`` returns logits), so verification, serving and
perplexity take either. The implementations live with the attacks that write them and register a loader
in :data:`WRAPPERS`: importing ``omlkit.evaluation.attacks`` fills it (``oml verify`` and ``oml serve``
do, since their ``--model`` may be an attacked folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omlkit.errors import ModelLoadError
from omlkit.io import atomic_write_json
from omlkit.registry import family

WRAPPER_FILE = "omlkit_wrapper.json"
WRAPPER_FORMAT = "omlkit.wrapper/1"

#: ``name -> loader(spec, device) -> (model, tokenizer)`` of every wrapper kind.
WRAPPERS = family("model wrapper")

Loader = Callable[..., tuple[Any, Any]]


def write_wrapper(out_dir: Path, name: str, model: str, params: dict[str, Any]) -> Path:
    """Write a wrapper folder: ``omlkit_wrapper.json`` naming the wrapper, the wrapped model, its params."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = Path(model)
    spec = {
        "format": WRAPPER_FORMAT,
        "attack": name,
        "model": str(model_path.resolve()) if model_path.exists() else model,
        "params": params,
    }
    atomic_write_json(out_dir / WRAPPER_FILE, spec)
    return out_dir


def is_wrapper(path: str | os.PathLike) -> bool:
    """True when ``path`` is a wrapper folder."""
    return (Path(path) / WRAPPER_FILE).is_file()


def load_any(path: str | os.PathLike, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a wrapper folder or any loadable model; ``dtype`` applies to a plain
    model (a wrapper loads its model as it was written). A malformed or unknown wrapper is a one-line
    ModelLoadError / ConfigError."""
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
    loader: Loader = WRAPPERS.get(str(spec.get("attack")))
    return loader(spec, device=device)
