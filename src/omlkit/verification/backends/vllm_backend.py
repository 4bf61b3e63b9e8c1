"""vLLM, an optional extra (``pip install 'omlkit[vllm]'``) used when it is installed and a GPU is present.

vllm is imported only when a :class:`VllmBackend` is built, behind :func:`vllm_available`; without it
(or without a CUDA GPU) construction fails with a one-line ConfigError saying what is missing.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.options import Options
from omlkit.verification.backends.base import BACKENDS, Answer, TokenBackend


def vllm_available() -> tuple[bool, str]:
    """(True, "") when vllm is importable and a CUDA GPU is visible, else (False, why not)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install 'omlkit[vllm]')"
    import torch

    if not torch.cuda.is_available():
        return False, "vllm needs a CUDA GPU and none is visible"
    return True, ""


class VllmOptions(Options):
    """The weights' precision on the GPU."""

    dtype: str | None = Field(None, description="Local backends: bf16, fp16 or fp32 (default: bf16 on cuda).")


@BACKENDS.register("vllm")
class VllmBackend(TokenBackend):
    """Greedy decoding with ``vllm.LLM`` on token-id prompts (token-exact, like the transformers backend)."""

    options_cls = VllmOptions

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.8,
        **llm_kwargs: Any,
    ) -> None:
        ok, why = vllm_available()
        if not ok:
            raise ConfigError(f"backend vllm unavailable: {why}")
        from vllm import LLM

        from omlkit.models.loading import resolve_model

        self.name = resolve_model(model)
        self.llm = LLM(
            model=self.name,
            dtype=dtype or "auto",
            gpu_memory_utilization=gpu_memory_utilization,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    @classmethod
    def from_config(cls, cfg: Any, options: VllmOptions) -> VllmBackend:
        """From ``oml verify``'s --model (a run directory means its ``model/``) and --dtype."""
        from omlkit.verification.backends.transformers_backend import local_model_path

        return cls(local_model_path(cfg.model), dtype=options.dtype)

    def describe(self) -> dict[str, Any]:
        """Backend name and model."""
        return {"backend": "vllm", "model": self.name}

    def _run(self, prompts_ids: Sequence[Sequence[int]], **params: Any) -> list:
        from vllm import SamplingParams

        inputs = [{"prompt_token_ids": list(ids)} for ids in prompts_ids]
        return self.llm.generate(inputs, SamplingParams(temperature=0.0, **params), use_tqdm=False)

    def answer_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[Answer]:
        """Greedy continuations (stopping at EOS, special tokens skipped)."""
        outs = self._run(prompts_ids, max_tokens=max_new_tokens, skip_special_tokens=True)
        return [
            Answer(o.outputs[0].text) if o.outputs else Answer(None, "vllm returned no output") for o in outs
        ]

    def generate_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str | None]:
        """Decoded greedy continuation of each token-id prompt."""
        return [a.text for a in self.answer_ids(prompts_ids, max_new_tokens)]

    def answer(self, prompts, max_new_tokens: int) -> list[Answer]:
        """Tokenize string/chat prompts, then :meth:`answer_ids`."""
        return self.answer_ids([self.encode(p) for p in prompts], max_new_tokens)

    def top_first_tokens_ids(self, prompts_ids: Sequence[Sequence[int]], k: int) -> list[list[str] | None]:
        """Top-``k`` first tokens from vLLM's logprobs (decoded, most likely first)."""
        outs = self._run(prompts_ids, max_tokens=1, logprobs=k)
        result: list[list[str] | None] = []
        for o in outs:
            try:
                first = o.outputs[0].logprobs[0]
            except (IndexError, TypeError):
                result.append(None)
                continue
            ranked = sorted(first.items(), key=lambda kv: -kv[1].logprob)[:k]
            result.append([self.tokenizer.decode([tid]) for tid, _ in ranked])
        return result
