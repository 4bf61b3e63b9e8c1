"""Key and response strategies; importing this package registers every one of them.

``KEY_STRATEGIES`` (family ``key-strategy``) and ``RESPONSE_STRATEGIES`` (family ``response-strategy``)
are the only tables of names: each strategy registers itself in its own module, imported below.
"""

from omlkit.fingerprints.strategies import (  # noqa: F401  (imported to register)
    chain_hash,
    custom_keys,
    english_keys,
    english_response,
    fixed_response,
    functional,
    obscure_keys,
    perinucleus,
    question_keys,
    random_word_keys,
    random_word_response,
)
from omlkit.fingerprints.strategies.base import (
    KEY_STRATEGIES,
    RESPONSE_STRATEGIES,
    GenerationContext,
    Key,
    KeyStrategy,
    Response,
    ResponseStrategy,
)

__all__ = [
    "KEY_STRATEGIES",
    "RESPONSE_STRATEGIES",
    "GenerationContext",
    "Key",
    "KeyStrategy",
    "Response",
    "ResponseStrategy",
]
