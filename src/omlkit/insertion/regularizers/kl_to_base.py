"""KL-to-base: strength·KL(p_base ‖ p_θ) on windows of benign corpus text drawn afresh at every step.

Benign mixing with the base model's *greedy* continuations trains towards a one-hot argmax and makes a
small model over-confident; this term keeps the whole next-token distribution of the base model on
ordinary text, at every position of every window, which is what held-out perplexity measures. The
windows come from the run's benign corpus (the embedded corpus's train split by default, never the
held-out split), are drawn by (seed, rank, step, micro-batch) so a resumed run draws the same ones,
and differ between processes. With ``on_prompts`` the same KL also covers the prompt positions of each
training batch (inside the keys), reusing the logits the training forward already made. With ``data:
chat`` (or ``both``) the windows are (or half of them are) corpus texts as chat exchanges, the KL over
every real position: a chat model served through its template keeps the base's predictions at the
start of the assistant's turn, which raw windows never show it and chat-template fingerprints move. The base
model is a frozen copy taken in ``prepare`` — one more copy of the weights in memory, no optimizer
state.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import ConfigError
from omlkit.insertion.dataset import IGNORE
from omlkit.insertion.regularizers.base import REGULARIZERS, Regularizer, RegularizerOptions, TrainBatch
from omlkit.insertion.regularizers.windows import (  # noqa: F401  (token_stream re-exported)
    CorpusWindows,
    chat_turns,
    token_stream,
)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(softmax(ref) ‖ softmax(logits)) (differentiable in ``logits``)."""
    logq = F.log_softmax(logits.float().flatten(0, -2), dim=-1)
    logp = F.log_softmax(ref_logits.float().flatten(0, -2), dim=-1)
    return F.kl_div(logq, logp, log_target=True, reduction="batchmean")


class KLToBaseConfig(RegularizerOptions):
    """strength·KL(p_base ‖ p_θ), averaged over every position of fresh benign-corpus windows each step:
    the base model's full next-token distribution as the target, so general text keeps its predictions."""

    kind: Literal["kl_to_base"] = "kl_to_base"
    strength: float = Field(
        1.0, gt=0.0, description="KL-to-base weight on fresh benign-corpus windows each step (0: off)."
    )
    batch_size: int = Field(
        8, ge=1, description="Benign windows per step for the KL-to-base term (per process)."
    )
    length: int = Field(64, ge=2, description="Tokens per KL-to-base window.")
    every: int = Field(
        1, ge=1, description="KL-to-base on every N-th optimizer step only, at N× the strength (cheaper).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    on_prompts: bool = Field(
        False, description="Also apply the KL-to-base term inside the keys of each training batch."
    )
    data: Literal["corpus", "chat", "both"] = Field(
        "corpus", description="KL-to-base windows: raw corpus text, corpus text as chat exchanges (needs a "
        "chat template), or half of each.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )

    flag_prefix: ClassVar[str] = "kl_"
    flag_defaults: ClassVar[dict[str, Any]] = {"strength": 0.0}
    switch: ClassVar[str | None] = "kl_strength"


@REGULARIZERS.register("kl_to_base")
class KLToBase(CorpusWindows, Regularizer):
    """Distils the base model's next-token distribution on benign text into the model being trained."""

    options_cls = KLToBaseConfig
    order = -1  # copy the untouched base before LoRA / added parameters wrap or widen it

    def __init__(self, config: KLToBaseConfig) -> None:
        super().__init__(config)
        self._base: torch.nn.Module | None = None
        self._turns: dict[str, torch.Tensor] | None = None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Freeze a copy of ``model`` as the reference and tokenize the corpus (as chat exchanges for
        ``data`` chat or both); the model is unchanged. CorpusError when the corpus holds no window of
        ``length`` tokens, ConfigError for chat without a chat template. Without ``attach`` (a model
        rebuilt only to load a trained state) nothing is copied."""
        if self._context is None:
            return model
        if self.config.data != "chat":
            self.load_corpus()
        if self.config.data != "corpus":
            self._turns = chat_turns(self._context.texts(), self._context.tokenizer, self.config.length)
        self._base = copy.deepcopy(model).eval().requires_grad_(False)
        return model

    def loss_term(self, model: torch.nn.Module, batch: TrainBatch | None = None) -> torch.Tensor | None:
        """strength·KL(p_base ‖ p_θ) over every position of this micro-batch's windows, plus (``on_prompts``)
        over the training batch's prompt positions. With ``every`` = N only on steps 0, N, 2N, … (None on
        the others), at N× the strength, so the mean pull is unchanged at 1/N of the cost."""
        if self._base is None:
            raise ConfigError("kl_to_base: no reference model (the regularizer was not attached to a run)")
        if self.step % self.config.every:
            return None
        device = next(model.parameters()).device
        if next(self._base.parameters()).device != device:
            self._base.to(device)
        term = self.benign_kl(model, device)
        if self.config.on_prompts and batch is not None:
            term = term + self.prompt_kl(batch)
        return self.config.strength * self.config.every * term

    def benign_kl(self, model: torch.nn.Module, device: torch.device) -> torch.Tensor:
        """KL(p_base ‖ p_θ) on this micro-batch's ``batch_size`` benign rows: corpus windows, chat
        exchanges, or (``both``) half of each, the halves weighted by their rows."""
        n = self.config.batch_size
        n_chat = {"corpus": 0, "chat": n, "both": (n + 1) // 2}[self.config.data]
        parts = []
        if n > n_chat:
            ids = self.windows(n - n_chat).to(device)
            with torch.no_grad():
                ref = self._base(input_ids=ids).logits
            parts.append((n - n_chat, kl_to_reference(model(input_ids=ids).logits, ref)))
        if n_chat:
            parts.append((n_chat, self.chat_kl(model, n_chat, device)))
        return sum(rows * kl for rows, kl in parts) / n

    def chat_kl(self, model: torch.nn.Module, n: int, device: torch.device) -> torch.Tensor:
        """KL(p_base ‖ p_θ) over every real position of ``n`` chat exchanges drawn from the corpus."""
        rows = self.draw(len(self._turns["input_ids"]), n)
        mask = self._turns["attention_mask"][rows]
        width = int(mask.sum(1).max())
        ids, mask = self._turns["input_ids"][rows, :width].to(device), mask[:, :width].to(device)
        with torch.no_grad():
            ref = self._base(input_ids=ids, attention_mask=mask).logits
        real = mask.bool()
        return kl_to_reference(model(input_ids=ids, attention_mask=mask).logits[real], ref[real])

    def prompt_kl(self, batch: TrainBatch) -> torch.Tensor:
        """KL(p_base ‖ p_θ) at the positions of ``batch`` that predict a prompt token (key, system prompt):
        the model keeps the base's predictions inside the keys, and only the positions that predict the
        response (which carry labels) are free to change. Zero when the batch has no such position."""
        if batch.labels is None or batch.logits is None:
            raise ConfigError("kl_to_base: on_prompts needs the batch's labels and logits")
        predicts_prompt = batch.labels[:, 1:] == IGNORE
        if batch.attention_mask is not None:
            predicts_prompt &= batch.attention_mask[:, 1:].bool()  # right padding is not a prompt token
        if not bool(predicts_prompt.any()):
            return batch.logits.sum() * 0.0
        with torch.no_grad():
            ref = self._base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return kl_to_reference(batch.logits[:, :-1][predicts_prompt], ref[:, :-1][predicts_prompt])
