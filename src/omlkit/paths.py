"""Where omlkit keeps its cache (the embedded base model, benign data)."""

from __future__ import annotations

import os
from pathlib import Path


def omlkit_home() -> Path:
    """``$OMLKIT_HOME`` if set, else ``~/.cache/omlkit``; created on first use."""
    home = Path(os.environ.get("OMLKIT_HOME") or Path.home() / ".cache" / "omlkit").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
