"""System-prompt robustness: fingerprint accuracy with no system prompt and under each held-out one.

A host rarely serves a model bare: it wraps every request in its own system prompt. The table has one
row per prompt (none, then the 10 held-out test templates that insertion never trains on) and one column
per model, so a run trained with prompt augmentation sits beside one trained without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omlkit.errors import ConfigError, RunDirError
from omlkit.evaluation.config import RobustnessConfig
from omlkit.evaluation.results import (
    ROBUSTNESS_FORMAT,
    now,
    output_dir,
    resolve_model_ref,
    write_result,
)
from omlkit.fingerprints import FingerprintSet

NO_PROMPT = "none"


def held_out_prompts() -> list[tuple[str, str | None]]:
    """``(row name, system prompt)``: ``("none", None)`` then ``("test-1", ...)`` … ``("test-10", ...)``."""
    from omlkit.insertion.augmentation import test_system_prompts

    return [(NO_PROMPT, None), *((f"test-{i}", p) for i, p in enumerate(test_system_prompts(), start=1))]


def accuracy_under_prompts(
    model: Any,
    tokenizer: Any,
    fp_set: FingerprintSet,
    prompts: Sequence[tuple[str, str | None]],
    *,
    chat: bool = False,
    match: str = "exact",
    batch_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """For each named prompt: ``{"checked", "matched", "accuracy", "p_value", "verdict"}`` of ``model``."""
    from omlkit.verification.verify import verify_model

    out: dict[str, dict[str, Any]] = {}
    for name, system_prompt in prompts:
        res = verify_model(
            model,
            fp_set,
            tokenizer=tokenizer,
            batch_size=batch_size,
            system_prompt=system_prompt,
            chat=chat,
            match=match,
        )
        verdict = res.verdict.as_dict()
        out[name] = {
            "checked": res.checked,
            "matched": res.matched,
            "accuracy": res.accuracy,
            "p_value": verdict["p_value"],
            "verdict": verdict["verdict"],
        }
    return out


def robustness_table(
    models: Sequence[tuple[str, Any, Any]],
    fp_set: FingerprintSet,
    prompts: Sequence[tuple[str, str | None]] | None = None,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Rows ``{"prompt", "system_prompt", "results": {label: cell}}`` for ``(label, model, tokenizer)``.

    ``prompts`` defaults to :func:`held_out_prompts` (11 rows); ``kw`` go to :func:`accuracy_under_prompts`.
    """
    prompts = list(prompts) if prompts is not None else held_out_prompts()
    columns = {
        label: accuracy_under_prompts(model, tok, fp_set, prompts, **kw) for label, model, tok in models
    }
    return _rows(prompts, columns)


def _rows(
    prompts: Sequence[tuple[str, str | None]], columns: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {"prompt": name, "system_prompt": sp, "results": {label: col[name] for label, col in columns.items()}}
        for name, sp in prompts
    ]


def mean_heldout_accuracy(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per model, the mean accuracy over the rows that have a system prompt."""
    held = [r for r in rows if r["prompt"] != NO_PROMPT]
    labels = list(rows[0]["results"]) if rows else []
    return (
        {lab: sum(r["results"][lab]["accuracy"] for r in held) / len(held) for lab in labels} if held else {}
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The robustness table as Markdown: a row per prompt, a column (accuracy, matched/checked) per model."""
    labels = [m["label"] for m in result["models"]]
    lines = ["| system prompt | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for row in result["rows"]:
        cells = [
            f"{c['accuracy']:.1%} ({c['matched']}/{c['checked']})"
            for c in (row["results"][lab] for lab in labels)
        ]
        lines.append(f"| {row['prompt']} | " + " | ".join(cells) + " |")
    means = result.get("mean_heldout_accuracy") or {}
    if means:
        lines.append(
            "| **mean (held-out)** | " + " | ".join(f"**{means[lab]:.1%}**" for lab in labels) + " |"
        )
    return "\n".join(lines)


def evaluate_robustness(cfg: RobustnessConfig) -> tuple[Path, dict[str, Any]]:
    """Run the table for every ``--model`` and write ``robustness.json``; returns ``(path, result)``.

    Refuses: a fingerprint file for another tokenizer, duplicate labels, and an existing result
    without ``--force``.
    """
    from omlkit.evaluation.attacks import load_attacked

    refs = [resolve_model_ref(m) for m in cfg.model]
    labels = list(cfg.label) or [r.label for r in refs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--label: column labels must differ (got {labels}); pass --label for each --model")
    path = output_dir(cfg.out, refs[0], "eval") / "robustness.json"
    if path.exists() and not cfg.force:
        raise RunDirError(f"{path} already exists (pass --force to overwrite)")
    fp_set = FingerprintSet.load(cfg.fingerprints)
    prompts = held_out_prompts()
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for label, ref in zip(labels, refs, strict=True):
        model, tok = load_attacked(ref.name, device=cfg.device)  # one model in memory at a time
        fp_set.check_tokenizer(tok, source=str(cfg.fingerprints))
        columns[label] = accuracy_under_prompts(
            model, tok, fp_set, prompts, chat=cfg.chat, match=cfg.match, batch_size=cfg.batch_size
        )
        del model
    rows = _rows(prompts, columns)
    result = {
        "format": ROBUSTNESS_FORMAT,
        "created": now(),
        "fingerprints_sha256": fp_set.content_hash(),
        "n_fingerprints": len(fp_set),
        "chat": cfg.chat,
        "match": cfg.match,
        "models": [
            {"label": lab, "model": ref.name, "run_dir": str(ref.run_dir) if ref.run_dir else None}
            for lab, ref in zip(labels, refs, strict=True)
        ],
        "rows": rows,
        "mean_heldout_accuracy": mean_heldout_accuracy(rows),
    }
    return write_result(path, result, force=cfg.force), result
