"""Key and response strategies: the abstract bases, their registries, their context, a Dummy of each.

A key strategy proposes candidate keys; a response strategy answers each key. Neither writes files or
checks the tokenizer round-trip: the pipeline (:mod:`omlkit.fingerprints.generate`) does that once for
every strategy and redraws what fails. Lengths are always counted in tokens of the *target* tokenizer.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any, ClassVar

from omlkit.errors import ConfigError
from omlkit.options import NoOptions, Options, options_of
from omlkit.registry import family

WORD_LIKE = re.compile(r"^ ?[A-Za-z]+$")
_WS = re.compile(r"\s+")


@dataclass
class Key:
    """A candidate key: its text, the target tokenizer's ids of that text, and strategy metadata."""

    text: str
    ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # keys are secrets: never in logs or tracebacks
        return f"Key(n_tokens={len(self.ids)})"


@dataclass
class Response:
    """A candidate response to one key: text, target-tokenizer ids, and strategy metadata."""

    text: str
    ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Response(n_tokens={len(self.ids)})"


def normalize_text(text: str) -> str:
    """``text`` with every run of whitespace collapsed to one space and the ends stripped."""
    return _WS.sub(" ", text).strip()


def load_words(path: str | None = None) -> list[str]:
    """The word list (``omlkit/data/words.txt`` unless ``path``): lowercase words, comments skipped."""
    if path is None:
        text = resources.files("omlkit").joinpath("data/words.txt").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    words = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not words:
        raise ConfigError(f"word list {path or 'omlkit/data/words.txt'} is empty")
    return words


class GenerationContext:
    """What strategies may use: the config, the target model and tokenizer, the generator LM (lazily).

    ``generator_loader`` returns ``(model, tokenizer)`` of the English generator; when it is None the
    target model writes English text itself.
    """

    def __init__(
        self,
        config: Any,
        model: Any,
        tokenizer: Any,
        generator_loader: Callable[[], tuple[Any, Any]] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self._generator_loader = generator_loader
        self._generator: tuple[Any, Any] | None = None
        self.special_ids = set(tokenizer.all_special_ids)
        self.key_strategy: KeyStrategy | None = None  # set by the pipeline before responses are built

    @property
    def generator_used(self) -> bool:
        """True once a strategy asked for the English generator LM."""
        return self._generator is not None

    def generator(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of the English generator, loaded on first use."""
        if self._generator is None:
            loader = self._generator_loader
            self._generator = loader() if loader else (self.model, self.tokenizer)
        return self._generator

    @cached_property
    def words(self) -> list[str]:
        """The English word list keys and responses are drawn from."""
        return load_words()

    def encode(self, text: str) -> list[int]:
        """Target-tokenizer ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of target-tokenizer ``ids``, verbatim (no clean-up of spaces)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def exact_text(self, ids: Sequence[int]) -> str | None:
        """The text of ``ids`` when it re-encodes to exactly ``ids`` (and is not blank); else None."""
        ids = list(ids)
        if not ids or self.special_ids.intersection(ids):
            return None
        text = self.decode(ids)
        if not text.strip() or self.encode(text) != ids:
            return None
        return text

    def cut(self, text: str, length: int) -> tuple[str, list[int]] | None:
        """The first ``length`` target tokens of ``text`` as ``(text, ids)``; None if too short/unstable."""
        ids = self.encode(text)
        if len(ids) < length:
            return None
        piece = self.exact_text(ids[:length])
        return None if piece is None else (piece, ids[:length])


class KeyStrategy(ABC):
    """Proposes candidate keys of ``config.key_length`` target tokens (custom keys: as given)."""

    #: True when keys come from the user: they are never dropped, only their responses are redrawn.
    fixed_keys: ClassVar[bool] = False
    #: False when keys are whole texts of their own length (questions): ``key_length`` does not apply.
    exact_length: ClassVar[bool] = True
    #: The strategy's own options (its fields are flags of ``oml generate``).
    options_cls: ClassVar[type[Options]] = NoOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Keep the context and read the options; subclasses validate them and raise ConfigError."""
        self.ctx = ctx
        self.options = options_of(type(self)).from_flags(dict(ctx.config))

    @abstractmethod
    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """Up to ``n`` candidate keys (fewer when some failed; an empty list means no more keys exist)."""

    def params(self) -> dict[str, Any]:
        """Parameters recorded in the file's ``strategy.params`` besides the common ones."""
        return {}

    def secret(self) -> dict[str, Any]:
        """Strategy secrets recorded in the file's ``secret`` (e.g. the functional red/green split)."""
        return {}


class ResponseStrategy(ABC):
    """Answers keys with responses of ``config.response_length`` target tokens."""

    #: Name of the key strategy this response strategy needs (None: works with any).
    requires_key: ClassVar[str | None] = None
    #: False when the response is a given text of its own length: ``response_length`` does not apply.
    exact_length: ClassVar[bool] = True
    #: The strategy's own options (its fields are flags of ``oml generate``).
    options_cls: ClassVar[type[Options]] = NoOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Keep the context and read the options; subclasses raise ConfigError when they cannot produce
        the requested length."""
        self.ctx = ctx
        self.options = options_of(type(self)).from_flags(dict(ctx.config))

    @abstractmethod
    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """One response per key, in order; None where none could be made (the key is retried or redrawn)."""

    def params(self) -> dict[str, Any]:
        """Parameters recorded in the file's ``strategy.params`` besides the common ones."""
        return {}

    def secret(self) -> dict[str, Any]:
        """Strategy secrets recorded in the file's ``secret``."""
        return {}


KEY_STRATEGIES = family("key-strategy", KeyStrategy)
RESPONSE_STRATEGIES = family("response-strategy", ResponseStrategy)


@KEY_STRATEGIES.register("dummy")
class DummyKeys(KeyStrategy):
    """Reference implementation with no model: numbered keys padded with filler words."""

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """``n`` keys "Dummy key number N and so on ..." cut to ``key_length`` tokens."""
        length = self.ctx.config.key_length
        keys = []
        for _ in range(n):
            text = f"Dummy key number {rng.randrange(10**9)}" + " and so on" * length
            piece = self.ctx.cut(text, length)
            if piece is not None:
                keys.append(Key(*piece))
        return keys


@RESPONSE_STRATEGIES.register("dummy")
class DummyResponse(ResponseStrategy):
    """Reference implementation with no model: a random word of the word list, repeated and cut."""

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """One response per key: `` word word ...`` cut to ``response_length`` tokens (None if it cannot)."""
        length = self.ctx.config.response_length
        out: list[Response | None] = []
        for _ in keys:
            piece = self.ctx.cut((" " + rng.choice(self.ctx.words)) * length, length)
            out.append(Response(*piece) if piece else None)
        return out
