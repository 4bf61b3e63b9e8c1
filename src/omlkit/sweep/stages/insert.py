"""Stage ``insert``: one run directory per (insert section, fingerprint file), shared across points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.insertion.config import InsertConfig
from omlkit.sweep.stages.base import Stage, StageContext, read_json, stage

#: What a point records of ``metrics.json``.
_METRICS = ("recovery", "recovered", "n_fingerprints", "global_step", "epochs", "early_stop", "train_seconds")


@stage
class InsertStage(Stage):
    """``insert_fingerprints`` into ``<out>/runs/<run-id>`` (id: hash of config + fingerprint content)."""

    name = "insert"
    config_cls = InsertConfig
    runner_fields = frozenset({"fingerprints", "out_dir", "run_id", "force", "resume"})
    model_fields = ("model",)
    needs = ("generate",)
    shared = True

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"fingerprints": Path("fingerprints.json")}

    def _config(self, ctx: StageContext) -> InsertConfig:
        return self.config(ctx, fingerprints=ctx.need("fingerprints", self.name), out_dir=ctx.out / "runs")

    def output(self, ctx: StageContext) -> Path:
        from omlkit.fingerprints import FingerprintSet
        from omlkit.insertion.run_dir import run_dir_for

        cfg = self._config(ctx)
        path = run_dir_for(cfg, FingerprintSet.load(cfg.fingerprints).content_hash()).path
        ctx.artifacts["run_dir"] = path
        return path

    def is_complete(self, ctx: StageContext) -> bool:
        from omlkit.insertion.run_dir import RunDir

        return RunDir(self.output(ctx)).is_finished()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.insertion.api import insert_fingerprints

        run_dir = insert_fingerprints(self._config(ctx), progress=False)
        ctx.artifacts["run_dir"] = Path(run_dir)
        return self.summarize(ctx)

    def summarize(self, ctx: StageContext) -> dict[str, Any]:
        run_dir = self.output(ctx)
        metrics = read_json(run_dir / "metrics.json") or {}
        return {"run_dir": str(run_dir), **{k: metrics.get(k) for k in _METRICS}}

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"train_recovery": result.get("recovery"), "steps": result.get("global_step")}
