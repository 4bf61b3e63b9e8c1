"""Config of ``oml generate``: its own fields plus each key and response strategy's options.

The strategies declare their options in their files (``PerinucleusOptions``: ``t``, ``k``; ...);
:data:`GenerateConfig` adds them as flags.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from omlkit.config import OmlConfig
from omlkit.fingerprints.strategies import KEY_STRATEGIES, RESPONSE_STRATEGIES
from omlkit.options import with_options


class GenerateCommon(OmlConfig):
    """Generate a secret fingerprint set: keys and responses from independently chosen strategies."""

    n: int = Field(64, ge=1, description="Number of fingerprints to generate.")
    key_strategy: str = Field("english", description="Key strategy (see `oml list key-strategy`).")
    response_strategy: str = Field(
        "perinucleus", description="Response strategy (see `oml list response-strategy`)."
    )
    key_length: int = Field(16, ge=1, description="Key length in tokens of the target model's tokenizer.")
    response_length: int = Field(1, ge=1, description="Response length in tokens of the target tokenizer.")
    seed: int = Field(42, description="Random seed; the same seed and batch size give the same set.")
    generator_model: str | None = Field(
        None, description="LM that writes English keys/responses (default: the target model)."
    )
    target_model: str | None = Field(
        None, description="Model the set is made for: its tokenizer and probabilities (default: omlkit-tiny)."
    )
    batch_size: int = Field(64, ge=1, description="Keys generated and scored per batch.")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu).")
    out: Path = Field(
        Path("fingerprints.json"), description="Output fingerprint file (written with mode 0600)."
    )
    force: bool = Field(False, description="Overwrite --out when it exists.")
    progress: bool = Field(True, description="Show a progress bar.")


def generate_config() -> type[GenerateCommon]:
    """The config class of ``oml generate`` for the strategies registered now."""
    strategies = [*KEY_STRATEGIES.items(), *RESPONSE_STRATEGIES.items()]
    return with_options(GenerateCommon, strategies, "GenerateConfig", "strategy")


GenerateConfig = generate_config()
