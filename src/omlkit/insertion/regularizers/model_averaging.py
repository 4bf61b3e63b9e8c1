"""Model averaging: after every optimizer step θ ← (1−λ)·θ + λ·θ₀ (λ = ``forgetting_regularizer_strength``).

θ₀ is taken in :meth:`ModelAveraging.prepare`, i.e. from the base model before the trainer loads any
checkpoint, so a resumed run averages towards the base and not towards the checkpoint. The update is
one fused ``torch._foreach_lerp_`` over the trainable parameters, on their own device and dtype.

Where the weights live decides how the update is applied:

* single process and DDP (the path that is tested): the parameters *are* the master weights; every
  rank applies the same lerp to identical replicas, so they stay identical without communication.
* FSDP2 (``fully_shard``; parameters are DTensors): each rank lerps its local shard of the fp32
  sharded parameters, which are the master weights; θ₀ is sharded the same way once, with
  ``distribute_tensor``. FSDP1 flat parameters are refused (use ``fsdp_version: 2``). Tested on CPU
  with two gloo processes under torch ``fully_shard`` against one process (tests/_fsdp_worker.py).
* DeepSpeed ZeRO-1/2/3: the fp32 masters live in the optimizer. Each parameter's master is read with
  ``deepspeed.utils.safe_get_full_fp32_param``, lerped, written back with ``safe_set_full_fp32_param``,
  and the low-precision copy used by the next forward pass is refreshed (under ZeRO-3 inside
  ``GatheredParameters``). This is one gather per parameter per step — correct rather than fast, and
  not exercised by the CPU test suite (it needs GPUs and deepspeed).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.insertion.regularizers.base import (
    REGULARIZERS,
    Regularizer,
    RegularizerOptions,
    as_callback,
    snapshot,
    trainable_named_params,
)

_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "module.")


def _clean(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def lerp_to_base(params: list[torch.Tensor], base: list[torch.Tensor], strength: float) -> None:
    """In place, ``p ← (1−strength)·p + strength·b`` for each pair (one fused foreach call)."""
    if params:
        with torch.no_grad():
            torch._foreach_lerp_(params, base, strength)


def _is_deepspeed(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id") or hasattr(p, "_hp_mapping")


def _is_dtensor(p: torch.Tensor) -> bool:
    return type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor"


class AveragingCallback:
    """Applies the averaging after each optimizer step (or at each epoch end for ``interval="epoch"``); a
    trainer callback through :func:`as_callback`."""

    def __init__(self, base: dict[str, torch.Tensor], strength: float, interval: str = "step") -> None:
        self.base = base
        self.strength = strength
        self.interval = interval
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._mode: str | None = None

    def _bind(self, model: torch.nn.Module) -> None:
        params, base = [], []
        named = trainable_named_params(model)
        self._mode = "deepspeed" if named and _is_deepspeed(named[0][1]) else (
            "dtensor" if named and _is_dtensor(named[0][1]) else "plain")
        for name, p in named:
            key = _clean(name)
            if key not in self.base:
                raise ConfigError(f"model averaging: parameter {key} has no base copy (FSDP1 flat parameters "
                                  "are not supported; use fsdp_version: 2)")
            b = self.base[key]
            if self._mode == "dtensor":
                from torch.distributed.tensor import distribute_tensor

                local = p.to_local()
                b = distribute_tensor(b.to(local.device, local.dtype), p.device_mesh, p.placements).to_local()
                params.append(local)
            elif self._mode == "plain":
                b = b.to(p.device, p.dtype)
                params.append(p)
            else:
                params.append(p)
            base.append(b)
        self._pairs = (params, base)
        self.base = {}  # the bound copies are the only ones kept

    def average(self, model: torch.nn.Module) -> None:
        """Apply one averaging update to ``model``'s trainable parameters."""
        if self.strength == 0:
            return
        if self._pairs is None:
            self._bind(model)
        params, base = self._pairs
        if self._mode == "deepspeed":
            _average_deepspeed(params, base, self.strength)
        else:
            lerp_to_base(params, base, self.strength)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.interval == "step":
            self.average(model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.interval == "epoch":
            self.average(model)


def _average_deepspeed(params: list[torch.Tensor], base: list[torch.Tensor], strength: float) -> None:
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

    for p, b in zip(params, base, strict=True):
        hp = safe_get_full_fp32_param(p)
        hp.lerp_(b.to(hp.device, hp.dtype), strength)
        safe_set_full_fp32_param(p, hp)
        if hasattr(p, "ds_id"):  # ZeRO-3: the low-precision parameter is partitioned too
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0), torch.no_grad():
                p.data.copy_(hp.to(p.dtype))
        else:
            with torch.no_grad():
                p.data.copy_(hp.to(p.device, p.dtype))


class ModelAveragingConfig(RegularizerOptions):
    """θ ← (1−λ)·θ + λ·θ₀ after every optimizer step (or once per epoch: the textbook recipe)."""

    kind: Literal["model_averaging"] = "model_averaging"
    strength: float = Field(
        0.75, ge=0.0, le=1.0, description="Model averaging λ: θ ← (1−λ)θ + λθ₀ after each step (0: off)."
    )
    interval: Literal["step", "epoch"] = Field("step", description="Average each step or epoch.")

    flag_names: ClassVar[dict[str, str]] = {
        "strength": "forgetting_regularizer_strength", "interval": "averaging_interval"
    }
    switch: ClassVar[str | None] = "forgetting_regularizer_strength"


@REGULARIZERS.register("model_averaging")
class ModelAveraging(Regularizer):
    """Pulls the trained weights towards the base weights after every optimizer step."""

    options_cls = ModelAveragingConfig

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Record θ₀ (the trainable parameters as they are now); the model is unchanged."""
        averaging = AveragingCallback(snapshot(model), self.config.strength, self.config.interval)
        self._callback = as_callback(averaging)
        return model

    def callbacks(self) -> list:
        """The averaging callback (``prepare`` must have run)."""
        return [self._callback]
