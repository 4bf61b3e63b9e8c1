"""Stage ``robustness``: fingerprint accuracy with no system prompt and under each held-out one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.evaluation.config import RobustnessConfig
from omlkit.sweep.stages.base import Stage, StageContext, stage

#: Column label of the point's model in its robustness table.
LABEL = "model"


@stage
class RobustnessStage(Stage):
    """``evaluate_robustness`` of ``<run>`` into ``<point>/robustness/robustness.json``."""

    name = "robustness"
    config_cls = RobustnessConfig
    runner_fields = frozenset({"model", "label", "fingerprints", "out", "force"})
    needs = ("insert",)

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"model": ["model"], "fingerprints": Path("fingerprints.json")}

    def output(self, ctx: StageContext) -> Path:
        return ctx.point_dir / "robustness" / "robustness.json"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.evaluation.robustness import evaluate_robustness

        out = self.output(ctx)
        cfg = self.config(
            ctx,
            model=[str(ctx.need("run_dir", self.name))],
            label=[LABEL],
            fingerprints=ctx.need("fingerprints", self.name),
            out=out.parent,
            force=True,
        )
        _, result = evaluate_robustness(cfg)
        return {
            "rows": {row["prompt"]: row["results"][LABEL] for row in result["rows"]},
            "mean_heldout_accuracy": result["mean_heldout_accuracy"].get(LABEL),
        }

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        none = (result.get("rows") or {}).get("none") or {}
        return {
            "acc_no_prompt": none.get("accuracy"),
            "acc_heldout_prompts": result.get("mean_heldout_accuracy"),
        }
