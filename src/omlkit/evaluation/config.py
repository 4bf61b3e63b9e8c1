"""Configs of ``oml evaluate utility``, ``oml evaluate robustness``, ``oml attack`` and ``oml report``.

Light module (pydantic only) so the CLI can build its options without importing torch. A ``model``
field takes a model id, a model folder, or a run directory (its ``model/`` is used and its results
land in it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from omlkit.config import OMIT_DEFAULT_FROM_ID, OmlConfig
from omlkit.fingerprints.matching import MatchMode

#: The tinyBenchmarks tasks of lm-eval that ``oml evaluate utility`` runs by default.
TINY_TASKS: tuple[str, ...] = (
    "tinyArc",
    "tinyHellaswag",
    "tinyMMLU",
    "tinyWinogrande",
    "tinyTruthfulQA",
    "tinyGSM8k",
)


class UtilityConfig(OmlConfig):
    """Utility as a delta against the base model: held-out perplexity, plus tinyBenchmarks via lm-eval."""

    model: str = Field(..., description="Model id, model folder (attack outputs too) or run directory.")
    base: str | None = Field(
        None,
        description="Base model the delta is taken against (default: the run's "
        "base model, else the embedded default).",
    )
    tasks: list[str] = Field(
        default_factory=lambda: list(TINY_TASKS), description="lm-eval tasks (tinyBenchmarks by default)."
    )
    benchmarks: bool = Field(True, description="Run lm-eval; when off (or out of reach) perplexity only.")
    limit: int | None = Field(None, ge=1, description="At most this many examples per lm-eval task.")
    heldout_texts: int | None = Field(None, ge=1, description="Use only the first N held-out paragraphs.")
    max_length: int = Field(256, ge=8, description="Truncate each held-out paragraph to this many tokens.")
    instructions: int = Field(
        200, ge=0, description="Instruction check size: the base model's answers to N held-out instructions, "
        "scored by the model (models with a chat template; 0: off).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    batch_size: int = Field(8, ge=1, description="Batch size for perplexity and lm-eval.")
    device: str | None = Field(None, description="Device (default: CUDA when available, else CPU).")
    out: Path | None = Field(None, description="Folder for utility.json (default: RUN/eval of a run dir).")
    force: bool = Field(False, description="Overwrite an existing utility.json.")


class RobustnessConfig(OmlConfig):
    """Fingerprint accuracy under each held-out system prompt and with none, one column per model."""

    model: list[str] = Field(
        ...,
        min_length=1,
        description="Model or run dir; repeat to compare (e.g. trained "
        "with and without prompt augmentation).",
    )
    label: list[str] = Field(
        default_factory=list, description="Column label per --model (default: folder name)."
    )
    fingerprints: Path = Field(..., description="Fingerprint file the models were trained on.")
    chat: bool = Field(
        False, description="Wrap prompts in the chat template (system prompt as a system message)."
    )
    match: MatchMode = Field("exact", description="How an answer must match the response.")
    batch_size: int = Field(64, ge=1, description="Keys per decoding batch.")
    device: str | None = Field(None, description="Device (default: CUDA when available, else CPU).")
    out: Path | None = Field(
        None, description="Folder for robustness.json (default: RUN/eval of the first run)."
    )
    force: bool = Field(False, description="Overwrite an existing robustness.json.")

    @model_validator(mode="after")
    def _labels_fit(self) -> RobustnessConfig:
        if self.label and len(self.label) != len(self.model):
            raise ValueError(
                f"give one --label per --model ({len(self.label)} labels for {len(self.model)} models)"
            )
        return self


class FormatsConfig(OmlConfig):
    """Fingerprint accuracy in each format a host may serve keys in (raw with and without BOS, chat
    template with and without a system prompt, a User:/Assistant: transcript)."""

    model: str = Field(..., description="Model id, model folder or run directory.")
    fingerprints: Path = Field(..., description="Fingerprint file the model was trained on.")
    formats: list[str] = Field(
        default_factory=list, description="Formats to check (default: all; `oml list prompt-format`)."
    )
    match: MatchMode = Field("exact", description="How an answer must match the response.")
    batch_size: int = Field(64, ge=1, description="Keys per decoding batch.")
    device: str | None = Field(None, description="Device (default: CUDA when available, else CPU).")
    out: Path | None = Field(None, description="Also write the table as JSON here.")


class AttackCommon(OmlConfig):
    """Attack a fingerprinted model at increasing strengths; each strength re-runs verify and utility.

    The fields every attack shares. Each attack declares its own options (strengths, learning rate, ...)
    in its file; ``omlkit.evaluation.attacks.config.AttackConfig`` adds them all as flags.
    """

    kind: str = Field(
        ...,
        description="Attack name (see `oml list attack`).",
    )
    model: str = Field(..., description="Fingerprinted model folder or run directory.")
    fingerprints: Path = Field(..., description="Fingerprint file to check before and after the attack.")
    base: str | None = Field(
        None,
        description="Base model (merge target, perplexity-filter reference, utility "
        "baseline); default: the run's base model, else the embedded default.",
    )
    out: Path | None = Field(
        None,
        description="Folder for attacked models and attack.json (default: RUN/attacks/KIND of a run dir).",
    )
    seed: int = Field(0, description="Seed of the attack's data order and initialisation.")
    chat: bool = Field(False, description="Verify through the chat template.")
    match: Literal["exact", "prefix", "within"] = Field(
        "exact", description="How an answer must match the response (within: after at most --within "
        "answer tokens, null rate calibrated on --base).",
    )
    within: int = Field(
        8, ge=1, description="With --match within: answer tokens the response may come after.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    heldout_texts: int | None = Field(
        128, ge=1, description="Held-out paragraphs for the utility perplexity."
    )
    device: str | None = Field(None, description="Device (default: CUDA when available, else CPU).")
    force: bool = Field(False, description="Overwrite an existing attack output folder.")


class ReportConfig(OmlConfig):
    """Write report.md with PNG plots from the results (evaluate, attack) found in run directories."""

    runs: list[str] = Field(
        ...,
        min_length=1,
        description="Run directories; several give recovery and utility against the number of fingerprints.",
    )
    out: Path | None = Field(None, description="Folder for report.md and plots (default: the first run).")
    force: bool = Field(False, description="Overwrite a report.md that `oml report` did not write.")
