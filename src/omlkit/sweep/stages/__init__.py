"""The sweep stages, one per file; importing this package registers them in the ``sweep-stage`` family."""

from omlkit.sweep.stages import attack, evaluate, false_positives, generate, insert, robustness, verify  # noqa: F401
from omlkit.sweep.stages.base import STAGES, Stage, StageContext

__all__ = ["STAGES", "Stage", "StageContext"]
