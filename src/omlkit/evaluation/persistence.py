"""Persistence of fingerprints under an attack of increasing strength, and what the attack costs in utility.

Persistence at a strength is the share of the fingerprints that matched *before* the attack that still
match after it (keys that never matched are left out: they were never evidence); the attack success
is its complement. Utility is measured twice: the held-out perplexity delta (what the weights lost) and
the generation utility of :mod:`omlkit.evaluation.generated` (what the answers lost, which is all a
decoding-time attack costs); decoding-time attacks add their own side-effect measures (refusal or
intervention rates).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omlkit.errors import ConfigError, RunDirError
from omlkit.evaluation.results import (
    ATTACK_FORMAT,
    now,
    output_dir,
    resolve_base,
    resolve_model_ref,
    write_result,
)
from omlkit.fingerprints import FingerprintSet

if TYPE_CHECKING:
    from omlkit.evaluation.attacks import AttackConfig


def matched_ids(records: Iterable[dict[str, Any]]) -> set[int]:
    """Ids of the fingerprints whose answer matched, from verification records."""
    return {int(r["id"]) for r in records if r.get("matched")}


def persistence(before: set[int], after: set[int]) -> float | None:
    """Share of ``before`` that is also in ``after``; None when nothing matched before."""
    return len(before & after) / len(before) if before else None


def check_summary(result: Any) -> dict[str, Any]:
    """Counts, accuracy and verdict of a VerifyResult (no keys, no answers)."""
    verdict = result.verdict.as_dict()
    return {
        "checked": result.checked,
        "matched": result.matched,
        "accuracy": result.accuracy,
        "p_value": verdict["p_value"],
        "verdict": verdict["verdict"],
    }


def attack_outcome(before: Any, after: Any) -> dict[str, Any]:
    """What an attack did to the evidence: the attacked model's check, the fingerprints that survived,
    ``attack_success`` (the share of the fingerprints matched before that it removed) and whether it
    flipped an "owned" verdict."""
    before_ids, after_ids = matched_ids(before.records), matched_ids(after.records)
    kept = persistence(before_ids, after_ids)
    summary = check_summary(after)
    return {
        **summary,
        "survived": len(before_ids & after_ids),
        "persistence": kept,
        "attack_success": None if kept is None else 1.0 - kept,
        "verdict_flipped": before.verdict.as_dict()["verdict"] == "owned" and summary["verdict"] != "owned",
    }


def run_attack(cfg: AttackConfig, say: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Attack ``cfg.model`` at each strength, verify and measure utility each time; writes ``attack.json``.

    Returns ``(path, result)``. The result is rewritten after every strength, so an interrupted attack
    leaves what it measured. Refuses: an unknown attack, strength lists meant for another attack, a
    fingerprint file for another tokenizer, and an existing output folder without ``--force``.
    """
    from omlkit.evaluation.attacks import ATTACKS, load_attacked
    from omlkit.evaluation.generated import GenerationCheck
    from omlkit.evaluation.utility import heldout_perplexity, heldout_texts
    from omlkit.models.loading import load_model
    from omlkit.verification.backends.transformers_backend import TransformersBackend
    from omlkit.verification.verify import verify_model

    say = say or (lambda _msg: None)
    attack_cls = ATTACKS.get(cfg.kind)
    ref = resolve_model_ref(cfg.model)
    base = resolve_base(cfg.base, ref)
    attack = attack_cls(cfg, base=base)  # refuses options of another attack before anything runs
    out = output_dir(cfg.out, ref, "attacks", cfg.kind)
    path = out / "attack.json"
    if out.exists() and any(out.iterdir()) and not cfg.force:
        raise RunDirError(f"{out} already holds an attack (pass --force to overwrite)")
    fp_set = FingerprintSet.load(cfg.fingerprints)
    strengths = attack.strengths(ref.name)
    if not strengths:
        raise ConfigError(f"attack {cfg.kind!r}: no strengths to run")
    texts = heldout_texts(cfg.heldout_texts)

    judge, judge_tok = load_model(base, device=cfg.device)  # utility judge, and within's null model

    null: dict[str, Any] = {}  # within's null matches: the base, keys and settings never change

    def measure(model: Any, tok: Any) -> tuple[Any, float]:
        within = {}
        if cfg.match == "within":
            within = dict(within=cfg.within, null_model=TransformersBackend(judge, judge_tok),
                          null_ids=null.get("ids"))
        res = verify_model(model, fp_set, tokenizer=tok, chat=cfg.chat, match=cfg.match, **within)
        null["ids"] = res.null_ids
        return res, heldout_perplexity(model, tok, texts)

    model, tok = load_model(ref.name, device=cfg.device)
    fp_set.check_tokenizer(tok, source=str(cfg.fingerprints))
    say(f"before the attack: verifying {len(fp_set)} fingerprints")
    before, ppl_before = measure(model, tok)
    ppl_base = heldout_perplexity(judge, judge_tok, texts)
    generation = GenerationCheck.build(model, judge, tok, texts, chat=cfg.chat)
    del model
    result: dict[str, Any] = {
        "format": ATTACK_FORMAT,
        "created": now(),
        "kind": cfg.kind,
        "model": ref.name,
        "base": base,
        "fingerprints_sha256": fp_set.content_hash(),
        "n_fingerprints": len(fp_set),
        "strength_name": attack.strength_name,
        "stronger": attack.stronger,
        "config": cfg.model_dump(mode="json"),
        "before": {**check_summary(before), "perplexity": ppl_before},
        "base_perplexity": ppl_base,
        "n_texts": len(texts),
        "results": [],
    }
    for name in (attack.folder_name(s) for s in strengths):
        if (out / name).exists():
            shutil.rmtree(out / name)  # our own earlier output; --force was given or the folder was empty
    for strength, folder in attack.apply_all(ref.name, strengths, out):
        say(f"{cfg.kind} {attack.strength_name}={strength:g}: verifying the attacked model")
        model, tok = load_attacked(folder, device=cfg.device)
        after, ppl = measure(model, tok)
        row = {"strength": strength, "path": str(folder), **attack_outcome(before, after)}
        row.update(perplexity=ppl, utility_delta=ppl - ppl_before, **generation.measure(model))
        row["side_effects"] = attack.side_effects(model, tok, texts)
        result["results"].append(row)
        del model
        write_result(path, result, force=True)
    return write_result(path, result, force=True), result


def markdown_table(result: dict[str, Any]) -> str:
    """An attack result as Markdown: a row per strength with accuracy, persistence (1 − attack success),
    verdict and both utilities (results written before the generation utility show "–" there)."""
    name = result["strength_name"]
    extra = sorted({k for r in result["results"] for k in r.get("side_effects", {})})
    head = [name, "matched", "persistence", "verdict", "perplexity", "Δ perplexity", "generation utility"]
    head += extra
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    b = result["before"]
    before = f"| before | {b['matched']}/{b['checked']} | – | {b['verdict']} | {b['perplexity']:.2f} |"
    before += " – | – |"
    lines.append(before + " – |" * len(extra))
    for r in result["results"]:
        kept = r["persistence"]
        utility = r.get("generation_utility")
        cells = [
            f"{r['strength']:g}",
            f"{r['matched']}/{r['checked']}",
            "–" if kept is None else f"{kept:.1%}",
            r["verdict"],
            f"{r['perplexity']:.2f}",
            f"{r['utility_delta']:+.2f}",
            "–" if utility is None else f"{utility:.1%}",
            *(f"{r.get('side_effects', {}).get(k, float('nan')):.3f}" for k in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
