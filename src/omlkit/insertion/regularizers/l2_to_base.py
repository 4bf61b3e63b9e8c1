"""L2-to-base: adds strength·Σ‖θ − θ₀‖² over the trainable parameters to the loss.

θ₀ is recorded in ``prepare`` (before any checkpoint is loaded). The term is computed on full
parameters, so it is meant for single-process and DDP training (and ZeRO-1/2, whose parameters are
full on every rank); under ZeRO-3 or FSDP each rank would see only its shard.
"""

from __future__ import annotations

import torch

from omlkit.insertion.config import L2ToBaseConfig
from omlkit.insertion.regularizers.base import (
    REGULARIZERS,
    Regularizer,
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


@REGULARIZERS.register("l2_to_base")
class L2ToBase(Regularizer):
    """A loss term keeping the weights near the base weights."""

    config_cls = L2ToBaseConfig

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
