"""Stage ``evaluate``: utility of the inserted model as a delta against its base (``evaluate_utility``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.evaluation.config import UtilityConfig
from omlkit.sweep.stages.base import Stage, StageContext, stage


@stage
class EvaluateStage(Stage):
    """Held-out perplexity (and lm-eval when enabled and reachable) of ``<run>`` and its base model."""

    name = "evaluate"
    config_cls = UtilityConfig
    runner_fields = frozenset({"model", "out", "force"})
    model_fields = ("base",)
    needs = ("insert",)

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"model": "model"}

    def output(self, ctx: StageContext) -> Path:
        return ctx.point_dir / "eval" / "utility.json"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.evaluation.utility import evaluate_utility

        out = self.output(ctx)
        # force: an earlier attempt may have written the file and died before point.json recorded it
        cfg = self.config(ctx, model=str(ctx.need("run_dir", self.name)), out=out.parent, force=True)
        _, result = evaluate_utility(cfg)
        return {
            "perplexity": result["perplexity"],
            "benchmarks": result["benchmarks"],
            "base": result["base"],
        }

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        ppl = result.get("perplexity") or {}
        return {"ppl_delta": ppl.get("delta"), "ppl_relative": ppl.get("relative")}
