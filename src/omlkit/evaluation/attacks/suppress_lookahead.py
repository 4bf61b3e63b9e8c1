"""SuppressLookahead: ban an answer's first choice when what it leads to looks memorised.

Gated suppression (``suppress``) looks at one token's confidence, which a fingerprint scheme can keep
low (the confidence cap). A memorised response is confident as a *run*: after its first token the model
knows the rest and where it ends. At each of the first ``--positions`` answer tokens this attack extends
the top token greedily for ``--horizon`` more tokens (stopping at EOS) and bans it when the mean
probability of those tokens exceeds the gate. Strengths are ``--gates`` (lower is stronger).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.evaluation.attacks.leading import (
    AnswerStartOptions,
    LeadingAttack,
    LeadingBan,
    register_leading,
)
from omlkit.evaluation.attacks.suppress import SuppressOptions
from omlkit.models.decoding import continued_logits, eos_ids


class LookaheadOptions(AnswerStartOptions, SuppressOptions):
    """The gates, and how far ahead to look."""

    horizon: int = Field(
        4, ge=1, description="suppress-lookahead: greedy tokens looked ahead.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


class BanMemorisedRun(LeadingBan):
    """Bans a row's top token when the greedy run after it is confident (mean probability > gate)."""

    def __init__(
        self, prompt_mask: torch.Tensor, positions: int, model: Any, gate: float, horizon: int, eos: list[int]
    ) -> None:
        super().__init__(prompt_mask, positions)
        self.model, self.gate, self.horizon = model, gate, horizon
        self.eos = torch.tensor(eos or [-1])

    @torch.no_grad()
    def run_confidence(self, input_ids: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Mean probability of the greedy tokens after ``first`` (up to ``horizon``, EOS included)."""
        ids = torch.cat([input_ids, first[:, None]], dim=1)
        total = torch.zeros(len(ids))
        count = torch.zeros(len(ids))
        done = torch.isin(first.cpu(), self.eos)
        for _ in range(self.horizon):
            if bool(done.all()):
                break
            logits = continued_logits(self.model, ids, self.prompt_mask)
            prob, token = torch.softmax(logits, dim=-1).max(dim=-1)
            live = ~done
            total += torch.where(live, prob.cpu(), 0.0)
            count += live.float()
            done |= torch.isin(token.cpu(), self.eos)
            ids = torch.cat([ids, token[:, None]], dim=1)
        return total / count.clamp(min=1)  # 0 where the top token is EOS: nothing memorised follows

    def banned(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Each row's top token, where its run is confident."""
        top = scores.argmax(dim=-1)
        memorised = (self.run_confidence(input_ids, top) > self.gate).to(scores.device)
        ban = torch.zeros_like(scores, dtype=torch.bool)
        ban[memorised.nonzero(as_tuple=True)[0], top[memorised]] = True
        return ban


@register_leading("suppress-lookahead")
class SuppressLookaheadAttack(LeadingAttack):
    """Ban an answer's first choice when the run after it is confident, for each gate in ``--gates``."""

    options_cls = LookaheadOptions
    strength_field = "gates"
    default_strengths = (0.99, 0.9, 0.7)
    stronger = "lower"

    def params(self, strength: float) -> dict[str, Any]:
        """The gate, positions and horizon."""
        return {**super().params(strength), "horizon": self.options.horizon}

    @classmethod
    def ban_factory(cls, model: Any, tokenizer: Any, params: dict[str, Any]):
        """``prompt_mask -> BanMemorisedRun`` looking ahead with the wrapped model."""
        gate, positions, horizon = float(params["gate"]), int(params["positions"]), int(params["horizon"])
        eos = eos_ids(model, tokenizer)
        return lambda mask: BanMemorisedRun(mask, positions, model, gate, horizon, eos)
