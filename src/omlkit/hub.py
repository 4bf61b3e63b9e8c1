"""Is the Hugging Face Hub reachable? Asked once, quickly, before any hub download is attempted.

Without this, an offline ``from_pretrained("org/name")`` spends most of a minute in retries before
failing; with it, the user gets a one-line answer at once.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


def offline_requested() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE``): caches only, no probe."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is requested or the hub endpoint (``HF_ENDPOINT``) cannot be connected to."""
    if offline_requested():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def quiet_transformers() -> None:
    """Silence transformers' per-call progress bars and advisory warnings (omlkit draws its own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
