"""Stage ``attack``: persistence of the fingerprints under one attack at increasing strengths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.evaluation.attacks import AttackConfig
from omlkit.sweep.stages.base import Stage, StageContext, stage

#: What a point records of each strength (the attacked model's path is left out).
_PER_STRENGTH = (
    "strength",
    "matched",
    "checked",
    "accuracy",
    "survived",
    "persistence",
    "p_value",
    "verdict",
    "perplexity",
    "utility_delta",
)


@stage
class AttackStage(Stage):
    """``run_attack`` on ``<run>`` into ``<point>/attack/`` (attacked models and ``attack.json``)."""

    name = "attack"
    config_cls = AttackConfig
    runner_fields = frozenset({"model", "fingerprints", "out", "force"})
    model_fields = ("base",)
    needs = ("insert",)

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"model": "model", "fingerprints": Path("fingerprints.json")}

    def output(self, ctx: StageContext) -> Path:
        return ctx.point_dir / "attack" / "attack.json"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.evaluation.persistence import run_attack

        out = self.output(ctx)
        cfg = self.config(
            ctx,
            model=str(ctx.need("run_dir", self.name)),
            fingerprints=ctx.need("fingerprints", self.name),
            out=out.parent,
            force=True,  # an unrecorded earlier attempt is ours to replace
        )
        _, result = run_attack(cfg)
        return {
            "kind": result["kind"],
            "strength_name": result["strength_name"],
            "before": result["before"],
            "results": [{k: r.get(k) for k in _PER_STRENGTH} for r in result["results"]],
        }

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        rows = result.get("results") or []
        if not rows:
            return {}
        last = rows[-1]
        return {
            f"persistence@{result.get('strength_name', 'strength')}={last['strength']:g}": last.get(
                "persistence"
            ),
            "attack_ppl_delta": last.get("utility_delta"),
        }
