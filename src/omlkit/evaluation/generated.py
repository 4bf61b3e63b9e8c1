"""Utility measured on what a model generates, not on the likelihood it assigns.

Perplexity scores the model's forward pass, which a decoding-time attack (output suppression, a prompt
filter) leaves untouched; a user sees the *answers*. :class:`GenerationCheck` asks the model for
greedy continuations of held-out English openings (in the format verification uses) and has a fixed
judge, the base model, score them: the judge's perplexity of the continuations. An attack's
**generation utility** is the judge perplexity of the unattacked model's continuations divided by that
of the attacked model's (1.0: as fluent as before; 0.9: the judge finds the answers about 11 % more
surprising), times the share of prompts still answered (a refused prompt is worth nothing), with the
share of continuations that changed at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from omlkit.models.logits import pad_batch, pad_id
from omlkit.models.prompts import prompt_ids

PROMPT_WORDS = 12  # an opening about a key's length
NEW_TOKENS = 24


def heldout_openings(texts: Sequence[str], words: int = PROMPT_WORDS) -> list[str]:
    """The first ``words`` words of each held-out text that has more than that."""
    return [" ".join(t.split()[:words]) for t in texts if len(t.split()) > words]


def continuations(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], new_tokens: int
) -> list[list[int]]:
    """Greedy continuations (token ids, EOS cut) of token-id prompts; refused prompts give ``[]``."""
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(model, tokenizer)
    return [ids or [] for ids in backend.generate_token_ids(prompts, new_tokens)]


@torch.no_grad()
def judge_nll(
    judge: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
) -> float:
    """Mean negative log-likelihood per token of ``answers`` after their prompts, under ``judge``."""
    device = next(judge.parameters()).device
    total, count = 0.0, 0
    rows = [(list(p), list(a)) for p, a in zip(prompts, answers, strict=True) if a]
    for s in range(0, len(rows), 16):
        chunk = rows[s : s + 16]
        ids, mask = pad_batch([p + a for p, a in chunk], pad_id(tokenizer), left=False)
        logits = judge(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device))[..., 0]
        for r, (p, a) in enumerate(chunk):
            total -= float(logp[r, len(p) - 1 : len(p) - 1 + len(a)].sum())
            count += len(a)
    return total / count if count else math.nan


@dataclass
class GenerationCheck:
    """Held-out prompts, the unattacked model's continuations and the judge that scores them."""

    tokenizer: Any
    judge: Any
    prompts: list[list[int]]
    reference: list[list[int]]
    reference_nll: float
    new_tokens: int = NEW_TOKENS

    @classmethod
    def build(
        cls, model: Any, judge: Any, tokenizer: Any, texts: Sequence[str], chat: bool = False
    ) -> GenerationCheck:
        """Prompts from the openings of ``texts`` (chat template when ``chat``) and ``model``'s answers."""
        prompts = [
            prompt_ids(tokenizer, tokenizer(o, add_special_tokens=False)["input_ids"], chat=chat)
            for o in heldout_openings(texts)
        ]
        reference = continuations(model, tokenizer, prompts, NEW_TOKENS)
        return cls(tokenizer, judge, prompts, reference, judge_nll(judge, tokenizer, prompts, reference))

    def measure(self, model: Any) -> dict[str, float]:
        """``generation_utility`` (reference judge perplexity / this model's), ``changed_continuations``
        (share differing from the unattacked model's) and ``judge_perplexity`` of ``model``'s answers."""
        answers = continuations(model, self.tokenizer, self.prompts, self.new_tokens)
        nll = judge_nll(self.judge, self.tokenizer, self.prompts, answers)
        changed = sum(a != r for a, r in zip(answers, self.reference, strict=True))
        expected = [bool(a) for a, r in zip(answers, self.reference, strict=True) if r]
        answered = sum(expected) / len(expected) if expected else 1.0
        return {
            "generation_utility": answered * math.exp(self.reference_nll - nll) if answered else 0.0,
            "changed_continuations": changed / max(len(answers), 1),
            "judge_perplexity": math.exp(nll),
        }
