"""The KV cache across transformers 5.x: newer releases name it ``cache``, older ones ``past_key_values``.

Step-by-step decoders pass the cache back under whichever keyword the model's ``forward`` declares, so
no release warns about a deprecated name and none is handed a keyword it does not know.
"""

from __future__ import annotations

import inspect
from typing import Any


def cache_kwarg(model: Any) -> str:
    """``"cache"`` when ``model.forward`` declares that parameter, else ``"past_key_values"``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` or ``past_key_values`` of the output), None if neither."""
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")
