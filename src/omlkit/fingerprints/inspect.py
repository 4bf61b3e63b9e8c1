"""Summary of a fingerprint set that reveals no key or response (``oml inspect``).

Counts, strategies and parameters, token lengths, ``response_prob`` quantiles, and the in-distribution
check: the keys' perplexity under the base model next to the held-out corpus's. Random-word keys
stand far above the corpus; English keys close to it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from omlkit.fingerprints.fingerprint_set import FingerprintSet

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def quantiles(values: Sequence[float], qs: Sequence[float] = QUANTILES) -> dict[str, float]:
    """Linear-interpolated quantiles of ``values`` keyed ``"q0"``, ``"q25"``...; empty for no values."""
    if not values:
        return {}
    data = sorted(values)
    out = {}
    for q in qs:
        pos = q * (len(data) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(data) - 1)
        out[f"q{round(q * 100)}"] = data[lo] + (data[hi] - data[lo]) * (pos - lo)
    return out


def _lengths(values: Sequence[int]) -> dict[str, float]:
    return {"min": min(values), "mean": statistics.fmean(values), "max": max(values)}


def summarize(
    fp_set: FingerprintSet,
    tokenizer: Any = None,
    model: Any = None,
    heldout: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary without secrets.

    Token lengths need ``tokenizer``; perplexities need ``model`` (and ``tokenizer``) and are computed
    on the keys and on ``heldout`` texts (skipped when either is missing).
    """
    fps = fp_set.fingerprints
    probs = [fp.response_prob for fp in fps if fp.response_prob is not None]
    summary: dict[str, Any] = {
        "count": len(fps),
        "key_strategy": fp_set.strategy.key,
        "response_strategy": fp_set.strategy.response,
        "params": fp_set.strategy.params,
        "generator": fp_set.generator.model_dump(),
        "secret_fields": sorted(fp_set.secret),
        "distinct_responses": len({fp.response for fp in fps}),
        "response_prob": {
            **quantiles(probs),
            "mean": statistics.fmean(probs) if probs else None,
            "missing": len(fps) - len(probs),
        },
    }
    if tokenizer is not None:
        enc = [tokenizer(fp.key, add_special_tokens=False)["input_ids"] for fp in fps]
        summary["key_tokens"] = _lengths([len(e) for e in enc])
        summary["response_tokens"] = _lengths(
            [len(tokenizer(fp.response, add_special_tokens=False)["input_ids"]) for fp in fps]
        )
    if model is not None and tokenizer is not None:
        from omlkit.models.perplexity import perplexity

        summary["key_perplexity"] = perplexity(model, tokenizer, [fp.key for fp in fps])
        if heldout:
            summary["heldout_perplexity"] = perplexity(model, tokenizer, list(heldout))
            summary["heldout_texts"] = len(heldout)
    return summary


def inspect_file(
    path: str,
    model_name: str | None = None,
    perplexity: bool = True,
    heldout_max: int = 200,
    device: str | None = None,
) -> tuple[FingerprintSet, dict[str, Any]]:
    """Load ``path`` and summarise it with its base model (``model_name`` or the set's own ``generator``).

    Refuses (FingerprintFileError) a malformed file or a model whose tokenizer is not the set's.
    """
    from omlkit.models.loading import load_model, load_tokenizer

    fp_set = FingerprintSet.load(path)
    name = model_name or fp_set.generator.model or None
    model = tok = heldout = None
    if name and perplexity:
        from omlkit.models.corpus import corpus_split

        model, tok = load_model(name, device=device)
        heldout = corpus_split("heldout")[:heldout_max]
    elif name:
        tok = load_tokenizer(name)
    if tok is not None:
        fp_set.check_tokenizer(tok, source=str(path))
    return fp_set, summarize(fp_set, tokenizer=tok, model=model, heldout=heldout)
