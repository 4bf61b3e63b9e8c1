"""English responses: ``response_length`` tokens at a random offset of a second, independent English text.

The generator LM writes a fresh sentence (from its own drawn word) for every key; the response is a
window of that sentence that starts at a word boundary, so it reads like English and tokenizes the
same after any key.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from omlkit.fingerprints.strategies.base import RESPONSE_STRATEGIES, Key, Response, ResponseStrategy
from omlkit.fingerprints.strategies.english_keys import EnglishOptions, generate_sentences, token_budget

#: Extra target tokens generated beyond the response, the room the random offset moves in.
OFFSET_ROOM = 12


@RESPONSE_STRATEGIES.register("english")
class EnglishResponse(ResponseStrategy):
    """A random word-aligned window of an independently generated English sentence."""

    options_cls = EnglishOptions

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """One response per key; None where the sentence was too short or the window does not round-trip."""
        ctx = self.ctx
        length = ctx.config.response_length
        words = [rng.choice(ctx.words) for _ in keys]
        texts = generate_sentences(
            ctx, words, rng, token_budget(ctx, length + OFFSET_ROOM), temperature=self.options.temperature
        )
        out: list[Response | None] = []
        for text in texts:
            ids = ctx.encode(text)
            starts = [o for o in range(1, len(ids) - length + 1) if ctx.decode(ids[o : o + 1])[:1] == " "]
            if not starts:
                out.append(None)
                continue
            offset = rng.choice(starts)
            window = ids[offset : offset + length]
            piece = ctx.exact_text(window)
            out.append(Response(piece, window) if piece is not None else None)
        return out

    def params(self) -> dict:
        """The generator's sampling temperature."""
        return {"temperature": self.options.temperature}
