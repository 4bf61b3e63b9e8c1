"""Stage ``verify``: the inserted model against its fingerprint set, with the ownership test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.sweep.stages.base import Stage, StageContext, read_json, stage
from omlkit.verification.config import VerifyConfig


@stage
class VerifyStage(Stage):
    """``verify_fingerprints`` on ``<run>/model`` through a local backend; writes ``<point>/verify/``."""

    name = "verify"
    config_cls = VerifyConfig
    runner_fields = frozenset({"fingerprints", "model", "endpoint", "out", "force", "reveal"})
    needs = ("insert",)

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"fingerprints": Path("fingerprints.json"), "model": "model"}

    def output(self, ctx: StageContext) -> Path:
        return ctx.point_dir / "verify" / "summary.json"

    def is_complete(self, ctx: StageContext) -> bool:
        return bool((read_json(self.output(ctx)) or {}).get("complete"))

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.verification.verify import verify_with_config

        cfg = self.config(
            ctx,
            fingerprints=ctx.need("fingerprints", self.name),
            model=str(ctx.need("run_dir", self.name) / "model"),
            out=self.output(ctx).parent,
        )
        result = verify_with_config(cfg)
        summary = result.summary()
        summary.pop("settings", None)
        return summary

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        own = result.get("ownership") or {}
        return {
            "recovery": result.get("accuracy"),
            "p_value": own.get("p_value"),
            "verdict": own.get("verdict"),
        }
