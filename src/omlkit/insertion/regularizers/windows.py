"""Fresh windows of the benign corpus at every step, for the regularizers that look at ordinary text
(``kl_to_base``, ``persistence``).

Windows are drawn by (seed, rank, optimizer step, micro-batch) — and a per-regularizer salt — so a
resumed run draws the same ones and two processes draw different ones. :class:`CorpusWindows` is a
mixin: it keeps the run context, tokenizes the corpus in :meth:`load_corpus`, draws with
:meth:`windows`, and follows the optimizer step through the trainer callback of :meth:`callbacks`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from omlkit.errors import CorpusError
from omlkit.insertion.regularizers.base import RegularizerContext, as_callback


def token_stream(texts, tokenizer, max_tokens: int = 2_000_000) -> torch.Tensor:
    """The texts' token ids (each with the tokenizer's special prefix) concatenated, up to ``max_tokens``."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        if len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


class _StepTracker:
    """Tells the regularizer which optimizer step is running; a trainer callback through ``as_callback``."""

    def __init__(self, reg: CorpusWindows) -> None:
        self.reg = reg

    def on_step_begin(self, args, state, control, **kwargs):
        self.reg.step, self.reg.micro = state.global_step, 0


class CorpusWindows:
    """Mixin of a regularizer drawing ``config.batch_size`` windows of ``config.length`` tokens."""

    #: Mixed into the draw's seed so two regularizers of one run draw different windows (() = none).
    window_salt: ClassVar[tuple] = ()

    _context: RegularizerContext | None = None
    _stream: torch.Tensor | None = None
    step: int = 0
    micro: int = 0

    def attach(self, context: RegularizerContext) -> None:
        """Keep the run's tokenizer, corpus and seed (the corpus is read in ``prepare``)."""
        self._context = context

    def load_corpus(self) -> None:
        """Tokenize the run's corpus; CorpusError when it holds no window of ``length`` tokens."""
        self._stream = token_stream(self._context.texts(), self._context.tokenizer)
        if len(self._stream) <= self.config.length:
            raise CorpusError(
                f"{self.config.kind}: the benign corpus has {len(self._stream)} tokens, fewer than one "
                f"window of {self.config.length}"
            )

    def windows(self) -> torch.Tensor:
        """The next ``batch_size`` × ``length`` corpus windows (deterministic in seed, rank and step)."""
        c, ctx = self.config, self._context
        draw = hash((*self.window_salt, ctx.seed, ctx.rank, self.step, self.micro)) & (2**62 - 1)
        gen = torch.Generator().manual_seed(draw)
        self.micro += 1
        starts = torch.randint(0, len(self._stream) - c.length, (c.batch_size,), generator=gen)
        return torch.stack([self._stream[s : s + c.length] for s in starts.tolist()])

    def callbacks(self) -> list:
        """The step tracker that makes window draws reproducible across a resume."""
        return [as_callback(_StepTracker(self))]
