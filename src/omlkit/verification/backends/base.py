"""The backend interface: something that answers prompts by greedy decoding.

A backend takes a batch of prompts and returns one text per prompt, ``None`` where that prompt failed;
one bad prompt never aborts the batch. A prompt is a string (sent as a raw completion) or a chat
message list (``[{"role": ..., "content": ...}, ...]``) for backends that speak chat.

Backends that own a tokenizer (local models) also take token ids directly (:class:`TokenBackend`), so
verification can feed exactly the key tokens the fingerprint was trained on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from omlkit.errors import ConfigError
from omlkit.options import NoOptions, Options
from omlkit.registry import family

#: A chat conversation as OpenAI-style messages.
Messages = list[dict[str, str]]
#: What a backend answers: raw text, or a conversation for chat backends.
Prompt = str | Messages


@dataclass(frozen=True)
class Answer:
    """One prompt's outcome: the generated ``text``, or ``None`` and a one-line ``error``."""

    text: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the prompt was answered."""
        return self.text is not None


class Backend(ABC):
    """Answers prompts greedily (temperature 0). Subclasses implement :meth:`generate`; the rest is optional.

    Usable as a context manager; :meth:`close` releases what the backend holds.
    """

    #: The tokenizer the answers come from, when the backend knows it (local models); else None.
    tokenizer: Any = None

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str | None]:
        """One greedy continuation per prompt (at most ``max_new_tokens`` tokens); None where it failed."""

    def answer(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Answer]:
        """Like :meth:`generate` but with a reason for each failure; backends that know why override it."""
        texts = self.generate(prompts, max_new_tokens)
        return [Answer(t, None if t is not None else "backend returned no answer") for t in texts]

    def top_first_tokens(self, prompts: Sequence[Prompt], k: int) -> list[list[str] | None]:
        """The ``k`` most likely first tokens of each answer, as text, most likely first; None on failure.

        Used by first-token-rank matching. Refuses (ConfigError) on backends without access to logits.
        """
        raise ConfigError(
            f"backend {type(self).__name__} cannot rank first tokens; use --match exact or prefix"
        )

    #: The backend's own options (its fields are flags of ``oml verify``).
    options_cls: ClassVar[type[Options]] = NoOptions

    @classmethod
    def from_config(cls, cfg: Any, options: Any) -> Backend:
        """The backend ``oml verify`` asks for (a ``VerifyConfig`` and this backend's options from it);
        refuses those the CLI cannot build."""
        raise ConfigError(f"backend {cls.__name__} cannot be used from the command line")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (no secrets) recorded in verification summaries."""
        return {"backend": type(self).__name__}

    def close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing to release)
        """Release resources (connections, GPU memory). Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenBackend(Backend):
    """A backend that owns its tokenizer and can take prompts as token ids (token-exact verification)."""

    @abstractmethod
    def generate_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str | None]:
        """Greedy continuation of each token-id prompt, decoded without special tokens; None on failure."""

    def answer_ids(self, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[Answer]:
        """Like :meth:`generate_ids` with a reason per failure; backends that know why override it."""
        texts = self.generate_ids(prompts_ids, max_new_tokens)
        return [Answer(t, None if t is not None else "backend returned no answer") for t in texts]

    @abstractmethod
    def top_first_tokens_ids(self, prompts_ids: Sequence[Sequence[int]], k: int) -> list[list[str] | None]:
        """Top-``k`` first tokens (decoded, most likely first) after each token-id prompt."""

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: raw text with the tokenizer's special prefix, or the chat template."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        ids = self.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str | None]:
        """Tokenize each prompt with :meth:`encode`, then :meth:`generate_ids`."""
        return self.generate_ids([self.encode(p) for p in prompts], max_new_tokens)

    def top_first_tokens(self, prompts: Sequence[Prompt], k: int) -> list[list[str] | None]:
        """Tokenize each prompt with :meth:`encode`, then :meth:`top_first_tokens_ids`."""
        return self.top_first_tokens_ids([self.encode(p) for p in prompts], k)


#: Every backend, by name (``transformers``, ``http``, ``vllm``, ``dummy``).
BACKENDS = family("backend", Backend)
