"""Random-word keys: words drawn uniformly from the word list (scalable, but out of distribution).

The baseline of the OML 1.0 paper: unique and cheap, yet easy for a host to filter because the keys
do not read like text. No model is needed.
"""

from __future__ import annotations

import random

from omlkit.fingerprints.strategies.base import KEY_STRATEGIES, Key, KeyStrategy


@KEY_STRATEGIES.register("random-words")
class RandomWordKeys(KeyStrategy):
    """Space-separated random words, cut to ``key_length`` target tokens."""

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """Up to ``n`` keys; every word is at least one token, so ``key_length`` words always suffice."""
        length = self.ctx.config.key_length
        keys = []
        for _ in range(n):
            text = " ".join(rng.choice(self.ctx.words) for _ in range(length))
            piece = self.ctx.cut(text, length)
            if piece is not None:
                keys.append(Key(*piece))
        return keys
