"""Chain & Hash responses (Russinovich & Salem 2024): each answer picked by a keyed hash of its question.

The owner draws 256 candidate answers (``--chain-candidates``; words of ``response_length`` tokens) and
a secret key; the answer to question q is ``candidates[HMAC-SHA256(key, q ‖ candidates) mod 256]``. The
hash chains every pair to the secret and to the whole candidate list, so the owner can later show that
the pairs were made together, before any dispute, and nobody can forge new ones. The key and the
candidates are drawn from the run's seed and stored in the file's ``secret``; :func:`chain_hash_answer`
recomputes any answer.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.errors import ConfigError
from omlkit.fingerprints.strategies.base import (
    RESPONSE_STRATEGIES,
    GenerationContext,
    Key,
    Response,
    ResponseStrategy,
)
from omlkit.fingerprints.strategies.random_word_response import words_of_length
from omlkit.options import Options


class ChainHashOptions(Options):
    """How many candidate answers the hash picks from."""

    chain_candidates: int = Field(
        256, ge=2, description="Chain & Hash: candidate answers (the paper: 256).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


def chain_hash_answer(secret_key: str, question: str, candidates: Sequence[str]) -> str:
    """The candidate a keyed hash of ``question`` and the whole candidate list picks."""
    message = "\n".join([question, *candidates]).encode("utf-8")
    digest = hmac.new(bytes.fromhex(secret_key), message, hashlib.sha256).digest()
    return candidates[int.from_bytes(digest, "big") % len(candidates)]


@RESPONSE_STRATEGIES.register("chain-hash")
class ChainHashResponse(ResponseStrategy):
    """The hash-chosen candidate answer of each key."""

    options_cls = ChainHashOptions

    def __init__(self, ctx: GenerationContext) -> None:
        """Refuses (ConfigError) a ``response_length`` for which the word list has too few words."""
        super().__init__(ctx)
        length, wanted = ctx.config.response_length, self.options.chain_candidates
        words = words_of_length(ctx, length)
        if len(words) < wanted:
            raise ConfigError(
                f"--chain-candidates {wanted}: the word list has only {len(words)} words of "
                f"--response-length {length} tokens in this tokenizer"
            )
        # drawn from the run's seed like every other secret of the set (the file, seed included, is secret)
        draw = random.Random(f"chain-hash/{ctx.config.seed}")
        self.candidates = sorted(draw.sample(words, wanted))
        self.key = draw.randbytes(32).hex()

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """The chained answer of every key (the same key always gets the same answer)."""
        out: list[Response | None] = []
        for key in keys:
            text = chain_hash_answer(self.key, key.text, self.candidates)
            out.append(Response(text, self.ctx.encode(text)))
        return out

    def secret(self) -> dict[str, Any]:
        """The hash key and the candidate answers."""
        return {"chain_hash_key": self.key, "chain_hash_candidates": list(self.candidates)}
