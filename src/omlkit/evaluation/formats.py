"""Fingerprint accuracy in every format a host may serve keys in (``oml evaluate formats``).

Each format (:mod:`omlkit.models.formats`) wraps every key; the model answers greedily; the answers are
matched as verification matches them and the ownership test runs per format, so a table shows where
the fingerprints hold and where a host's choice of format would hide them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omlkit.fingerprints import FingerprintSet
from omlkit.models.formats import format_builders
from omlkit.verification.formats import ask_in_format
from omlkit.verification.ownership import null_rate, ownership_test
from omlkit.verification.verify import default_max_new_tokens


def accuracy_by_format(
    backend: Any, fp_set: FingerprintSet, formats: Sequence[str] | None = None, match: str = "exact"
) -> dict[str, dict[str, Any]]:
    """``{format: {"checked", "matched", "accuracy", "p_value", "verdict"}}`` of a token backend's model
    (formats the tokenizer cannot express are left out)."""
    fps = fp_set.fingerprints
    max_new_tokens = default_max_new_tokens(fps, fp_set.strategy.params)  # as verification asks
    rates = [null_rate(fp_set, fp) for fp in fps]
    out: dict[str, dict[str, Any]] = {}
    for name, wrap in format_builders(backend.tokenizer, formats).items():
        matched = sum(r["matched"] for r in ask_in_format(backend, fps, wrap, max_new_tokens, match))
        verdict = ownership_test(rates, matched).as_dict()
        out[name] = {"checked": len(fps), "matched": matched, "accuracy": matched / len(fps),
                     "p_value": verdict["p_value"], "verdict": verdict["verdict"]}
    return out


def markdown_table(result: dict[str, dict[str, Any]]) -> str:
    """One row per format: matched, accuracy, p-value and verdict."""
    lines = ["| format | matched | accuracy | p-value | verdict |", "|---|---:|---:|---:|---|"]
    for name, r in result.items():
        lines.append(f"| {name} | {r['matched']}/{r['checked']} | {r['accuracy']:.1%} | {r['p_value']:.3g} "
                     f"| {r['verdict']} |")
    return "\n".join(lines)
