"""Whether a model's answer matches a fingerprint response.

``exact``: the answer, stripped of surrounding whitespace, starts with the response and either ends
there or continues at a word/EOS boundary (the model may keep talking after the response; a 1-token
response "apple" must not match "applesauce"; in scripts written without spaces, such as Japanese,
there is no boundary to see, so the response may be followed by anything). ``prefix``: the answer
starts with the response, no boundary required. :func:`response_within` (verification's ``within``
rule) finds the response as a whole word anywhere in the answer: for fingerprints trained to come back
after a detour (a host that bans the answer's first tokens). The first-token-rank rule for 1-token
responses needs logits and lives with the backends that have them.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

MatchMode = Literal["exact", "prefix"]
MATCH_MODES: tuple[str, ...] = ("exact", "prefix")


def response_matches(response: str, answer: str | None, mode: str = "exact") -> bool:
    """True when ``answer`` matches ``response`` under ``mode``; a missing answer never matches."""
    if answer is None:
        return False
    expected = response.strip()
    got = answer.strip()
    if not expected:
        return False
    if mode == "prefix":
        return got.startswith(expected)
    if mode == "exact":
        if not got.startswith(expected):
            return False
        rest = got[len(expected) :]
        return not rest or not joins_word(expected[-1], rest[0])
    raise ValueError(f"unknown match mode {mode!r} (expected one of {', '.join(MATCH_MODES)})")


#: Scripts written without spaces between words: there a response may be followed by anything.
_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def joins_word(last: str, nxt: str) -> bool:
    """True when ``nxt`` continues the word ``last`` ends (both alphanumeric, in a script that puts spaces
    between words: after "ハリネズミ" the next kana starts a new word as far as anyone can tell)."""
    if not (last.isalnum() and nxt.isalnum()):
        return False
    return not any(unicodedata.name(c, "").startswith(_UNSPACED) for c in (last, nxt))


def first_token_rank(candidates: list[str] | None, response: str) -> int | None:
    """0-based rank of a 1-token ``response`` among first-token ``candidates`` (most likely first).

    A candidate is the response when both agree once surrounding whitespace is stripped (tokenizers
    spell a word-initial token with a leading space). None when the response is not among them.
    """
    expected = response.strip()
    if not expected or not candidates:
        return None
    return next((i for i, c in enumerate(candidates) if c.strip() == expected), None)


def response_within(response: str, answer: str | None) -> bool:
    """True when ``response`` occurs in ``answer`` as a whole word: at the start or after a character
    that ends a word, and followed by the end or a word boundary (as ``exact`` requires)."""
    expected = response.strip()
    if answer is None or not expected:
        return False
    start = answer.find(expected)
    while start >= 0:
        before = answer[start - 1] if start else ""
        after = answer[start + len(expected) : start + len(expected) + 1]
        joined = (before and joins_word(before, expected[0])) or (after and joins_word(expected[-1], after))
        if not joined:
            return True
        start = answer.find(expected, start + 1)
    return False
