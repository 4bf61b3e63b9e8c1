"""The one greedy decoder every caller uses: ``model.generate`` on a left-padded batch, with logits
processors for decoding-time changes.

Verification, serving, the insertion's recovery check and benign targets all decode through
:func:`greedy_batch`. ``benchmarks/verify.py`` timed a hand-written KV-cache loop against ``generate``
on the same batches: 1.00× (omlkit-tiny) and 1.02× (SmolLM2-135M), identical token ids, so there is
no loop of our own. Every generation setting is given (the neutral defaults included), so a model's
shipped generation config (a repetition penalty, sampling) never changes what greedy means.

A decoding-time attack (output suppression, a prompt filter) is a :class:`ProcessedModel`: the
unchanged model plus the ``LogitsProcessor`` objects its ``generate`` applies; its forward is the
model's own, and :func:`processed_next_scores` applies the same processors to one forward's logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch


@dataclass
class GreedyBatch:
    """Greedy continuations of one batch: the new token ids ``[B, T]`` (padded after EOS) and, when
    asked for, the processed next-token scores of each step (``T`` tensors ``[B, V]``)."""

    ids: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None


def greedy_batch(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    scores: bool = False,
) -> GreedyBatch:
    """Greedy decoding of a left-padded batch with ``model.generate``; stops a row at any of ``eos_ids``."""
    from transformers import GenerationConfig

    settings = dict(_neutral_settings())
    settings.update(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=list(eos_ids) or None,
        output_scores=scores,
        return_dict_in_generate=True,
    )
    config = GenerationConfig(**settings)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return GreedyBatch(out.sequences[:, input_ids.shape[1] :], tuple(out.scores) if scores else None)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the model's generation config's EOS ids and the tokenizer's."""
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    return sorted(ids)


@cache
def _neutral_settings() -> tuple[tuple[str, Any], ...]:
    """transformers' neutral value of every generation setting. A field left None is filled from the
    model's own generation config, so each setting that shapes greedy decoding (repetition penalty,
    n-gram blocking, minimum length) is given explicitly. Computed once."""
    from transformers import GenerationConfig

    neutral = getattr(GenerationConfig(), "_get_default_generation_params", dict)()
    return tuple((k, v) for k, v in neutral.items() if v is not None and k != "max_length")


def processors_of(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list:
    """The logits processors ``model`` decodes with for this batch (none for a plain model)."""
    make = getattr(model, "logits_processors", None)
    return list(make(input_ids, attention_mask)) if make else []


def continued_logits(model: Any, input_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``[B, V]`` (float32) after ``input_ids``: left-padded prompts (``prompt_mask``)
    followed by the tokens generated so far, which are all real (the mask grows by ones)."""
    grown = torch.ones(len(input_ids), input_ids.shape[1] - prompt_mask.shape[1], dtype=prompt_mask.dtype)
    mask = torch.cat([prompt_mask.cpu(), grown], dim=1).to(input_ids.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()


@torch.inference_mode()
def processed_next_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Next-token scores ``[B, V]`` (float32) after a left-padded batch, through the model's processors:
    what the first greedy step chooses from."""
    logits = continued_logits(model, input_ids, attention_mask)
    for processor in processors_of(model, input_ids, attention_mask):
        logits = processor(input_ids, logits)
    return logits


class ProcessedModel(torch.nn.Module):
    """An unchanged causal LM whose ``generate`` also applies :meth:`logits_processors` (subclasses)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        """The wrapped model's config (context length, vocabulary)."""
        return self.model.config

    @property
    def generation_config(self) -> Any:
        """The wrapped model's generation config (EOS ids)."""
        return getattr(self.model, "generation_config", None)

    @property
    def name_or_path(self) -> str:
        """The wrapped model's name or path."""
        return str(getattr(self.model, "name_or_path", ""))

    def get_input_embeddings(self) -> torch.nn.Module:
        """The wrapped model's input embeddings (for tokenizer checks)."""
        return self.model.get_input_embeddings()

    def logits_processors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list:
        """The processors for a batch about to be decoded (default: none)."""
        return []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, unchanged (perplexity sees the model itself)."""
        return self.model(*args, **kwargs)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """The wrapped model's ``generate`` with this wrapper's processors after any given ones."""
        from transformers import LogitsProcessorList

        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.extend(self.logits_processors(input_ids, mask))
        return self.model.generate(
            input_ids=input_ids, attention_mask=mask, logits_processor=processors, **kwargs
        )
