"""Model and tokenizer loading, prompt rendering, and the embedded base model."""

from omlkit.models.loading import (
    DEFAULT_MODEL,
    context_length,
    load_model,
    load_tokenizer,
    model_sha,
    pick_device,
    pick_dtype,
    resolve_model,
    tokenizer_sha,
)
from omlkit.models.prompts import prompt_ids, render_prompt

__all__ = [
    "DEFAULT_MODEL",
    "context_length",
    "load_model",
    "load_tokenizer",
    "model_sha",
    "pick_device",
    "pick_dtype",
    "prompt_ids",
    "render_prompt",
    "resolve_model",
    "tokenizer_sha",
]
