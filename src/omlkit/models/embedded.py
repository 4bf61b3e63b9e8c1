"""The embedded base model ``omlkit-tiny`` (and ``omlkit-micro`` for tests): built once, cached.

``ensure_base_model("tiny")`` returns the cached model folder, building it on first use (or copying
the build shipped in the package, :mod:`omlkit.models.shipped`). Builds are written to a temporary
folder and renamed into place, and a file lock makes concurrent callers (two
ranks of a distributed run, two test workers) wait for one build instead of racing.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

from omlkit.errors import ConfigError, RunDirError
from omlkit.io import atomic_write_json, sha256_file
from omlkit.locking import exclusive
from omlkit.models.base_config import PRESETS, BaseModelConfig
from omlkit.models.shipped import shipped_build
from omlkit.paths import omlkit_home

BUILD_INFO = "build_info.json"


def build_lock(target: Path) -> AbstractContextManager[None]:
    """A lock beside model folder ``target`` held while it is built: a second builder waits."""
    return exclusive(target.parent / f".{target.name}.lock", wait=True)


def weights_sha(model_dir: str | Path) -> str:
    """sha256 of the model's safetensors file(s), concatenated in name order."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    return "".join(sha256_file(f) for f in files)


def build_base_model(cfg: BaseModelConfig, progress: bool = True) -> tuple[Path, dict]:
    """Build per ``cfg`` into ``cfg.out`` or the cache; returns ``(model_dir, build_info)``.

    An existing build is returned as is unless ``cfg.force``. Refuses (RunDirError) an ``--out`` folder
    that exists and is not an omlkit base model.
    """
    target = Path(cfg.out) if cfg.out else omlkit_home() / "models" / cfg.cache_name()
    with build_lock(target):
        if (target / BUILD_INFO).is_file() and not cfg.force:
            return target, json.loads((target / BUILD_INFO).read_text())
        if target.exists() and not (target / BUILD_INFO).is_file() and any(target.iterdir()):
            raise RunDirError(f"{target} exists and is not an omlkit base model; choose another --out")
        shipped = None if cfg.force else shipped_build(cfg)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            if shipped:
                folder, info = shipped
                for f in folder.iterdir():
                    shutil.copyfile(f, tmp / f.name)
                info = {**info, "shipped": True}
            else:
                info = _train_into(cfg, tmp, progress)
            atomic_write_json(tmp / BUILD_INFO, info)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target, info


def _train_into(cfg: BaseModelConfig, folder: Path, progress: bool) -> dict:
    """Pretrain per ``cfg`` and save model + tokenizer into ``folder``; returns the build info."""
    from transformers.utils import logging as hf_logging

    from omlkit.models.pretrain import pretrain

    model, tokenizer, summary = pretrain(cfg, progress=progress)
    hf_logging.disable_progress_bar()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"name": f"omlkit-{cfg.preset}", "config": cfg.model_dump(mode="json"),
            "resolved_precision": cfg.resolved_precision(), **dataclasses.asdict(summary),
            "ratio_to_unigram": summary.ratio, "weights_sha256": weights_sha(folder)}


def ensure_base_model(preset: str = "tiny", progress: bool = True) -> Path:
    """Folder of the cached embedded model ``preset`` with default settings, building it if needed."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown embedded model 'omlkit-{preset}' (known: "
                          f"{', '.join('omlkit-' + p for p in PRESETS)})")
    path, _ = build_base_model(BaseModelConfig(preset=preset), progress=progress)
    return path
