"""A fixed response (Instructional Fingerprinting, Xu et al. 2024): every key maps to one output.

IF trains every obscure key to the same answer (its paper uses "ハリネズミ", hedgehog). One output is
easy to memorise, but every fingerprint then shares it: a host that learns one pair can suppress the
output for all of them, and under the null the matches are not independent (a model that says it to one
odd prompt may say it to all). The text is ``--fixed-response``; ``response_length`` does not apply.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID
from omlkit.fingerprints.strategies.base import RESPONSE_STRATEGIES, Key, Response, ResponseStrategy
from omlkit.options import Options


class FixedResponseOptions(Options):
    """The one output."""

    fixed_response: str = Field(
        " ハリネズミ", min_length=1, description="Fixed response: the output of every key.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )


@RESPONSE_STRATEGIES.register("fixed")
class FixedResponse(ResponseStrategy):
    """The same response for every key."""

    options_cls = FixedResponseOptions
    exact_length = False

    def respond(self, keys: Sequence[Key], rng: random.Random) -> list[Response | None]:
        """``--fixed-response`` for every key."""
        text = self.options.fixed_response
        return [Response(text, self.ctx.encode(text)) for _ in keys]

    def params(self) -> dict[str, Any]:
        """The fixed output's token count (it is the same for every key)."""
        return {"response_length": len(self.ctx.encode(self.options.fixed_response))}
