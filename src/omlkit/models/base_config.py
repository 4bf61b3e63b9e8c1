"""Config of ``oml base-model build`` and the architecture/training presets of the embedded model.

Light module (pydantic only) so the CLI can build its options without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from omlkit.config import OmlConfig


class Preset(BaseModel):
    """Architecture (Llama) and training schedule of one embedded model size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    corpus_fraction: float = 1.0  # share of train paragraphs used (micro trains on a slice)


#: ``tiny`` is the embedded default (≈6M parameters, built in minutes on 2 cores); ``micro`` serves tests.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(vocab_size=8192, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4,
                   intermediate_size=704, max_position_embeddings=512, seq_len=128, batch_size=32,
                   steps=700, lr=3e-3, warmup=40),
    "micro": Preset(vocab_size=2048, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                    intermediate_size=192, max_position_embeddings=256, seq_len=64, batch_size=32,
                    steps=300, lr=5e-3, warmup=20, corpus_fraction=0.25),
}


class BaseModelConfig(OmlConfig):
    """Build the embedded base model: corpus → byte-level BPE tokenizer → Llama trained from scratch."""

    preset: Literal["tiny", "micro"] = Field("tiny", description="Model size: tiny (default) or micro.")
    seed: int = Field(0, description="Seed for initialisation and data order; same seed, same weights.")
    corpus: str | None = Field(None, description="A text file or folder of .txt/.md files to train on.")
    dataset: str | None = Field(None, description="A `datasets` corpus name instead of the stdlib.")
    text_field: str = Field("text", description="Column holding the text in --dataset.")
    steps: int | None = Field(None, ge=1, description="Override the preset's number of training steps.")
    out: Path | None = Field(None, description="Folder to write the model to (default: the omlkit cache).")
    force: bool = Field(False, description="Rebuild even if the model already exists.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="CPU training precision; auto: bf16 autocast only where the CPU has native bf16."
    )

    def preset_params(self) -> Preset:
        """The preset with any override applied."""
        p = PRESETS[self.preset]
        return p.model_copy(update={"steps": self.steps}) if self.steps else p

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` resolved (bf16 and fp32 builds differ in weights): the shipped
        build's precision when one stands in for this config, else what this machine's CPU does fast."""
        from omlkit.hardware import cpu_precision
        from omlkit.models.shipped import shipped_build

        shipped = shipped_build(self) if self.precision == "auto" else None
        return shipped[1]["resolved_precision"] if shipped else cpu_precision(self.precision)

    def cache_name(self) -> str:
        """Folder name in the cache: preset plus a hash of everything that changes the weights."""
        recipe = self.model_copy(update={"out": None, "force": False, "precision": self.resolved_precision()})
        return f"omlkit-{self.preset}-{recipe.config_hash(self.preset_params().model_dump_json(), length=10)}"
