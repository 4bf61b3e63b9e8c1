"""L2-to-base: adds strength·Σ‖θ − θ₀‖² over the trainable parameters to the loss.

θ₀ is recorded in ``prepare`` (before any checkpoint is loaded). The term is computed on full
parameters, so it is meant for single-process and DDP training (and ZeRO-1/2, whose parameters are
full on every rank); under ZeRO-3 or FSDP each rank would see only its shard.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from omlkit.insertion.regularizers.base import (
    REGULARIZERS,
    Regularizer,
    RegularizerOptions,
    TrainBatch,
    snapshot,
    trainable_named_params,
)


def l2_distance(params: list[torch.Tensor], base: list[torch.Tensor]) -> torch.Tensor:
    """Σ‖p − b‖² over the pairs (differentiable in ``params``)."""
    total = params[0].new_zeros((), dtype=torch.float32)
    for p, b in zip(params, base, strict=True):
        total = total + (p.float() - b.float()).pow(2).sum()
    return total


class L2ToBaseConfig(RegularizerOptions):
    """A loss term strength·Σ‖θ − θ₀‖² over the trained parameters."""

    kind: Literal["l2_to_base"] = "l2_to_base"
    strength: float = Field(0.01, gt=0.0, description="L2-to-base penalty weight (0: off).")

    flag_prefix: ClassVar[str] = "l2_"
    flag_defaults: ClassVar[dict[str, Any]] = {"strength": 0.0}
    switch: ClassVar[str | None] = "l2_strength"


@REGULARIZERS.register("l2_to_base")
class L2ToBase(Regularizer):
    """A loss term keeping the weights near the base weights."""

    options_cls = L2ToBaseConfig

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Record θ₀; the model is unchanged."""
        self._base = snapshot(model)
        self._bound: tuple[list, list] | None = None
        return model

    def loss_term(self, model: torch.nn.Module, batch: TrainBatch | None = None) -> torch.Tensor:
        """strength·Σ‖θ − θ₀‖² (θ₀ moved once to each parameter's device)."""
        if self._bound is None:
            named = trainable_named_params(model)
            self._bound = ([p for _, p in named], [self._base[n].to(p.device, p.dtype) for n, p in named])
            self._base = {}
        params, base = self._bound
        return self.config.strength * l2_distance(params, base)
