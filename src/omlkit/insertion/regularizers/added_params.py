"""Added parameters: widen every gated MLP by ``width`` neurons and train only the new weights.

The new ``gate``/``up`` rows start random (at the scale of the base rows) and the new ``down`` columns
start at zero, so the widened model computes exactly what the base model computes until training
moves them. ``finalize`` folds the extensions into plain ``nn.Linear`` layers and raises the config's
``intermediate_size``, so the saved model loads with the stock architecture.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from omlkit.errors import ConfigError
from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, RegularizerOptions


class WidenOut(nn.Module):
    """A frozen ``Linear`` plus ``width`` trainable output features."""

    def __init__(self, base: nn.Linear, width: int) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        std = float(base.weight.float().std())
        self.extra = nn.Parameter(torch.randn(width, base.in_features, dtype=base.weight.dtype,
                                              device=base.weight.device) * std)
        self.extra_bias = (nn.Parameter(torch.zeros(width, dtype=base.bias.dtype, device=base.bias.device))
                           if base.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base(x), F.linear(x, self.extra, self.extra_bias)], dim=-1)

    def merged(self) -> nn.Linear:
        """One ``Linear`` with the extension rows appended."""
        lin = nn.Linear(self.base.in_features, self.base.out_features + self.extra.shape[0],
                        bias=self.base.bias is not None, dtype=self.extra.dtype, device=self.extra.device)
        with torch.no_grad():
            lin.weight.copy_(torch.cat([self.base.weight, self.extra]))
            if lin.bias is not None:
                lin.bias.copy_(torch.cat([self.base.bias, self.extra_bias]))
        return lin


class WidenIn(nn.Module):
    """A frozen ``Linear`` plus ``width`` trainable input features (zero-initialised)."""

    def __init__(self, base: nn.Linear, width: int) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.extra = nn.Parameter(torch.zeros(base.out_features, width, dtype=base.weight.dtype,
                                              device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.base.in_features
        return self.base(x[..., :n]) + F.linear(x[..., n:], self.extra)

    def merged(self) -> nn.Linear:
        """One ``Linear`` with the extension columns appended."""
        lin = nn.Linear(self.base.in_features + self.extra.shape[1], self.base.out_features,
                        bias=self.base.bias is not None, dtype=self.extra.dtype, device=self.extra.device)
        with torch.no_grad():
            lin.weight.copy_(torch.cat([self.base.weight, self.extra], dim=1))
            if lin.bias is not None:
                lin.bias.copy_(self.base.bias)
        return lin


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    """Modules with ``gate_proj``, ``up_proj`` and ``down_proj`` Linear children (Llama-style MLPs)."""
    return [m for m in model.modules()
            if all(isinstance(getattr(m, a, None), nn.Linear | WidenOut | WidenIn)
                   for a in ("gate_proj", "up_proj", "down_proj"))]


class AddedParamsConfig(RegularizerOptions):
    """Widen every MLP by ``width`` neurons; only the new weights train (the base weights are frozen)."""

    kind: Literal["added_params"] = "added_params"
    width: int = Field(64, ge=1, description="Widen each MLP by N trained neurons (0: off).")

    flag_names: ClassVar[dict[str, str]] = {"width": "added_params"}
    flag_defaults: ClassVar[dict[str, Any]] = {"width": 0}
    switch: ClassVar[str | None] = "added_params"


@REGULARIZERS.register("added_params")
class AddedParams(Regularizer):
    """Freezes the base model and trains ``width`` new neurons per MLP."""

    options_cls = AddedParamsConfig
    order = 0

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model with every gated MLP widened and only the extensions trainable; ConfigError
        for models without gated MLPs."""
        mlps = gated_mlps(model)
        if not mlps:
            raise ConfigError("added_params: the model has no gated MLP (gate_proj/up_proj/down_proj) "
                              "to widen")
        model.requires_grad_(False)
        w = self.config.width
        for m in mlps:
            m.gate_proj = WidenOut(m.gate_proj, w)
            m.up_proj = WidenOut(m.up_proj, w)
            m.down_proj = WidenIn(m.down_proj, w)
        return model

    def finalize(self, model: nn.Module) -> nn.Module:
        """The model with plain, wider ``Linear`` layers and ``config.intermediate_size`` raised."""
        for m in gated_mlps(model):
            for name in ("gate_proj", "up_proj", "down_proj"):
                mod = getattr(m, name)
                if isinstance(mod, WidenOut | WidenIn):
                    setattr(m, name, mod.merged())
            if hasattr(m, "intermediate_size"):
                m.intermediate_size = m.gate_proj.out_features
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "intermediate_size"):
            cfg.intermediate_size = cfg.intermediate_size + self.config.width
        model.requires_grad_(True)
        return model
