"""Stage ``generate``: a fingerprint set per distinct generate section, shared by every point that uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlkit.fingerprints.config import GenerateConfig
from omlkit.io import canonical_json, sha256_bytes
from omlkit.sweep.stages.base import Stage, StageContext, stage


def set_summary(path: Path) -> dict[str, Any]:
    """Size, strategies, content hash and mean null rate of a fingerprint file (no keys or responses)."""
    from omlkit.fingerprints import FingerprintSet
    from omlkit.verification.ownership import null_rate

    fp_set = FingerprintSet.load(path)
    rates = [null_rate(fp_set, fp) for fp in fp_set.fingerprints]
    return {
        "file": str(path),
        "n": len(fp_set),
        "key_strategy": fp_set.strategy.key,
        "response_strategy": fp_set.strategy.response,
        "fingerprints_sha256": fp_set.content_hash(),
        "mean_null_rate": sum(rates) / len(rates) if rates else None,
    }


@stage
class GenerateStage(Stage):
    """``oml generate`` into ``<out>/fingerprints/<hash of the section>.json`` (mode 0600)."""

    name = "generate"
    config_cls = GenerateConfig
    runner_fields = frozenset({"out", "force", "progress"})
    model_fields = ("target_model",)
    shared = True

    def output(self, ctx: StageContext) -> Path:
        fields = self.id_fields(ctx.sections.get(self.name, {}), f"sweep: {self.name}")
        path = ctx.out / "fingerprints" / f"{sha256_bytes(canonical_json(fields).encode())[:12]}.json"
        ctx.artifacts["fingerprints"] = path
        return path

    def is_complete(self, ctx: StageContext) -> bool:
        from omlkit.errors import FingerprintFileError
        from omlkit.fingerprints import FingerprintSet

        path = self.output(ctx)
        if not path.is_file():
            return False
        try:
            FingerprintSet.load(path)
        except FingerprintFileError:
            return False
        return True

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from omlkit.fingerprints.generate import run_generate

        path = self.output(ctx)
        # written atomically, so an existing file here is a whole one that failed validation: replace it
        run_generate(self.config(ctx, out=path, force=path.exists(), progress=False))
        return set_summary(path)

    def summarize(self, ctx: StageContext) -> dict[str, Any]:
        return set_summary(self.output(ctx))
