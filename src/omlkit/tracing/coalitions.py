"""Coalitions of hosts that pool their copies to hide which of them leaked: the three the tests trace.

- ``merge``: the k copies' weights averaged uniformly (one model);
- ``route``: every query answered by one of the k copies drawn at random;
- ``majority``: every token chosen by majority vote of the k copies' greedy choices (ties: the highest
  summed probability).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from omlkit.models.decoding import ProcessedModel, continued_logits
from omlkit.verification.backends.base import Backend

COALITIONS = ("merge", "route", "majority")


def merged(models: Sequence[torch.nn.Module]) -> torch.nn.Module:
    """A copy of the first model with every floating-point weight the uniform average of all of them."""
    import copy

    states = [m.state_dict() for m in models]
    avg = {}
    with torch.no_grad():
        for name, value in states[0].items():
            mean = sum(s[name].float() for s in states) / len(states)
            avg[name] = mean.to(value.dtype) if value.is_floating_point() else value
    out = copy.deepcopy(models[0])
    out.load_state_dict(avg)
    return out


class RoutedBackend(Backend):
    """Answers each prompt with one member backend drawn at random (seeded)."""

    def __init__(self, members: Sequence[Backend], seed: int = 0) -> None:
        self.members = list(members)
        self.rng = random.Random(seed)
        self.tokenizer = getattr(self.members[0], "tokenizer", None)

    def generate(self, prompts, max_new_tokens: int) -> list[str | None]:
        """One member's greedy answer per prompt."""
        picks = [self.rng.randrange(len(self.members)) for _ in prompts]
        out: list[str | None] = [None] * len(prompts)
        for m, member in enumerate(self.members):
            rows = [i for i, p in enumerate(picks) if p == m]
            if rows:
                texts = member.generate([prompts[i] for i in rows], max_new_tokens)
                for i, text in zip(rows, texts, strict=True):
                    out[i] = text
        return out


class MajorityVote:
    """A logits processor: the next token is the majority of the members' greedy choices on the same text."""

    def __init__(self, members: Sequence[torch.nn.Module], prompt_mask: torch.Tensor) -> None:
        self.members = list(members)
        self.prompt_mask = prompt_mask

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Scores with all mass on each row's elected token."""
        probs = [torch.softmax(scores.float(), dim=-1)]
        for m in self.members[1:]:
            probs.append(torch.softmax(continued_logits(m, input_ids, self.prompt_mask), dim=-1))
        votes = torch.zeros_like(probs[0])
        for p in probs:
            votes.scatter_add_(-1, p.argmax(-1, keepdim=True), torch.ones_like(p[:, :1]))
        elected = (votes + sum(probs) / (len(probs) + 1)).argmax(-1)  # most votes, then most probability
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, elected[:, None], 0.0)


class MajorityModel(ProcessedModel):
    """The first member decoding, every token elected by all members (see :class:`MajorityVote`)."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__(members[0])
        self.members = list(members)

    def logits_processors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list:
        """The vote, built for this batch's prompts."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return [MajorityVote(self.members, mask)]


def coalition_backend(kind: str, models: Sequence[torch.nn.Module], tokenizer: Any, seed: int = 0) -> Backend:
    """A verification backend answering as the coalition ``kind`` of ``models`` would."""
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    if kind == "merge":
        return TransformersBackend(merged(models), tokenizer)
    if kind == "route":
        return RoutedBackend([TransformersBackend(m, tokenizer) for m in models], seed)
    if kind == "majority":
        return TransformersBackend(MajorityModel(models), tokenizer)
    raise ValueError(f"unknown coalition {kind!r} (expected one of {', '.join(COALITIONS)})")
