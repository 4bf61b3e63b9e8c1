"""Configs of ``oml verify`` and ``oml serve``.

``oml verify``'s flags are :class:`VerifyCommon`'s plus each backend's own options (declared in the
backend's file: the local backends' batch size, device and dtype; the endpoint's key, limits and
retries), added by :data:`VerifyConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from omlkit.config import OMIT_DEFAULT_FROM_ID, OmlConfig
from omlkit.options import with_options
from omlkit.verification.backends import BACKENDS


class VerifyCommon(OmlConfig):
    """Check a local model or an OpenAI-compatible endpoint against a fingerprint file; test ownership."""

    fingerprints: Path = Field(description="Fingerprint file (omlkit.fingerprints/1).")
    model: str | None = Field(
        None, description="Local model: id, folder, run directory's model/, or omlkit-tiny."
    )
    endpoint: str | None = Field(
        None, description="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1."
    )
    backend: str = Field(
        "auto",
        description="Backend (see `oml list backend`); auto: transformers for --model, http for --endpoint.",
    )
    chat: bool = Field(
        False, description="Ask through the chat template / chat completions instead of raw text."
    )
    system_prompt: str | None = Field(None, description="System prompt placed before each key.")
    match: Literal["exact", "prefix", "rank", "within"] = Field(
        "exact",
        description="exact (word boundary), prefix, rank (1-token responses: in the top --rank-k), or "
        "within (the response as a word after at most --within answer tokens).",
    )
    rank_k: int = Field(
        1, ge=1, description="With --match rank: a key matches when its response is in the top k."
    )
    within: int = Field(
        8, ge=1, description="With --match within: answer tokens the response may come after (a detour).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    null_model: str | None = Field(
        None,
        description="With --match rank or within: a model never fingerprinted (the base) whose matches "
        "calibrate the null rate (default: the model that generated the fingerprints).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    formats: list[str] = Field(
        [],  # a plain default (pydantic copies it), so a run id leaves the field out while it is empty
        description="Serving formats to probe (`oml list prompt-format`; an endpoint: raw, chat, "
        "chat-system, dialog): the first --probe keys are asked in each, the rest in the best one.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    probe: int = Field(
        8, ge=1, description="With --formats: keys asked in every format before choosing.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    sample: int | None = Field(
        None, ge=1, description="Check a random subset of N keys (keys are spent once revealed)."
    )
    seed: int = Field(0, description="Seed of the --sample draw.")
    alpha: float = Field(
        1e-9, gt=0.0, lt=1.0, description="Significance level: claim ownership only when p < alpha."
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens to generate (default: longest response + 2)."
    )
    out: Path | None = Field(
        None, description="Folder for verify.jsonl + summary.json; a partial run resumes."
    )
    force: bool = Field(False, description="Discard a previous result in --out instead of resuming it.")
    reveal: bool = Field(False, description="Also print each key, its response and the answer (secrets!).")

    @model_validator(mode="after")
    def _one_target(self) -> VerifyCommon:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --model or --endpoint")
        if self.endpoint is not None and self.backend not in ("auto", "http"):
            raise ValueError(f"--backend {self.backend} cannot query an --endpoint (use http)")
        if self.model is not None and self.backend == "http":
            raise ValueError("--backend http needs --endpoint, not --model")
        if self.formats and (self.chat or self.system_prompt is not None or self.out is not None):
            raise ValueError("--formats chooses the format itself: drop --chat, --system-prompt and --out")
        return self


def verify_config() -> type[VerifyCommon]:
    """The config class of ``oml verify`` for the backends registered now."""
    return with_options(VerifyCommon, BACKENDS.items(), "VerifyConfig", "backend")


VerifyConfig = verify_config()


class ServeConfig(OmlConfig):
    """Serve a local model behind a minimal OpenAI-compatible API (greedy decoding, temperature 0)."""

    model: str | None = Field(None, description="Model id, folder or embedded name (default: omlkit-tiny).")
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    served_name: str | None = Field(None, description="Model id reported by /v1/models (default: --model).")
    api_key: str | None = Field(None, description="Require this bearer token on every request.")
    device: str | None = Field(None, description="torch device (default: cuda when available, else cpu).")
    dtype: str | None = Field(None, description="bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu).")
    max_tokens_limit: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    max_batch: int = Field(32, ge=1, description="Most prompts of concurrent requests decoded in one batch.")
