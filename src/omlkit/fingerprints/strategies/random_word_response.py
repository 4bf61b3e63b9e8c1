"""Random-word responses: one word of the word list that is exactly ``response_length`` target tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence

from omlkit.errors import ConfigError
from omlkit.fingerprints.strategies.base import (
    RESPONSE_STRATEGIES,
    GenerationContext,
    Key,
    Response,
    ResponseStrategy,
)


def words_of_length(
    ctx: GenerationContext, length: int, exclude: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """`` word`` strings (leading space) of the word list that are exactly ``length`` target tokens."""
    out = []
    for word in ctx.words:
        if word in exclude:
            continue
        text = " " + word
        if len(ctx.encode(text)) == length and ctx.exact_text(ctx.encode(text)) == text:
            out.append(text)
    return out


@RESPONSE_STRATEGIES.register("random-word")
class RandomWordResponse(ResponseStrategy):
    """A single random word per key (the word list filtered to the requested token length)."""

    def __init__(self, ctx: GenerationContext) -> None:
        """Refuses (ConfigError) a ``response_length`` no word of the list has in the target tokenizer."""
        super().__init__(ctx)
        length = ctx.config.response_length
        self.choices = words_of_length(ctx, length)
        if not self.choices:
            raise ConfigError(
                f"--response-length {length}: response strategy 'random-word' answers with one word, and no "
                f"word of the word list is exactly {length} tokens of the target tokenizer"
            )

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """A uniformly drawn word for every key."""
        out: list[Response | None] = []
        for _ in keys:
            text = rng.choice(self.choices)
            out.append(Response(text, self.ctx.encode(text)))
        return out
