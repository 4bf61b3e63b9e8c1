"""The reference regularizer: every hook implemented, none changes training (a zero loss term)."""

from __future__ import annotations

from typing import Literal

import torch

from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, RegularizerOptions, TrainBatch


class DummyConfig(RegularizerOptions):
    """The reference regularizer: does nothing, adds a zero loss term (tests and docs)."""

    kind: Literal["dummy"] = "dummy"


@REGULARIZERS.register("dummy")
class Dummy(Regularizer):
    """Adds 0 to the loss (so the logging path is exercised) and leaves the model as it is."""

    options_cls = DummyConfig

    def attach(self, context) -> None:
        """Nothing to keep: the dummy needs neither tokenizer nor corpus."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model unchanged."""
        return model

    def loss_term(self, model: torch.nn.Module, batch: TrainBatch | None = None) -> torch.Tensor:
        """A zero scalar on the model's device."""
        return torch.zeros((), device=next(model.parameters()).device)

    def callbacks(self) -> list:
        """No callbacks."""
        return []

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model unchanged."""
        return model
