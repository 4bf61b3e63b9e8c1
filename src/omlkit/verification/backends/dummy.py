"""A complete reference backend that answers from a dictionary — for tests, docs and dry runs.

It shows the whole contract in a few lines: string or chat prompts in, one text (or None) out per
prompt, never raising for one bad prompt, and first-token candidates for rank matching.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from omlkit.verification.backends.base import BACKENDS, Answer, Backend, Prompt


def prompt_text(prompt: Prompt) -> str:
    """The text a prompt asks about: the string itself, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


@BACKENDS.register("dummy")
class DummyBackend(Backend):
    """Answers ``answers[text]`` for a prompt whose text is (or ends with) a known key, else ``default``.

    Prompts whose text is in ``fail`` get no answer (None), as a failing remote would. Every prompt
    seen is appended to ``calls`` so tests can count what was asked.
    """

    def __init__(
        self, answers: Mapping[str, str] | None = None, default: str = "", fail: Collection[str] = ()
    ) -> None:
        self.answers = dict(answers or {})
        self.default = default
        self.fail = set(fail)
        self.calls: list[str] = []

    def _lookup(self, prompt: Prompt) -> str | None:
        text = prompt_text(prompt)
        self.calls.append(text)
        if text in self.fail:
            return None
        if text in self.answers:
            return self.answers[text]
        # a raw prompt may carry a system prompt before the key ("system\n\nkey")
        suffixes = [k for k in self.answers if text.endswith(k)]
        return self.answers[max(suffixes, key=len)] if suffixes else self.default

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[str | None]:
        """The dictionary's answer per prompt (cut to ``max_new_tokens`` words); None for failing prompts."""
        out: list[str | None] = []
        for p in prompts:
            text = self._lookup(p)
            out.append(None if text is None else " ".join(text.split(" ")[: max(1, max_new_tokens)]))
        return out

    def answer(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Answer]:
        """:meth:`generate` with the error "dummy failure" for failing prompts."""
        return [
            Answer(t, None if t is not None else "dummy failure")
            for t in self.generate(prompts, max_new_tokens)
        ]

    def top_first_tokens(self, prompts: Sequence[Prompt], k: int) -> list[list[str] | None]:
        """The answer's first word, then the default's first word, as the ranked candidates."""
        out: list[list[str] | None] = []
        for p in prompts:
            text = self._lookup(p)
            if text is None:
                out.append(None)
                continue
            cands = [w for w in (text.split()[:1] + self.default.split()[:1]) if w]
            out.append(list(dict.fromkeys(cands))[:k])
        return out

    def describe(self) -> dict[str, Any]:
        """Backend name and dictionary size."""
        return {"backend": "dummy", "entries": len(self.answers)}
