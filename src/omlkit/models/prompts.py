"""Render a prompt raw or through the tokenizer's chat template, with an optional system prompt.

Fingerprints are trained and checked on token ids, so :func:`prompt_ids` splices the key's own token
ids into the rendered template instead of re-tokenizing the whole string: a system prompt can never
change how the key itself is tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence

_SLOT = "\u2063OMLKEY\u2063"


def has_chat_template(tokenizer) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, text: str, system_prompt: str | None = None, chat: bool = False) -> str:
    """The prompt string for ``text``.

    Raw mode: ``system_prompt`` and ``text`` separated by a blank line (just ``text`` when there is no
    system prompt). Chat mode: the tokenizer's chat template with a system message (when given), the
    user message, and the generation prompt. Raises ValueError in chat mode without a template.
    """
    if not chat:
        return f"{system_prompt}\n\n{text}" if system_prompt else text
    if not has_chat_template(tokenizer):
        raise ValueError("this tokenizer has no chat template; use raw prompts")
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def special_prefix_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts before any text by default (e.g. ``[bos]``); empty for none."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return list(ids)


def prompt_ids(
    tokenizer, key_ids: Sequence[int], system_prompt: str | None = None, chat: bool = False
) -> list[int]:
    """Token ids of the prompt for a key given as ids: special prefix + rendered text around the key.

    The key's ids appear verbatim at the end (raw) or inside the template (chat), so training and
    verification see exactly the same key tokens whatever system prompt wraps them.
    """
    rendered = render_prompt(tokenizer, _SLOT, system_prompt=system_prompt, chat=chat)
    before, after = rendered.split(_SLOT)
    prefix = special_prefix_ids(tokenizer)
    before_ids = tokenizer(before, add_special_tokens=False)["input_ids"] if before else []
    after_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if chat and prefix and before_ids[: len(prefix)] == prefix:
        prefix = []  # the template already starts with the special prefix
    return [*prefix, *before_ids, *key_ids, *after_ids]


_KEY_ID = -1  # stands for the key's ids while the prompt is rendered around it


class PromptTemplates:
    """The prompt ids around a key, rendered once per system prompt and cached, so that wrapping a key
    is a list splice. Training and verification both wrap keys through this class: token for token the
    same prompt, whatever system prompt or chat template wraps it."""

    def __init__(self, tokenizer, chat: bool = False) -> None:
        self.tokenizer = tokenizer
        self.chat = chat
        self._cache: dict[str | None, tuple[list[int], list[int]]] = {}

    def __call__(self, key_ids: Sequence[int], system_prompt: str | None = None) -> list[int]:
        """Prompt ids for ``key_ids`` under ``system_prompt`` (identical to :func:`prompt_ids`).

        Raises ValueError in chat mode when the tokenizer has no chat template.
        """
        if system_prompt not in self._cache:
            ids = prompt_ids(self.tokenizer, [_KEY_ID], system_prompt=system_prompt, chat=self.chat)
            at = ids.index(_KEY_ID)
            self._cache[system_prompt] = (ids[:at], ids[at + 1 :])
        before, after = self._cache[system_prompt]
        return [*before, *key_ids, *after]
