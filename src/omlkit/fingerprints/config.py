"""Config of ``oml generate`` (light module: pydantic only, so ``oml --help`` never imports torch)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from omlkit.config import OmlConfig


class GenerateConfig(OmlConfig):
    """Generate a secret fingerprint set: keys and responses from independently chosen strategies."""

    n: int = Field(64, ge=1, description="Number of fingerprints to generate.")
    key_strategy: str = Field("english", description="Key strategy (see `oml list key-strategy`).")
    response_strategy: str = Field(
        "perinucleus", description="Response strategy (see `oml list response-strategy`)."
    )
    key_length: int = Field(16, ge=1, description="Key length in tokens of the target model's tokenizer.")
    response_length: int = Field(1, ge=1, description="Response length in tokens of the target tokenizer.")
    t: float = Field(
        0.8, gt=0.0, lt=1.0, description="Perinucleus: probability mass of the nucleus, in (0, 1)."
    )
    k: int = Field(
        3, ge=1, description="Perinucleus: draw among this many word-like tokens past the nucleus."
    )
    temperature: float = Field(0.5, gt=0.0, description="Sampling temperature of the English generator LM.")
    seed: int = Field(42, description="Random seed; the same seed and batch size give the same set.")
    generator_model: str | None = Field(
        None, description="LM that writes English keys/responses (default: the target model)."
    )
    target_model: str | None = Field(
        None, description="Model the set is made for: its tokenizer and probabilities (default: omlkit-tiny)."
    )
    keys_file: Path | None = Field(
        None, description="Custom keys: a JSON list or a text file, one key per line."
    )
    functional_vocab: int = Field(
        64, ge=2, description="Functional keys: size of the secret word subset split into red and green."
    )
    functional_words: int = Field(
        4, ge=1, description="Functional keys: secret words placed in each key (n_g + n_r)."
    )
    batch_size: int = Field(64, ge=1, description="Keys generated and scored per batch.")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu).")
    out: Path = Field(
        Path("fingerprints.json"), description="Output fingerprint file (written with mode 0600)."
    )
    force: bool = Field(False, description="Overwrite --out when it exists.")
    progress: bool = Field(True, description="Show a progress bar.")
