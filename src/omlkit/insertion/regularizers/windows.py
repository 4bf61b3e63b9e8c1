"""Fresh windows of the benign corpus at every step, for the regularizers that look at ordinary text
(``kl_to_base``, ``persistence``), and the corpus as chat exchanges (:func:`chat_turns`).

Windows are drawn by (seed, rank, optimizer step, micro-batch) — and a per-regularizer salt — so a
resumed run draws the same ones and two processes draw different ones. :class:`CorpusWindows` is a
mixin: it keeps the run context, tokenizes the corpus in :meth:`load_corpus`, draws with
:meth:`windows`, and follows the optimizer step through the trainer callback of :meth:`callbacks`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from omlkit.errors import ConfigError, CorpusError
from omlkit.insertion.regularizers.base import RegularizerContext, as_callback


def token_stream(texts, tokenizer, max_tokens: int = 2_000_000) -> torch.Tensor:
    """The texts' token ids (each with the tokenizer's special prefix) concatenated, up to ``max_tokens``."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        if len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def chat_turns(texts, tokenizer, length: int, limit: int = 4096) -> dict[str, torch.Tensor]:
    """Up to ``limit`` corpus texts as one chat exchange each, ``length`` tokens, right-padded: the user
    turn holds the text's first quarter of ``length`` in tokens, the assistant answers with the text's
    next tokens and the end of its turn (the labelled ids; -100 elsewhere) — the shape of a host's
    instruction tuning. ConfigError without a chat template or when ``length`` leaves no answer."""
    from omlkit.models.logits import pad_batch, pad_id
    from omlkit.models.prompts import PromptTemplates, has_chat_template

    if not has_chat_template(tokenizer):
        raise ConfigError("chat turns need a tokenizer with a chat template; this one has none")
    wrap = PromptTemplates(tokenizer, chat=True)  # the template rendered once, spliced per text
    quarter = length // 4
    room = length - len(wrap([])) - quarter - 1
    if room < 4:
        raise ConfigError(f"{length} tokens leave no room for a chat answer after the template")
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    rows, labels = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < quarter + 4:
            continue
        prompt = wrap(ids[:quarter])
        answer = [*ids[quarter : quarter + room], *end]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
        if len(rows) >= limit:
            break
    if not rows:
        raise CorpusError(f"the benign corpus has no text of {quarter + 4} tokens for a chat turn")
    input_ids, mask = pad_batch(rows, pad_id(tokenizer), left=False)
    label_ids, _ = pad_batch(labels, -100, left=False)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


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

    def draw(self, high: int, n: int | None = None) -> torch.Tensor:
        """The next ``n`` (default ``batch_size``) integers in [0, ``high``) (deterministic in seed, rank
        and step)."""
        ctx = self._context
        seed = hash((*self.window_salt, ctx.seed, ctx.rank, self.step, self.micro)) & (2**62 - 1)
        self.micro += 1
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(0, high, (n or self.config.batch_size,), generator=gen)

    def windows(self, n: int | None = None) -> torch.Tensor:
        """The next ``n`` (default ``batch_size``) × ``length`` corpus windows (deterministic in seed, rank
        and step)."""
        starts = self.draw(len(self._stream) - self.config.length, n)
        return torch.stack([self._stream[s : s + self.config.length] for s in starts.tolist()])

    def callbacks(self) -> list:
        """The step tracker that makes window draws reproducible across a resume."""
        return [as_callback(_StepTracker(self))]
