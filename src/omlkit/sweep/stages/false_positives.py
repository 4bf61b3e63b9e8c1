"""Stage ``false_positives``: the fingerprint set against models that were never fingerprinted.

It measures what the ownership test assumes: how often a clean model answers a key with the fingerprint
response (its match rate) next to the null rate p0 the test uses, and the p-value a claim would get.
Clean models are the base model, any listed model, and embedded models of the same preset pretrained
with other seeds (``oml base-model build --seed S``), built once into the omlkit cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from omlkit.config import OmlConfig
from omlkit.fingerprints.matching import MatchMode
from omlkit.io import atomic_write_json
from omlkit.sweep.stages.base import Stage, StageContext, read_json, stage


class FalsePositivesConfig(OmlConfig):
    """Match rate and ownership p-value of a fingerprint set on each non-fingerprinted model."""

    fingerprints: Path = Field(description="Fingerprint file (set by the sweep).")
    base: str | None = Field(None, description="Base model (default: the model the set was generated for).")
    include_base: bool = Field(True, description="Check the base model itself.")
    models: list[str] = Field(default_factory=list, description="Other clean models: ids or folders.")
    seeds: list[int] = Field(
        default_factory=list, description="Embedded models of the base's preset pretrained with these seeds."
    )
    preset: Literal["tiny", "micro"] | None = Field(
        None, description="Preset of the seeded models (default: the base's, when it is omlkit-tiny/micro)."
    )
    match: MatchMode = Field("exact", description="How an answer must match the response.")
    alpha: float = Field(1e-9, gt=0.0, lt=1.0, description="Significance level of the ownership test.")
    batch_size: int = Field(64, ge=1, description="Prompts per decoding batch.")
    device: str | None = Field(None, description="torch device (default: cuda when available).")


def clean_models(cfg: FalsePositivesConfig, base: str) -> list[tuple[str, str]]:
    """``(label, loadable path)`` of every model to check; seeded embedded models are built when missing.

    Refuses (ConfigError) seeds without a preset when the base is not an embedded model.
    """
    from omlkit.errors import ConfigError
    from omlkit.models.loading import EMBEDDED_PREFIX, resolve_model

    models = [("base", resolve_model(base, progress=False))] if cfg.include_base else []
    models += [(m, resolve_model(m, progress=False)) for m in cfg.models]
    if cfg.seeds:
        preset = cfg.preset or (base[len(EMBEDDED_PREFIX) :] if base.startswith(EMBEDDED_PREFIX) else None)
        if preset not in ("tiny", "micro"):
            raise ConfigError(
                f"false_positives.seeds: set preset (tiny or micro); base {base} is not embedded"
            )
        from omlkit.models.base_config import BaseModelConfig
        from omlkit.models.embedded import build_base_model

        for seed in cfg.seeds:
            path, _ = build_base_model(BaseModelConfig(preset=preset, seed=seed), progress=False)
            models.append((f"omlkit-{preset} seed {seed}", str(path)))
    if not models:
        raise ConfigError(
            "false_positives: no model to check (include_base is off and models/seeds are empty)"
        )
    return models


def false_positive_rows(cfg: FalsePositivesConfig) -> list[dict[str, Any]]:
    """One row per clean model: checked, matched, match rate, mean null rate, p-value and verdict."""
    from omlkit.fingerprints import FingerprintSet
    from omlkit.verification.ownership import null_rate
    from omlkit.verification.verify import verify_model

    fp_set = FingerprintSet.load(cfg.fingerprints)
    rates = [null_rate(fp_set, fp) for fp in fp_set.fingerprints]
    p0 = sum(rates) / len(rates)
    rows = []
    for label, path in clean_models(cfg, cfg.base or fp_set.generator.model):
        res = verify_model(
            path, fp_set, batch_size=cfg.batch_size, device=cfg.device, match=cfg.match, alpha=cfg.alpha
        )
        own = res.verdict.as_dict()
        rows.append(
            {
                "model": label,
                "path": path,
                "checked": res.checked,
                "matched": res.matched,
                "match_rate": res.accuracy,
                "mean_null_rate": p0,
                "exceeds_null": res.accuracy > p0,
                "p_value": own["p_value"],
                "verdict": own["verdict"],
            }
        )
    return rows


@stage
class FalsePositivesStage(Stage):
    """Writes ``<point>/false_positives.json``; needs only the fingerprint set (no insertion)."""

    name = "false_positives"
    config_cls = FalsePositivesConfig
    runner_fields = frozenset({"fingerprints"})
    model_fields = ("base",)
    needs = ("generate",)

    @classmethod
    def placeholders(cls) -> dict[str, Any]:
        return {"fingerprints": Path("fingerprints.json")}

    def output(self, ctx: StageContext) -> Path:
        return ctx.point_dir / "false_positives.json"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        rows = false_positive_rows(self.config(ctx, fingerprints=ctx.need("fingerprints", self.name)))
        result = {"models": rows}
        atomic_write_json(self.output(ctx), result)
        return result

    def summarize(self, ctx: StageContext) -> dict[str, Any]:
        return read_json(self.output(ctx)) or {}

    def headline(self, result: dict[str, Any]) -> dict[str, Any]:
        rows = result.get("models") or []
        if not rows:
            return {}
        return {
            "fp_max_match_rate": max(r["match_rate"] for r in rows),
            "fp_min_p_value": min(r["p_value"] for r in rows),
            "fp_owned_claims": sum(r["verdict"] == "owned" for r in rows),
        }
