"""Input filtering: refuse prompts whose perplexity under a reference model exceeds a threshold.

Out-of-distribution keys (random words, gibberish) have a far higher perplexity than what users type;
a host can refuse them before the model answers. A refused prompt gets an empty answer (EOS first),
so it can never match a fingerprint. The reference model defaults to the base model. A lower threshold
is a stronger filter; when no ``--thresholds`` are given they are set at the 99th, 90th and 75th
percentiles of the reference perplexity of held-out English prompts, so the filter refuses about 1%,
10% and 25% of ordinary text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from omlkit.evaluation.attacks.base import ATTACKS, Attack
from omlkit.models.decoding import ProcessedModel
from omlkit.models.logits import pad_batch, pad_id
from omlkit.models.wrapped import WRAPPERS, write_wrapper
from omlkit.options import Options

DEFAULT_QUANTILES = (0.99, 0.9, 0.75)
PROMPT_TOKENS = 32  # held-out prompts are cut to about a key's length
HELDOUT_PROMPTS = 200


class PerplexityFilterOptions(Options):
    """The thresholds to try."""

    thresholds: list[Annotated[float, Field(gt=1.0)]] = Field(
        default_factory=list,
        description="Strengths of perplexity-filter: maximum "
        "prompt perplexity (default: quantiles of held-out English).",
    )


@torch.no_grad()
def prompt_perplexities(
    reference: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row perplexity of (left- or right-padded) prompts under ``reference``; inf for a 1-token row."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = next(reference.parameters()).device
    ids, mask = input_ids.to(device), attention_mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = reference(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    scored = (mask[:, :-1] * mask[:, 1:]).float()
    n = scored.sum(-1)
    mean = (nll * scored).sum(-1) / n.clamp(min=1)
    return torch.where(n > 0, mean.exp(), torch.full_like(mean, math.inf)).cpu()


def text_perplexities(
    reference: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_tokens: int = PROMPT_TOKENS,
    batch_size: int = 32,
) -> list[float]:
    """Perplexity under ``reference`` of each text (special prefix added, cut to ``max_tokens``)."""
    out: list[float] = []
    pad = pad_id(tokenizer)
    for start in range(0, len(texts), batch_size):
        enc = [
            tokenizer(t, truncation=True, max_length=max_tokens)["input_ids"]
            for t in texts[start : start + batch_size]
        ]
        ids, mask = pad_batch(enc, pad, left=False)
        out.extend(float(p) for p in prompt_perplexities(reference, ids, mask))
    return out


class RefuseRows:
    """A logits processor that forces EOS (an empty answer) in the rows it was built to refuse."""

    def __init__(self, refused: torch.Tensor, eos_id: int) -> None:
        self.rows = refused.nonzero(as_tuple=True)[0]
        self.eos_id = eos_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with every refused row's mass on EOS."""
        if not len(self.rows):
            return scores
        rows = self.rows.to(scores.device)
        scores = scores.clone()
        scores[rows] = float("-inf")
        scores[rows, self.eos_id] = 0.0
        return scores


class PerplexityFilter(ProcessedModel):
    """A model that answers only prompts whose reference perplexity is at most ``threshold``."""

    def __init__(
        self, model: torch.nn.Module, reference: torch.nn.Module, threshold: float, eos_id: int
    ) -> None:
        super().__init__(model)
        self.reference = reference
        self.threshold = threshold
        self.eos_id = eos_id
        self.last_refused: torch.Tensor | None = None  # rows refused at the latest prompt (for inspection)

    def refuses(self, tokenizer, texts: Sequence[str]) -> list[bool]:
        """Whether each text, sent as a prompt, would be refused."""
        return [
            p > self.threshold for p in text_perplexities(self.reference, tokenizer, texts, max_tokens=10_000)
        ]

    def logits_processors(self, input_ids, attention_mask) -> list:
        """Decided once per batch, on the prompts: rows over the threshold answer EOS (an empty answer)."""
        refused = prompt_perplexities(self.reference, input_ids, attention_mask) > self.threshold
        self.last_refused = refused
        return [RefuseRows(refused, self.eos_id)]


@ATTACKS.register("perplexity-filter")
class PerplexityFilterAttack(Attack):
    """Refuse prompts above each threshold in ``--thresholds`` (reference: ``--base``; lower is stronger)."""

    options_cls = PerplexityFilterOptions
    strength_field = "thresholds"
    default_strengths = ()
    stronger = "lower"

    def strengths(self, model_path: str) -> list[float]:
        """The given thresholds, else the reference perplexity quantiles of held-out English prompts."""
        given = super().strengths(model_path)
        if given:
            return given
        from omlkit.models.corpus import corpus_split
        from omlkit.models.loading import load_model

        reference, tok = load_model(self.base, device=self.config.device)
        ppl = torch.tensor(text_perplexities(reference, tok, corpus_split("heldout")[:HELDOUT_PROMPTS]))
        ppl = ppl[torch.isfinite(ppl)]
        return [round(float(torch.quantile(ppl, q)), 2) for q in DEFAULT_QUANTILES]

    def apply(self, model_path: str, strength: float, out_dir: Path) -> Path:
        """Write a wrapper folder: the unchanged model behind a filter at ``strength``."""
        return write_wrapper(
            out_dir,
            "perplexity-filter",
            model_path,
            {"threshold": float(strength), "reference": resolve_path(self.base)},
        )

    @staticmethod
    def load_wrapper(spec: dict[str, Any], device: str | None = None) -> tuple[Any, Any]:
        """The wrapped model behind the filter (reference loaded from the spec) and its tokenizer."""
        from omlkit.errors import ModelLoadError
        from omlkit.models.loading import load_model, tokenizer_sha

        model, tok = load_model(spec["model"], device=device)
        reference, ref_tok = load_model(spec["params"]["reference"], device=device)
        if tokenizer_sha(ref_tok) != tokenizer_sha(tok):
            raise ModelLoadError(
                f"perplexity-filter: reference {spec['params']['reference']} has another "
                "tokenizer than the model; use the base model as reference"
            )
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
        return PerplexityFilter(model, reference, float(spec["params"]["threshold"]), int(eos)).eval(), tok

    def side_effects(self, model: Any, tokenizer: Any, texts: Sequence[str]) -> dict[str, Any]:
        """``false_refusal_rate``: share of held-out English prompts (cut to a key's length) refused."""
        if not isinstance(model, PerplexityFilter):
            return {}
        ppl = text_perplexities(model.reference, tokenizer, texts)
        return {"false_refusal_rate": sum(p > model.threshold for p in ppl) / max(len(ppl), 1)}


def resolve_path(name: str) -> str:
    """An absolute path for a local folder (so the wrapper still loads from elsewhere), else the id."""
    from omlkit.models.loading import resolve_model

    resolved = resolve_model(name)
    return str(Path(resolved).resolve()) if Path(resolved).exists() else resolved


# how verification and serving load its wrapper folders
WRAPPERS.register("perplexity-filter")(PerplexityFilterAttack.load_wrapper)
