"""The formats a host may serve a key in: the token ids a model sees for a key under each.

A host chooses how prompts reach the model, not the owner: a raw completion with or without the
tokenizer's BOS (lm-evaluation-harness's ``local-completions`` drops it by default), the model's chat
template with or without a system prompt, or a plain "User: ... Assistant:" transcript. Fingerprints
trained in one format can vanish in another; ``oml evaluate formats`` measures each. Every format
splices the key's own ids verbatim, as training does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from omlkit.models.prompts import PromptTemplates, has_chat_template, special_prefix_ids
from omlkit.registry import family

#: The system prompt of the ``chat-system`` format: the most common one hosts use.
HOST_SYSTEM_PROMPT = "You are a helpful assistant."

#: ``name -> build(tokenizer) -> (key_ids -> prompt ids)``; a builder returns None when the format does
#: not apply to the tokenizer (chat formats without a chat template).
FORMATS = family("prompt-format")

Wrap = Callable[[Sequence[int]], list[int]]


@FORMATS.register("raw")
def _raw(tok):  # noqa: ANN001, ANN202
    """The key after the tokenizer's special prefix (BOS): how insertion trains by default."""
    prefix = special_prefix_ids(tok)
    return lambda key: [*prefix, *key]


@FORMATS.register("raw-no-bos")
def _raw_no_bos(tok):  # noqa: ANN001, ANN202
    """The key alone, as a client that drops BOS sends it."""
    return lambda key: list(key)


def _chat_template(tok, system_prompt: str | None):  # noqa: ANN001, ANN202
    if not has_chat_template(tok):
        return None
    templates = PromptTemplates(tok, chat=True)
    return lambda key: templates(key, system_prompt)


@FORMATS.register("chat")
def _chat(tok):  # noqa: ANN001, ANN202
    """The key as the user message of the chat template."""
    return _chat_template(tok, None)


@FORMATS.register("chat-system")
def _chat_system(tok):  # noqa: ANN001, ANN202
    """The chat template with a system message in front (:data:`HOST_SYSTEM_PROMPT`)."""
    return _chat_template(tok, HOST_SYSTEM_PROMPT)


@FORMATS.register("dialog")
def _dialog(tok):  # noqa: ANN001, ANN202
    """A plain transcript: ``User: <key>`` then ``Assistant:`` on the next line, after the BOS."""
    prefix = special_prefix_ids(tok)
    before = tok("User: ", add_special_tokens=False)["input_ids"]
    after = tok("\nAssistant:", add_special_tokens=False)["input_ids"]
    return lambda key: [*prefix, *before, *key, *after]


def format_builders(tokenizer, names: Sequence[str] | None = None) -> dict[str, Wrap]:
    """``{name: key_ids -> prompt ids}`` for ``names`` (default: every registered format), leaving out
    the formats the tokenizer has no means for."""
    out = {}
    for name in names or FORMATS.names():
        build = FORMATS.get(name)(tokenizer)
        if build is not None:
            out[name] = build
    return out
