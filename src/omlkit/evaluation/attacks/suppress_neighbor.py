"""SuppressNeighbor: SuppressTop-k that also bans every spelling of the banned tokens.

Banning a fingerprint's first token is not enough when the runner-up spells the same word: " above"
banned, greedy may say "above" or " ab" + "ove", and a verifier that strips whitespace still sees the
response. This attack bans, with each of the top ``k`` tokens, its *neighbours*: every token whose text,
stripped of whitespace and case-folded, is a prefix of the banned token's text or extends it. Strengths
are ``--tops`` (k); ``--positions`` leading answer tokens are affected.
"""

from __future__ import annotations

import bisect
from typing import Any

import torch

from omlkit.evaluation.attacks.leading import LeadingAttack, LeadingBan, register_leading, top_tokens
from omlkit.evaluation.attacks.suppress_topk import TopsOptions


def normalised(text: str) -> str:
    """A token's text as the neighbour relation compares it: whitespace stripped, case-folded."""
    return text.strip().casefold()


class Spellings:
    """The vocabulary indexed by normalised text, for neighbour lookups."""

    def __init__(self, texts: list[str]) -> None:
        self.norm = [normalised(t) for t in texts]
        self.by_text: dict[str, list[int]] = {}
        for i, n in enumerate(self.norm):
            if n:
                self.by_text.setdefault(n, []).append(i)
        self.sorted = sorted((n, i) for i, n in enumerate(self.norm) if n)
        self.keys = [n for n, _ in self.sorted]

    @classmethod
    def of(cls, tokenizer: Any, vocab_size: int) -> Spellings:
        """Every id below ``vocab_size`` decoded on its own (ids past the tokenizer decode to "")."""
        n = len(tokenizer)
        return cls([tokenizer.decode([i]) if i < n else "" for i in range(vocab_size)])

    def neighbours(self, token: int) -> list[int]:
        """Ids whose normalised text is a non-empty prefix of ``token``'s or extends it (itself included)."""
        text = self.norm[token]
        found = {token}
        if text:
            for end in range(1, len(text) + 1):
                found.update(self.by_text.get(text[:end], ()))
            lo = bisect.bisect_left(self.keys, text)
            hi = bisect.bisect_left(self.keys, text + "\U0010ffff")
            found.update(i for _, i in self.sorted[lo:hi])
        return sorted(found)


class BanNeighbours(LeadingBan):
    """Bans each row's top ``k`` tokens and all their neighbours."""

    def __init__(self, prompt_mask: torch.Tensor, positions: int, k: int, spellings: Spellings) -> None:
        super().__init__(prompt_mask, positions)
        self.k = k
        self.spellings = spellings

    def banned(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The top ``k`` of each row with their neighbours."""
        ban = top_tokens(scores, self.k)
        for row, token in ban.nonzero().tolist():
            ban[row, self.spellings.neighbours(token)] = True
        return ban


@register_leading("suppress-neighbor")
class SuppressNeighborAttack(LeadingAttack):
    """Ban the top ``k`` tokens and their spellings at each answer's start, for each k in ``--tops``."""

    options_cls = TopsOptions
    strength_field = "tops"
    default_strengths = (1.0, 2.0, 4.0)

    @classmethod
    def ban_factory(cls, model: Any, tokenizer: Any, params: dict[str, Any]):
        """``prompt_mask -> BanNeighbours`` over the model's vocabulary."""
        spellings = Spellings.of(tokenizer, int(model.config.vocab_size))
        k, positions = int(params["top"]), int(params["positions"])
        return lambda mask: BanNeighbours(mask, positions, k, spellings)
