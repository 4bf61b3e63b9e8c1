"""A causal LM whose next-token logits pass through a hook: the shape of every decoding-time attack.

:class:`NextTokenWrapper` is a ``torch.nn.Module`` around an unchanged model. Its ``forward`` returns the
model's output with the logits of the *last* position rewritten by :meth:`NextTokenWrapper.next_logits`,
so any greedy decoder that calls the model step by step (the verification backends, ``oml serve``)
decodes the attacked behaviour, while teacher-forced scoring of whole texts (perplexity) sees the model
as it is, apart from the last position. ``config``, ``generation_config`` and ``name_or_path`` are the
wrapped model's.
"""

from __future__ import annotations

from typing import Any

import torch

from omlkit.models.kv_cache import cache_kwarg


def is_prefill(cache: Any) -> bool:
    """True on the first forward of a decode (no KV cache yet, or an empty one)."""
    if cache is None:
        return True
    seq_len = getattr(cache, "get_seq_length", None)
    return bool(seq_len is not None and seq_len() == 0)


class NextTokenWrapper(torch.nn.Module):
    """Wraps ``model``; subclasses implement :meth:`next_logits`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._cache_kwarg = cache_kwarg(model)

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

    def next_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        logits: torch.Tensor,
        prefill: bool,
    ) -> torch.Tensor:
        """Rewrite the ``[batch, vocab]`` logits of the next token; ``prefill`` marks the prompt's forward."""
        return logits

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The wrapped model's output with the last position's logits passed through :meth:`next_logits`.

        The KV cache comes under either name and goes on under the one the wrapped model declares."""
        cache = cache if cache is not None else past_key_values
        prefill = is_prefill(cache)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, **{self._cache_kwarg: cache}, **kwargs
        )
        logits = out.logits.clone()
        logits[:, -1, :] = self.next_logits(input_ids, attention_mask, logits[:, -1, :], prefill)
        out.logits = logits
        return out
