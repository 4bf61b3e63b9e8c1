"""Prebuilt embedded models shipped inside the package (``omlkit/data/models/omlkit-<preset>/``).

Training ``omlkit-tiny`` from scratch takes about 7 minutes on two CPU cores with native bf16 and 22
on two without, where it trains in fp32. The package ships the weights of one build, so a fresh
machine starts at once and every machine starts from the same model. A shipped build stands in for
the default settings of its preset only: same seed, stdlib corpus, preset steps, and precision
``auto`` or the one it was built in. ``oml base-model build --force`` trains one anew.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
#: The config fields that must equal the shipped build's for it to stand in (precision is checked apart).
MATCHED_FIELDS = ("preset", "seed", "corpus", "dataset", "text_field", "steps")

log = logging.getLogger(__name__)
_VERIFIED: dict[tuple, bool] = {}


def shipped_build(cfg: Any) -> tuple[Path, dict[str, Any]] | None:
    """``(folder, build_info)`` of the shipped build that ``cfg`` (a BaseModelConfig) asks for, or None.

    None as well when the shipped weights do not hash to the recorded sha256 (a truncated checkout, a
    Git LFS pointer): the caller then trains, and a warning says why.
    """
    from omlkit.io import sha256_file

    folder = SHIPPED_DIR / f"omlkit-{cfg.preset}"
    info_path = folder / "build_info.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    recorded = info.get("config", {})
    if any(getattr(cfg, f) != recorded.get(f) for f in MATCHED_FIELDS):
        return None
    if cfg.precision not in ("auto", info.get("resolved_precision")):
        return None
    files = sorted(folder.glob("*.safetensors"))
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _VERIFIED:  # hash the 21 MB once per process, not on every model lookup
        _VERIFIED[key] = bool(files) and "".join(sha256_file(f) for f in files) == info.get("weights_sha256")
    if not _VERIFIED[key]:
        log.warning("shipped weights in %s do not match their recorded sha256; training instead", folder)
        return None
    return folder, info
