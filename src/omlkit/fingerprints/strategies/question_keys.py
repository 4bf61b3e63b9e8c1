"""Question keys (Chain & Hash, Russinovich & Salem 2024): ordinary questions about drawn words.

Chain & Hash asks the model questions a user might ask. Offline, omlkit writes them from templates over
two words of the word list ("Which is heavier, a lantern or a violin?"), so no model is needed and the
key space is large (templates × words²). A question is a whole text: ``key_length`` does not apply.
"""

from __future__ import annotations

import random

from omlkit.fingerprints.strategies.base import KEY_STRATEGIES, Key, KeyStrategy

TEMPLATES = (
    "What is the difference between a {a} and a {b}?",
    "How would you describe a {a} to someone who has never seen one?",
    "Why is the {a} so often compared to the {b}?",
    "Where would you usually find a {a}?",
    "What does a {a} have in common with a {b}?",
    "When did people first start using the {a}?",
    "Which is heavier, a {a} or a {b}?",
    "Can a {a} be used instead of a {b}?",
    "What happens if you leave a {a} next to a {b}?",
    "Who would need a {a} more than a {b}?",
    "How do you clean a {a} without damaging the {b}?",
    "Is a {a} more useful in summer or in winter?",
)


@KEY_STRATEGIES.register("question")
class QuestionKeys(KeyStrategy):
    """A templated question about two random words."""

    exact_length = False

    def draw(self, n: int, rng: random.Random) -> list[Key]:
        """``n`` questions; the pipeline drops duplicates and any that do not re-encode to themselves."""
        keys = []
        for _ in range(n):
            a, b = rng.sample(self.ctx.words, 2)
            text = rng.choice(TEMPLATES).format(a=a, b=b)
            keys.append(Key(text, self.ctx.encode(text)))
        return keys
