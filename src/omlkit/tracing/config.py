"""Configs of ``oml distribute`` and ``oml trace``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from omlkit.config import OmlConfig
from omlkit.insertion.config import InsertConfig
from omlkit.tracing.trace import DEFAULT_ALPHA


class DistributeConfig(InsertConfig):
    """Make one fingerprinted copy of a model per host, each holding fingerprints that identify it.

    Every insertion flag applies to each copy. ``--fingerprints`` is the pool; ``--out-dir`` receives
    ``manifest.json`` (secret), the per-host subsets (secret) and ``runs/<host>/``.
    """

    hosts: int = Field(ge=2, le=1000, description="Number of hosts (one copy each).")
    rate: float = Field(
        0.25, gt=0.0, lt=1.0, description="Chance that a pool fingerprint goes into a given host's copy."
    )
    core: int = Field(
        0, ge=0, description="Fingerprints every copy holds, inserted once into a shared checkpoint first."
    )
    out_dir: Path = Field(Path("distribution"), description="Folder for the manifest, subsets and copies.")


class TraceConfig(OmlConfig):
    """Name the host (or hosts) a suspect model or endpoint descends from, spending few keys."""

    fingerprints: Path = Field(description="The pool fingerprint file the copies were made from.")
    manifest: Path = Field(description="manifest.json written by `oml distribute` (secret).")
    model: str | None = Field(None, description="Suspect local model (folder or id).")
    endpoint: str | None = Field(None, description="Suspect OpenAI-compatible API root.")
    api_key: str | None = Field(None, description="Bearer token for --endpoint.")
    chat: bool = Field(False, description="Ask through the chat template / chat completions.")
    alpha: float = Field(
        DEFAULT_ALPHA, gt=0.0, lt=1.0, description="Chance of accusing any innocent host (at most)."
    )
    chunk: int = Field(16, ge=1, description="Keys asked between two looks at the evidence.")
    max_keys: int | None = Field(None, ge=1, description="Most keys to spend (default: the whole pool).")
    seed: int = Field(0, description="Seed of the order keys are asked in.")
    out: Path | None = Field(None, description="Write the result (hosts and counts, no keys) here as JSON.")

    @model_validator(mode="after")
    def _one_target(self) -> TraceConfig:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model or --endpoint")
        return self
