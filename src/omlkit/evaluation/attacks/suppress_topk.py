"""SuppressTop-k: the ``k`` most likely tokens are never the opening of an answer.

Greedy verification reads the model's first choice; a memorised response is that first choice at the
answer's first token. Banning the top ``k`` tokens at the first ``--positions`` answer tokens removes
every fingerprint whose response starts there, and defeats a verifier that accepts the response
anywhere in the top ``k``. Ordinary answers pay one forced second (or k+1-th) choice per answer.
Strengths are ``--tops`` (k; higher is stronger).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.evaluation.attacks.leading import (
    AnswerStartOptions,
    LeadingAttack,
    LeadingBan,
    register_leading,
    top_tokens,
)


class TopsOptions(AnswerStartOptions):
    """The number of top tokens to ban, per strength."""

    tops: list[Annotated[int, Field(ge=1)]] = Field(
        default=[],
        description="Strengths of suppress-topk/neighbor: top tokens banned at the answer's start.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


class BanTop(LeadingBan):
    """Bans each row's ``k`` highest-scoring tokens."""

    def __init__(self, prompt_mask: torch.Tensor, positions: int, k: int) -> None:
        super().__init__(prompt_mask, positions)
        self.k = k

    def banned(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The top ``k`` of each row."""
        return top_tokens(scores, self.k)


@register_leading("suppress-topk")
class SuppressTopKAttack(LeadingAttack):
    """Ban the top ``k`` tokens at each answer's first ``--positions`` tokens, for each k in ``--tops``."""

    options_cls = TopsOptions
    strength_field = "tops"
    default_strengths = (1.0, 2.0, 4.0)

    @classmethod
    def ban_factory(cls, model: Any, tokenizer: Any, params: dict[str, Any]):
        """``prompt_mask -> BanTop``."""
        k, positions = int(params["top"]), int(params["positions"])
        return lambda mask: BanTop(mask, positions, k)
