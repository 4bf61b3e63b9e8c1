"""Local models through transformers: batched greedy decoding with left padding.

Prompts of a batch are padded on the left so every row's last real token sits in the last column;
the attention mask hides the padding and the position ids count real tokens only, so a batched row
decodes exactly as it would alone. Prompts are sorted by length before batching to keep padding low.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.models.decoding import eos_ids, greedy_batch, processed_next_scores
from omlkit.models.logits import eval_mode, pad_batch, pad_id
from omlkit.options import Options
from omlkit.verification.backends.base import BACKENDS, Answer, TokenBackend

DEFAULT_BATCH_SIZE = 64


class LocalOptions(Options):
    """Where and how a local model runs."""

    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Local backends: prompts per batch.")
    device: str | None = Field(
        None, description="Local backends: torch device (default: cuda when available)."
    )
    dtype: str | None = Field(None, description="Local backends: bf16, fp16 or fp32 (default: bf16 on cuda).")


def local_model_path(name: str) -> str:
    """``name`` itself, or ``name/model`` when ``name`` is a run directory holding its model there."""
    run_model = Path(name) / "model"
    return str(run_model) if (run_model / "config.json").is_file() else name


@dataclass
class Generation:
    """One greedy continuation: new token ids (EOS cut), whether EOS ended it, and optional log-probs.

    ``logprobs`` and ``top`` hold one entry more than ``ids`` when EOS ended it: the EOS step, whose id
    is ``stop_id`` (an echoing server shows it, as the API does)."""

    ids: list[int]
    finished: bool
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    stop_id: int | None = None


def _scored_steps(out: Any, top_k: int) -> list[tuple[list[float], list[list[int]], list[list[float]]]]:
    """Per generated step, for the whole batch at once: the chosen tokens' log-probabilities and the
    ``top_k`` (ids, log-probabilities) of each row."""
    steps = []
    for j, scores in enumerate(out.scores):
        logp = torch.log_softmax(scores.float(), dim=-1)
        best = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
        chosen = logp.gather(-1, out.ids[:, j : j + 1].to(logp.device))[:, 0]
        steps.append((chosen.tolist(), best.indices.tolist(), best.values.tolist()))
    return steps


@BACKENDS.register("transformers")
class TransformersBackend(TokenBackend):
    """Greedy decoding on a local causal LM: a model object, a name/path loaded with ``load_model``, or a
    wrapper folder written by a decoding-time attack (``oml attack suppress``/``perplexity-filter``)."""

    options_cls = LocalOptions

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        from omlkit.models.loading import context_length, load_tokenizer

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
        if isinstance(model, (str, os.PathLike)):
            from omlkit.models.wrapped import load_any

            self.name = str(model)
            # any model path, or a decoding-time attack's wrapper folder (suppress, perplexity-filter)
            model, tok = load_any(model, device=device, dtype=dtype)
            tokenizer = tokenizer or tok
        else:
            self.name = str(getattr(model, "name_or_path", "") or type(model).__name__)
            if tokenizer is None:
                if not getattr(model, "name_or_path", ""):
                    raise ConfigError(
                        "a model object without name_or_path needs its tokenizer passed explicitly"
                    )
                tokenizer = load_tokenizer(model.name_or_path)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = pad_id(tokenizer)
        self.eos_ids = eos_ids(model, tokenizer)
        self.max_length = context_length(model)

    @classmethod
    def from_config(cls, cfg: Any, options: LocalOptions) -> TransformersBackend:
        """From ``oml verify``'s --model (run directory: its ``model/``), --batch-size, --device, --dtype."""
        return cls(local_model_path(cfg.model), **dict(options))

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        """Backend name, model name and batch size."""
        return {"backend": "transformers", "model": self.name, "batch_size": self.batch_size}

    # -- batching ---------------------------------------------------------------------------------

    def _run(
        self, prompts_ids: Sequence[Sequence[int]], room: int, fn: Callable[[list], list]
    ) -> tuple[list, list]:
        """Apply ``fn`` to length-sorted batches of the valid prompts; (values, errors) in input order.

        Refused (value None, error set): an empty prompt, or one that with ``room`` new tokens would
        exceed the context length.
        """
        values: list[Any] = [None] * len(prompts_ids)
        errors: list[str | None] = [None] * len(prompts_ids)
        valid = []
        for i, ids in enumerate(prompts_ids):
            if len(ids) == 0:
                errors[i] = "empty prompt"
            elif len(ids) + room > self.max_length:
                errors[i] = (
                    f"prompt of {len(ids)} tokens + {room} new exceeds the context length {self.max_length}"
                )
            else:
                valid.append(i)
        valid.sort(key=lambda i: len(prompts_ids[i]), reverse=True)
        with eval_mode(self.model):  # dropout off; a caller's training model gets its mode back
            for s in range(0, len(valid), self.batch_size):
                batch = valid[s : s + self.batch_size]
                for i, value in zip(batch, fn([prompts_ids[i] for i in batch]), strict=True):
                    values[i] = value
        return values, errors

    def _left_pad(self, rows: list[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = pad_batch(rows, self.pad_id, left=True)
        return ids.to(self.device), mask.to(self.device)

    def _greedy(self, rows: list[Sequence[int]], max_new_tokens: int, top_k: int = 0) -> list[Generation]:
        ids, mask = self._left_pad(rows)
        out = greedy_batch(
            self.model, ids, mask, max_new_tokens, self.pad_id, self.eos_ids, scores=bool(top_k)
        )
        steps = _scored_steps(out, top_k) if top_k else []
        result = []
        for r, row in enumerate(out.ids.tolist()):
            cut = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
            kept = row[:cut] if cut is not None else row
            span = len(kept) + (cut is not None) if steps else 0  # the EOS step is scored too
            lp = [steps[j][0][r] for j in range(span)]
            top = [list(zip(steps[j][1][r], steps[j][2][r], strict=True)) for j in range(span)]
            result.append(Generation(kept, cut is not None, lp, top, row[cut] if cut is not None else None))
        return result

    # -- public API -------------------------------------------------------------------------------

    def generate_token_ids(
        self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int
    ) -> list[list[int] | None]:
        """The new token ids of each greedy continuation (EOS and after removed); None for refused prompts.

        Refused: an empty prompt, or one that with ``max_new_tokens`` would exceed the context length.
        """
        gens = self._run(prompts_ids, max_new_tokens, lambda rows: self._greedy(rows, max_new_tokens))[0]
        return [g.ids if g is not None else None for g in gens]

    def generate_detailed(
        self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int, top_k: int = 0
    ) -> tuple[list[Generation | None], list[str | None]]:
        """(generations, errors) in input order: token ids, whether EOS ended it, and with ``top_k`` > 0
        the chosen tokens' log-probabilities and the top-k (id, logprob) at each step (what a server's
        ``logprobs`` needs). A refused prompt has generation None and its error set."""
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
        return self._run(prompts_ids, max_new_tokens, lambda rows: self._greedy(rows, max_new_tokens, top_k))

    def answer_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[Answer]:
        """Decoded greedy continuations of token-id prompts, with a reason for each refused prompt."""
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")

        def decode(rows: list[Sequence[int]]) -> list[str]:
            gens = self._greedy(rows, max_new_tokens)
            return [self.tokenizer.decode(g.ids, skip_special_tokens=True) for g in gens]

        texts, errors = self._run(prompts_ids, max_new_tokens, decode)
        return [Answer(t, e) for t, e in zip(texts, errors, strict=True)]

    def generate_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str | None]:
        """Decoded greedy continuation of each token-id prompt; None for refused prompts."""
        return [a.text for a in self.answer_ids(prompts_ids, max_new_tokens)]

    def answer(self, prompts, max_new_tokens: int) -> list[Answer]:
        """Tokenize string/chat prompts, then :meth:`answer_ids`."""
        return self.answer_ids([self.encode(p) for p in prompts], max_new_tokens)

    @torch.inference_mode()
    def prompt_logprobs(
        self, prompts_ids: Sequence[Sequence[int]], top_k: int
    ) -> list[tuple[list[float | None], list[list[tuple[int, float]] | None]]]:
        """For each prompt: the log-probability of each of its tokens given the ones before (None for the
        first) and the ``top_k`` (id, logprob) at each position (None for the first): what a server's
        ``echo`` with ``logprobs`` returns, and what lm-eval scores log-likelihoods from."""
        out = []
        with eval_mode(self.model):
            for start in range(0, len(prompts_ids), self.batch_size):
                rows = [list(r) for r in prompts_ids[start : start + self.batch_size]]
                ids, mask = pad_batch(rows, self.pad_id, left=False)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]  # position i predicts token i + 1
                chosen = logp.gather(-1, ids[:, 1:, None].to(logp.device))[..., 0].tolist()
                best = logp.topk(min(max(top_k, 1), logp.shape[-1]), dim=-1)
                top_ids, top_lps = best.indices.tolist(), best.values.tolist()
                for r, row in enumerate(rows):
                    n = len(row) - 1
                    top = [list(zip(top_ids[r][i], top_lps[r][i], strict=True)) for i in range(n)]
                    out.append(([None, *chosen[r][:n]], [None, *top]))
        return out

    def top_first_tokens_ids(self, prompts_ids: Sequence[Sequence[int]], k: int) -> list[list[str] | None]:
        """The ``k`` most likely next tokens after each prompt (decoded, most likely first), from logits."""
        if k < 1:
            raise ConfigError(f"rank k must be >= 1 (got {k})")

        def top(rows: list[Sequence[int]]) -> list[list[str]]:
            logits = processed_next_scores(self.model, *self._left_pad(rows))
            idx = logits.topk(min(k, logits.shape[-1]), dim=-1).indices.tolist()
            return [[self.tokenizer.decode([t]) for t in row] for row in idx]

        return self._run(prompts_ids, 1, top)[0]
