"""Functional fingerprints (whitepaper §4): a secret red/green word split and a rule on the key.

A secret subset of the word list is split into green and red words. Each key is English text from the
generator LM into which ``n_g`` green and ``n_r`` red words are woven (the text is continued after each
inserted word). The response is chosen by a rule on the counts found in the final key — by default one
of two secret response words, by ``n_g > n_r``. The split and the response words are stored in the
set's ``secret``; counts are recounted on the key as written, so the rule always matches the key.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from omlkit.errors import ConfigError
from omlkit.fingerprints.strategies.base import (
    KEY_STRATEGIES,
    RESPONSE_STRATEGIES,
    GenerationContext,
    Key,
    KeyStrategy,
    Response,
    ResponseStrategy,
)
from omlkit.fingerprints.strategies.english_keys import (
    INSTRUCTION,
    EnglishOptions,
    generate_sentences,
    token_budget,
)
from omlkit.fingerprints.strategies.random_word_response import words_of_length

_WORD = re.compile(r"[A-Za-z]+")
RULE = "n_g > n_r"


def count_colors(text: str, green: set[str], red: set[str]) -> tuple[int, int]:
    """``(n_g, n_r)``: occurrences of green and red words among the whole words of ``text`` (any case)."""
    words = [w.lower() for w in _WORD.findall(text)]
    return sum(w in green for w in words), sum(w in red for w in words)


class FunctionalOptions(EnglishOptions):
    """The generator's temperature, the secret word subset and how many of its words each key carries."""

    functional_vocab: int = Field(
        64, ge=2, description="Functional keys: size of the secret word subset split into red and green."
    )
    functional_words: int = Field(
        4, ge=1, description="Functional keys: secret words placed in each key (n_g + n_r)."
    )


def rule(n_g: int, n_r: int) -> bool:
    """The default response rule f(n_g, n_r): True when green words outnumber red ones."""
    return n_g > n_r


@KEY_STRATEGIES.register("functional")
class FunctionalKeys(KeyStrategy):
    """English keys carrying secret green and red words; ``meta`` records the counts ``n_g``, ``n_r``."""

    options_cls = FunctionalOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Draws the secret split from the seed; refuses a subset larger than the word list allows."""
        super().__init__(ctx)
        cfg = self.options
        if cfg.functional_vocab > len(ctx.words) - 2:
            raise ConfigError(
                f"--functional-vocab {cfg.functional_vocab}: the word list has only {len(ctx.words)} words "
                "(two more are needed for responses)"
            )
        rng = random.Random(f"functional-split:{ctx.config.seed}")
        subset = rng.sample(ctx.words, cfg.functional_vocab)
        half = len(subset) // 2
        self.green, self.red = sorted(subset[:half]), sorted(subset[half:])
        if cfg.functional_words > min(len(self.green), len(self.red)):
            raise ConfigError(
                f"--functional-words {cfg.functional_words}: exceeds the "
                f"{min(len(self.green), len(self.red))} "
                "words of each colour; raise --functional-vocab"
            )

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """Up to ``n`` keys of ``key_length`` target tokens, each with ``functional_words`` secret words."""
        ctx, length = self.ctx, self.ctx.config.key_length
        words, temperature = self.options.functional_words, self.options.temperature
        plans = []
        for _ in range(n):
            n_g = rng.randint(0, words)
            chosen = rng.sample(self.green, n_g) + rng.sample(self.red, words - n_g)
            rng.shuffle(chosen)
            plans.append(chosen)
        segment = max(1, (length - 2 * words) // words)
        firsts = [p[0] for p in plans]
        texts = [w[:1].upper() + w[1:] for w in firsts]
        for j in range(1, words):
            texts = generate_sentences(ctx, firsts, rng, segment, prefills=texts, temperature=temperature)
            texts = [f"{t} {p[j]}" for t, p in zip(texts, plans, strict=True)]
        texts = generate_sentences(
            ctx, firsts, rng, token_budget(ctx, length), prefills=texts, temperature=temperature
        )
        green, red = set(self.green), set(self.red)
        keys = []
        for text in texts:
            piece = ctx.cut(text, length)
            if piece is None:
                continue
            n_g, n_r = count_colors(piece[0], green, red)
            keys.append(Key(*piece, meta={"n_g": n_g, "n_r": n_r}))
        return keys

    def params(self) -> dict[str, Any]:
        """Subset size, words per key and the generator settings."""
        opts = self.options
        return {
            "functional_vocab": opts.functional_vocab,
            "functional_words": opts.functional_words,
            "temperature": opts.temperature,
            "prompt": INSTRUCTION,
        }

    def secret(self) -> dict[str, Any]:
        """The red/green split."""
        return {"functional_split": {"green": self.green, "red": self.red}}


@RESPONSE_STRATEGIES.register("functional")
class FunctionalResponse(ResponseStrategy):
    """One of two secret response words, chosen by :func:`rule` on the key's green/red counts."""

    requires_key = "functional"

    def __init__(self, ctx: GenerationContext) -> None:
        """Draws the two response words; refuses a ``response_length`` no two eligible words have."""
        super().__init__(ctx)
        cfg = ctx.config
        split = ctx.key_strategy.secret().get("functional_split", {}) if ctx.key_strategy else {}
        taken = set(split.get("green", [])) | set(split.get("red", []))
        choices = words_of_length(ctx, cfg.response_length, exclude=taken)
        if len(choices) < 2:
            raise ConfigError(
                f"--response-length {cfg.response_length}: response strategy 'functional' needs two words of "
                f"exactly {cfg.response_length} tokens of the target tokenizer; "
                f"the word list has {len(choices)}"
            )
        rng = random.Random(f"functional-responses:{cfg.seed}")
        self.responses = rng.sample(choices, 2)

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """``responses[rule(n_g, n_r)]`` for every key (None for a key without counts)."""
        out: list[Response | None] = []
        for key in keys:
            if "n_g" not in key.meta or "n_r" not in key.meta:
                out.append(None)
                continue
            text = self.responses[int(rule(key.meta["n_g"], key.meta["n_r"]))]
            out.append(Response(text, self.ctx.encode(text)))
        return out

    def params(self) -> dict[str, Any]:
        """The rule's name."""
        return {"rule": RULE}

    def secret(self) -> dict[str, Any]:
        """The two response words: index 0 when the rule is false, 1 when it is true."""
        return {"functional_rule": {"rule": RULE, "responses": list(self.responses)}}
