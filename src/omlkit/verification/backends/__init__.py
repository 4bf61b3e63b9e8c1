"""Verification backends; importing this package registers each one in ``BACKENDS``."""

from omlkit.verification.backends import dummy, http_backend, transformers_backend, vllm_backend  # noqa: F401
from omlkit.verification.backends.base import BACKENDS, Answer, Backend, Prompt, TokenBackend

__all__ = ["BACKENDS", "Answer", "Backend", "Prompt", "TokenBackend"]
