"""Obscure keys (Instructional Fingerprinting, Xu et al. 2024): strings of random characters of mixed
scripts, which no user would type.

IF's keys are deliberately out of distribution so that they never fire by accident; the price is that
a host can filter them (``oml attack perplexity-filter``). Each key is ``key_length`` target tokens cut
from a random run of Latin, Cyrillic, Greek, kana and CJK characters.
"""

from __future__ import annotations

import random

from omlkit.fingerprints.strategies.base import KEY_STRATEGIES, Key, KeyStrategy

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyz"
    "абвгдежзиклмнопрстуфхцчшщыэюя"
    "αβγδεζηθικλμνξοπρστυφχψω"
    "あいうえおかきくけこさしすせそたちつてとなにぬねの"
    "山川田中明葆使顺兹巫布知告咸登在受上从也"
)


@KEY_STRATEGIES.register("obscure")
class ObscureKeys(KeyStrategy):
    """Random mixed-script characters, cut to ``key_length`` target tokens."""

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """Up to ``n`` keys (a draw that does not cut cleanly at ``key_length`` tokens is skipped)."""
        length = self.ctx.config.key_length
        keys = []
        for _ in range(n):
            text = "".join(rng.choice(ALPHABET) for _ in range(4 * length))
            piece = self.ctx.cut(text, length)
            if piece is not None:
                keys.append(Key(*piece))
        return keys
