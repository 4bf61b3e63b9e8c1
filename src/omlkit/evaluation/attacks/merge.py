"""Model merging: linear interpolation of every weight with the base model, θ = (1 − λ)·θ_model + λ·θ_base.

λ = 0 is the attacked model itself, λ = 1 the base model. Both must have the same architecture; a
parameter missing from either or of another shape is refused, naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from omlkit.errors import ModelLoadError
from omlkit.evaluation.attacks.base import ATTACKS, Attack, save_model
from omlkit.options import Options


class MergeOptions(Options):
    """The weights of the base model to try."""

    lambdas: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=list, description="Strengths of merge: weight of the base in [0, 1]."
    )


def interpolate_(model: torch.nn.Module, base: torch.nn.Module, lam: float) -> torch.nn.Module:
    """Move ``model``'s weights in place to ``(1 − lam)·model + lam·base``; returns ``model``.

    Tied weights (embeddings shared with the output layer) are moved once.
    """
    own, other = dict(model.named_parameters()), dict(base.named_parameters())
    missing = sorted(set(own) ^ set(other))
    if missing:
        raise ModelLoadError(f"merge: parameter {missing[0]!r} exists in only one of the two models")
    with torch.no_grad():
        for name, tensor in own.items():
            theirs = other[name]
            if tensor.shape != theirs.shape:
                raise ModelLoadError(
                    f"merge: parameter {name!r} has shape {tuple(tensor.shape)} in the model "
                    f"but {tuple(theirs.shape)} in the base"
                )
            if tensor.is_floating_point():
                tensor.lerp_(theirs.to(tensor.device, tensor.dtype), lam)
    return model


@ATTACKS.register("merge")
class MergeAttack(Attack):
    """Linear interpolation with the base model at each λ in ``--lambdas``."""

    options_cls = MergeOptions
    strength_field = "lambdas"
    default_strengths = (0.25, 0.5, 0.75)

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Interpolate at λ = ``strength`` and save; refuses a base of another architecture."""
        from omlkit.models.loading import load_model

        model, tok = load_model(model_path, device="cpu", dtype="fp32")
        base, _ = load_model(self.base, device="cpu", dtype="fp32", tokenizer=False)
        return save_model(interpolate_(model, base, float(strength)), tok, out_dir)
