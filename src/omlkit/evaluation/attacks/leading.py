"""Suppression at the start of every answer, shared by ``suppress-topk``, ``suppress-neighbor`` and
``suppress-lookahead`` (arXiv 2509.26598's output-suppression attacks, as omlkit reads them).

A memorised fingerprint lives in the first tokens of the answer to its key: the verifier compares the
answer's opening with the response. A host that never lets the model say its first choice in the first
``--positions`` tokens of any answer removes such fingerprints whatever their confidence, and pays only
where ordinary answers begin. Each attack decides *which* tokens to ban at those positions
(:meth:`LeadingBan.banned`); this module applies the ban to the leading positions only and never bans
a whole row. The wrapper folder records the attack's parameters; :func:`register_leading` registers
the loader verification and serving use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.evaluation.attacks.base import ATTACKS, Attack
from omlkit.models.decoding import ProcessedModel
from omlkit.models.wrapped import WRAPPERS, write_wrapper
from omlkit.options import Options


class AnswerStartOptions(Options):
    """How many answer tokens the suppression attacks act on."""

    positions: int = Field(
        1, ge=1, description="suppress-topk/neighbor/lookahead: leading answer tokens they act on.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


class LeadingBan(ABC):
    """A logits processor banning :meth:`banned` tokens in the first ``positions`` steps after the prompt.

    ``prompt_mask`` is the attention mask of the (left-padded) prompts of the batch it was built for; a
    row whose every token would be banned is left unchanged.
    """

    def __init__(self, prompt_mask: torch.Tensor, positions: int) -> None:
        self.prompt_mask = prompt_mask
        self.prompt_len = prompt_mask.shape[1]
        self.positions = positions

    @abstractmethod
    def banned(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, V]``: the tokens to ban at this step."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with the banned tokens at −inf while the answer is shorter than ``positions``."""
        if input_ids.shape[1] - self.prompt_len >= self.positions:
            return scores
        ban = self.banned(input_ids, scores)
        ban &= ~ban.all(dim=-1, keepdim=True)  # never leave a row without a token
        return scores.masked_fill(ban, float("-inf")) if bool(ban.any()) else scores


def top_tokens(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``[B, V]`` marking each row's ``k`` highest-scoring tokens."""
    ban = torch.zeros_like(scores, dtype=torch.bool)
    return ban.scatter_(-1, scores.topk(min(k, scores.shape[-1]), dim=-1).indices, True)


class LeadingSuppression(ProcessedModel):
    """A model whose answers never start with the tokens ``make_ban(prompt_mask)`` bans."""

    def __init__(self, model: torch.nn.Module, make_ban) -> None:
        super().__init__(model)
        self.make_ban = make_ban

    def logits_processors(self, input_ids, attention_mask) -> list:
        """One ban, built for this batch's prompts."""
        return [self.make_ban(attention_mask)]


class LeadingAttack(Attack):
    """An answer-start suppression attack: a wrapper around the unchanged model, one per strength.

    Subclasses set the class attributes of :class:`Attack` and implement :meth:`ban_factory` (the
    loaded model and tokenizer, the wrapper's params → a callable ``prompt_mask -> LeadingBan``).
    """

    name: str = ""

    def params(self, strength: float) -> dict[str, Any]:
        """The wrapper's parameters at ``strength`` (the strength plus the attack's options)."""
        return {self.strength_name: float(strength), "positions": self.options.positions}

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Write a wrapper folder around the unchanged model."""
        return write_wrapper(out_dir, self.name, model_path, self.params(strength))

    @classmethod
    def ban_factory(cls, model: Any, tokenizer: Any, params: dict[str, Any]):
        """``prompt_mask -> LeadingBan`` for the wrapper's parameters."""
        raise NotImplementedError

    @classmethod
    def load_wrapper(cls, spec: dict[str, Any], device: str | None = None) -> tuple[Any, Any]:
        """The wrapped model (loaded from ``spec["model"]``) with the attack's ban, and its tokenizer."""
        from omlkit.models.loading import load_model

        model, tok = load_model(spec["model"], device=device)
        return LeadingSuppression(model, cls.ban_factory(model, tok, spec["params"])).eval(), tok


def register_leading(name: str):
    """Class decorator: register a :class:`LeadingAttack` as attack ``name`` and its wrapper loader."""

    def wrap(cls: type[LeadingAttack]) -> type[LeadingAttack]:
        cls.name = name
        ATTACKS.register(name)(cls)
        WRAPPERS.register(name)(cls.load_wrapper)
        return cls

    return wrap
