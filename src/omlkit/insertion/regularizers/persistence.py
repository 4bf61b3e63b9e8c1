"""Persistence training: learn fingerprints that survive the host's fine-tuning (first-order MAML).

The whitepaper's answer to fine-tuning attacks is bilevel: simulate the adversary's fine-tuning while
inserting, and train so the fingerprints still hold *after* it. At each micro-batch this regularizer
copies the weights, takes ``steps`` simulated fine-tuning steps on fresh benign-corpus windows (every
weight of the model moves, adapters or not, as a host's full fine-tuning would), measures the
fingerprint loss of the batch there, and adds ``strength`` × its gradient to the update of the real
weights, which are then restored. The adversary's steps are sign steps of size ``lr`` (each weight moves
by ``lr``, as Adam's early steps do; a plain SGD step of a fine-tuning learning rate barely moves a
model). First-order: the gradient at the attacked point is used as is, without differentiating through
the inner steps (FO-MAML), which costs ``steps + 1`` extra forward/backward passes instead of
second-order terms; the adversary does not know which fingerprints to remove, so the direction that
keeps them across a generic benign step is what matters. The simulated fine-tune trains on raw corpus
windows (``data: corpus``) or on the corpus as chat exchanges (``data: chat``: the user turn a text's
start, the assistant's answer its continuation, loss on the answer), the shape of the instruction
tuning a host of a chat model runs: that tuning trains the very position where a chat-served
fingerprint's response sits, the start of the assistant's turn. Composes with every other regularizer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import ConfigError
from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, RegularizerOptions, TrainBatch
from omlkit.insertion.regularizers.windows import CorpusWindows, chat_turns


class PersistenceConfig(RegularizerOptions):
    """strength × the fingerprint loss after ``steps`` simulated fine-tuning steps (first-order MAML)."""

    kind: Literal["persistence"] = "persistence"
    strength: float = Field(
        1.0, gt=0.0, description="Persistence training: weight of the loss after a simulated fine-tune.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    steps: int = Field(
        1, ge=1, description="Persistence training: simulated fine-tuning steps per batch.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    lr: float = Field(
        1e-3, gt=0.0, description="Persistence training: how far each simulated step moves a weight.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    batch_size: int = Field(
        4, ge=1, description="Persistence training: benign windows per simulated step.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    length: int = Field(
        64, ge=2, description="Persistence training: tokens per benign window.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )

    data: Literal["corpus", "chat"] = Field(
        "corpus", description="Persistence training: what the simulated fine-tune trains on: corpus windows, "
        "or corpus text as chat exchanges (loss on the assistant's answer; needs a chat template).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )

    flag_prefix: ClassVar[str] = "persistence_"
    flag_defaults: ClassVar[dict[str, Any]] = {"strength": 0.0}
    switch: ClassVar[str | None] = "persistence_strength"


@REGULARIZERS.register("persistence")
class Persistence(CorpusWindows, Regularizer):
    """Adds the gradient of the fingerprint loss at a simulated fine-tuned copy of the weights."""

    options_cls = PersistenceConfig

    window_salt = ("persistence",)
    _turns: dict[str, torch.Tensor] | None = None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Tokenize the benign corpus (as chat exchanges for ``data: chat``); the model is unchanged.
        CorpusError when it holds no window, ConfigError for chat without a chat template."""
        if self._context is None:
            return model
        if self.config.data == "chat":
            self._turns = chat_turns(self._context.texts(), self._context.tokenizer, self.config.length)
        else:
            self.load_corpus()
        return model

    def benign_batch(self) -> dict[str, torch.Tensor]:
        """The next simulated fine-tuning batch: corpus windows with the loss on every token, or chat
        exchanges with the loss on the answers."""
        if self._turns is None:
            ids = self.windows()
            return {"input_ids": ids, "labels": ids}
        rows = self.draw(len(self._turns["input_ids"]))
        return {name: t[rows] for name, t in self._turns.items()}

    def loss_term(self, model: torch.nn.Module, batch: TrainBatch | None = None) -> torch.Tensor | None:
        """A term whose value is the fingerprint loss after the simulated fine-tune and whose gradient
        is ``strength`` × that loss's gradient there (applied to the trainable weights). The simulation
        runs on copies (``torch.func.functional_call``): the live weights, which the training loss's
        graph still needs, are never touched."""
        from torch.func import functional_call

        if self._stream is None and self._turns is None:
            raise ConfigError("persistence: no benign corpus (the regularizer was not attached to a run)")
        if batch is None or batch.labels is None:
            return None
        live = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
        with torch.enable_grad():
            moved = self.simulate_finetuning(model, live)
            inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
            attacked = functional_call(model, moved, args=(), kwargs={**inputs, "labels": batch.labels})
            trainable = [n for n, p in live.items() if p.requires_grad]
            grads = torch.autograd.grad(attacked.loss, [moved[n] for n in trainable], allow_unused=True)
        surrogate = sum((live[n] * g).sum() for n, g in zip(trainable, grads, strict=True) if g is not None)
        return self.config.strength * (attacked.loss.detach() + surrogate - surrogate.detach())

    def simulate_finetuning(
        self, model: torch.nn.Module, live: dict[str, torch.nn.Parameter]
    ) -> dict[str, torch.Tensor]:
        """Copies of the ``live`` weights after ``steps`` sign steps of the causal-LM loss on benign
        batches (every weight moves, frozen or not); leaves that the fingerprint loss can differentiate."""
        from torch.func import functional_call

        device = next(iter(live.values())).device
        moved = {n: p.detach().requires_grad_(True) for n, p in live.items()}
        for _ in range(self.config.steps):
            batch = {name: t.to(device) for name, t in self.benign_batch().items()}
            loss = functional_call(model, moved, args=(), kwargs=batch).loss
            grads = torch.autograd.grad(loss, list(moved.values()), allow_unused=True)
            moved = {
                n: (v if g is None else (v - self.config.lr * g.sign())).detach().requires_grad_(True)
                for (n, v), g in zip(moved.items(), grads, strict=True)
            }
        return moved
