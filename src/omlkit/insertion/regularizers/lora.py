"""LoRA through peft: only low-rank adapters train; merged into the weights on save, or kept as an adapter."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, RegularizerOptions


class LoraConfig(RegularizerOptions):
    """Train low-rank adapters (peft) instead of the full weights (``--lora`` turns it on)."""

    kind: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (config file only).")
    target_modules: str = Field("all-linear", description="LoRA target modules ('all-linear' or a,b,c).")
    merge: bool = Field(True, description="Merge LoRA into the weights on save (else keep the adapter).")

    flag_prefix: ClassVar[str] = "lora_"
    no_flag: ClassVar[frozenset[str]] = frozenset({"kind", "dropout"})
    switch: ClassVar[str | None] = "lora"


@REGULARIZERS.register("lora")
class Lora(Regularizer):
    """Wraps the model in a ``peft`` LoRA model."""

    options_cls = LoraConfig
    order = 0

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The peft model with adapters on ``target_modules``; ConfigError when none match."""
        import peft

        c = self.config
        targets = c.target_modules if c.target_modules == "all-linear" else [
            t.strip() for t in c.target_modules.split(",") if t.strip()]
        lcfg = peft.LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets,
                               task_type="CAUSAL_LM")
        try:
            return peft.get_peft_model(model, lcfg)
        except ValueError as exc:
            raise ConfigError(f"lora_target_modules: {str(exc).splitlines()[0]}") from None

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """The merged plain model when ``merge`` (else the peft model, saved as an adapter)."""
        return model.merge_and_unload() if self.config.merge else model
