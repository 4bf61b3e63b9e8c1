"""The regularizer interface and its registry (family ``regularizer``).

A regularizer may change the model before training (``prepare``: LoRA, added parameters), add a term
to the loss (``loss_term``), act between optimizer steps through trainer callbacks (``callbacks``:
model averaging), and turn the trained model into the one that is saved (``finalize``). Every hook
has a do-nothing default; :mod:`.dummy` is the complete reference implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import torch

from omlkit.options import Options
from omlkit.registry import family


@dataclass(frozen=True)
class RegularizerContext:
    """What a run offers a regularizer besides the model: the tokenizer, the benign corpus (a callable,
    so the texts are read only by a regularizer that needs them), the seed and this process's rank."""

    tokenizer: Any
    texts: Callable[[], Sequence[str]]
    seed: int = 0
    rank: int = 0


@dataclass(frozen=True)
class TrainBatch:
    """The micro-batch a loss term may look at: input ids, attention mask, labels (-100 off the target)
    and the logits the model being trained just produced for it (differentiable)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class RegularizerOptions(Options):
    """Base of a regularizer's options, declared in the regularizer's file.

    ``kind`` (the registered name) tells them apart in ``InsertConfig.regularizers``. Each field is also
    a flat flag of ``oml insert`` (``flag_prefix`` + name, or ``flag_names``); ``switch`` names the flat
    flag that turns the regularizer on (its options apply while that flag is truthy; None: list only).
    """

    kind: str
    no_flag: ClassVar[frozenset[str]] = frozenset({"kind"})
    switch: ClassVar[str | None] = None

    @classmethod
    def switched_on(cls, values: Any) -> bool:
        """Whether a flat config (``InsertConfig``) turns this regularizer on."""
        return bool(cls.switch and getattr(values, cls.switch))


def as_callback(obj: Any) -> Any:
    """``obj`` made a ``transformers.TrainerCallback`` as well (so the trainer's callback handler finds
    every event): the import of the trainer's modules waits until a run needs it."""
    obj.__class__ = _with_trainer_callback(type(obj))
    return obj


@cache
def _with_trainer_callback(cls: type) -> type:
    from transformers import TrainerCallback

    return cls if issubclass(cls, TrainerCallback) else type(cls.__name__, (cls, TrainerCallback), {})


class Regularizer:
    """Base of every anti-forgetting regularizer; built from its typed options (``config.kind``)."""

    #: The regularizer's options class, declared in its file.
    options_cls: ClassVar[type[RegularizerOptions]]
    #: Structural regularizers (which replace or wrap modules) prepare first.
    order: ClassVar[int] = 10

    def __init__(self, config: Any) -> None:
        if not isinstance(config, self.options_cls):
            raise TypeError(f"{type(self).__name__} needs a {self.options_cls.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    @property
    def name(self) -> str:
        """The registered name (the config's ``kind``)."""
        return self.config.kind

    def attach(self, context: RegularizerContext) -> None:
        """Receive the run's tokenizer and corpus before ``prepare`` (default: not needed, ignored)."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the model to train (default: unchanged). Called once, before any checkpoint is loaded."""
        return model

    def loss_term(self, model: torch.nn.Module, batch: TrainBatch | None = None) -> torch.Tensor | None:
        """An extra scalar added to the loss of each micro-``batch`` (default: none)."""
        return None

    def callbacks(self) -> list:
        """``transformers.TrainerCallback`` objects to add to the trainer (default: none)."""
        return []

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return the model to save after training (default: unchanged)."""
        return model


REGULARIZERS = family("regularizer", Regularizer)


def trainable_named_params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs that the optimizer updates (``requires_grad``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable parameters, by name: θ₀ for averaging and the L2 penalty."""
    return {n: p.detach().clone() for n, p in trainable_named_params(model)}


def build_regularizers(configs: list) -> list[Regularizer]:
    """Instantiate each config's registered class, structural ones first (stable otherwise)."""
    regs = [REGULARIZERS.get(c.kind)(c) for c in configs]
    return sorted(regs, key=lambda r: r.order)
