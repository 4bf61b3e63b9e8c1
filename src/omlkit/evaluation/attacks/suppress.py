"""Output suppression (arXiv 2509.26598): mask the top token whenever its probability exceeds a gate.

Memorised fingerprint responses are decoded with unusual confidence. A host that masks the most
likely token whenever its probability is above a gate ``g`` makes greedy decoding take the runner-up
exactly where the model is over-confident, which removes memorised responses while ordinary text, whose
top token rarely clears a high gate, is mostly left alone. A lower gate is a stronger attack.

:class:`SuppressTopToken` is a logits processor: a callable of ``(input_ids, scores)``, which is what
``model.generate``'s ``LogitsProcessorList`` calls (no subclass needed, so importing the attack does not
import transformers' generation code). The wrapper hands it to every greedy decode of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from omlkit.evaluation.attacks.base import ATTACKS, Attack
from omlkit.models.decoding import ProcessedModel
from omlkit.models.wrapped import WRAPPERS, write_wrapper
from omlkit.options import Options


class SuppressOptions(Options):
    """The gates to try."""

    gates: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=list,
        description="Strengths of suppress (top-token probability) and suppress-lookahead (mean "
        "probability of the run after it) above which the top token is masked.",
    )


class SuppressTopToken:
    """Sets the top token's score to −inf in every row where its probability exceeds ``gate``."""

    def __init__(self, gate: float) -> None:
        if not 0.0 <= gate <= 1.0:
            raise ValueError(f"gate must lie in [0, 1] (got {gate})")
        self.gate = gate

    def fired(self, scores: torch.Tensor) -> torch.Tensor:
        """Boolean mask over rows (any leading shape) where the top token's probability exceeds the gate."""
        return torch.softmax(scores.float(), dim=-1).amax(dim=-1) > self.gate

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Scores with the over-confident rows' top token masked."""
        fire = self.fired(scores)
        if not bool(fire.any()):
            return scores
        out = scores.clone()
        top = scores.argmax(dim=-1)
        rows = fire.nonzero(as_tuple=True)[0]
        out[rows, top[rows]] = float("-inf")
        return out


class SuppressWrapper(ProcessedModel):
    """A model whose greedy next token skips an over-confident top token."""

    def __init__(self, model: torch.nn.Module, gate: float) -> None:
        super().__init__(model)
        self.processor = SuppressTopToken(gate)

    def logits_processors(self, input_ids, attention_mask) -> list:
        """The suppression processor, at every step."""
        return [self.processor]


@ATTACKS.register("suppress")
class SuppressAttack(Attack):
    """Decoding-time suppression at each gate in ``--gates`` (lower is stronger)."""

    options_cls = SuppressOptions
    strength_field = "gates"
    default_strengths = (0.99, 0.9, 0.7, 0.5)
    stronger = "lower"

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Write a wrapper folder around the unchanged model with gate ``strength``."""
        return write_wrapper(out_dir, "suppress", model_path, {"gate": float(strength)})

    @staticmethod
    def load_wrapper(spec: dict[str, Any], device: str | None = None) -> tuple[Any, Any]:
        """The wrapped model (loaded from ``spec["model"]``) with the spec's gate, and its tokenizer."""
        from omlkit.models.loading import load_model

        model, tok = load_model(spec["model"], device=device)
        return SuppressWrapper(model, float(spec["params"]["gate"])).eval(), tok

    def side_effects(self, model: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
        """``intervention_rate``: share of held-out next-token decisions where the gate fires (and greedy
        decoding would change)."""
        if not isinstance(model, SuppressWrapper):
            return {}
        return {"intervention_rate": intervention_rate(model.model, tokenizer, texts, model.processor)}


@torch.no_grad()
def intervention_rate(
    model, tokenizer, texts: Sequence[str], processor: SuppressTopToken, max_length: int = 128
) -> float:
    """Share of next-token positions in ``texts`` where ``processor`` would mask the top token."""
    device = next(model.parameters()).device
    fired = total = 0
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"].to(
            device
        )
        if ids.shape[1] < 2:
            continue
        logits = model(input_ids=ids).logits[0, :-1]
        fired += int(processor.fired(logits).sum())
        total += logits.shape[0]
    return fired / total if total else 0.0


# how verification and serving load its wrapper folders
WRAPPERS.register("suppress")(SuppressAttack.load_wrapper)
