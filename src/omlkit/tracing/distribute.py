"""``oml distribute``: N fingerprinted copies of one base, one per host, and their manifest.

The pool is assigned at random (:mod:`omlkit.tracing.manifest`); each host's subset is written as its
own fingerprint file and inserted with the same recipe. With ``--core N`` the N fingerprints every host
holds are inserted once into a shared checkpoint, and each copy is a short fine-tune of that checkpoint
on its own subset, so the shared work is done once. The manifest (mode 0600) records which copy holds
which fingerprints; it is what ``oml trace`` needs, and it is a secret like the fingerprint file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omlkit.errors import ConfigError, RunDirError
from omlkit.fingerprints import FingerprintSet
from omlkit.tracing.config import DistributeConfig
from omlkit.tracing.manifest import Manifest

DISTRIBUTE_ONLY = frozenset({"hosts", "rate", "core"})


def host_names(n: int) -> list[str]:
    """``host-0`` … ``host-{n-1}``, zero-padded so they sort."""
    width = len(str(n - 1))
    return [f"host-{i:0{width}d}" for i in range(n)]


def _insert(cfg: DistributeConfig, model: str, fps: Path, run_id: str) -> Path:
    from omlkit.insertion.api import insert_fingerprints
    from omlkit.insertion.config import InsertConfig

    fields = cfg.model_dump(exclude=DISTRIBUTE_ONLY | {"model", "fingerprints", "out_dir", "run_id"})
    run = insert_fingerprints(
        InsertConfig(**fields, model=model, fingerprints=fps, out_dir=cfg.out_dir / "runs", run_id=run_id)
    )
    return run / "model"


def distribute(
    cfg: DistributeConfig, say: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Assign, insert the shared core (if any) and every host's copy; returns ``(manifest path, timing)``.

    The assignment is drawn from ``--seed`` (the insertion seed too). Refuses an existing manifest in
    ``--out-dir`` unless ``--force`` (copies already trained resume as insertion runs do), and an
    assignment that leaves a host without a pool fingerprint (it could never be traced).
    """
    say = say or (lambda _msg: None)
    path = cfg.out_dir / "manifest.json"
    if path.exists() and not cfg.force:
        raise RunDirError(f"{path} already exists (pass --force to redo the distribution)")
    pool = FingerprintSet.load(cfg.fingerprints)
    manifest = Manifest.build(pool, host_names(cfg.hosts), cfg.rate, cfg.seed, cfg.core)
    empty = [h.host for h in manifest.hosts if not h.ids]
    if empty:
        raise ConfigError(
            f"{empty[0]} drew no fingerprint of the {len(manifest.pool)}-key pool: "
            "use a larger pool or --rate"
        )
    by_id = {fp.id: fp for fp in pool.fingerprints}
    subsets = cfg.out_dir / "subsets"

    def subset(name: str, ids: list[int]) -> Path:
        fps = pool.model_copy(update={"fingerprints": [by_id[i] for i in ids]})
        return fps.save(subsets / f"{name}.json", overwrite=True)

    timing: dict[str, Any] = {"hosts": {}}
    start = time.time()
    base = cfg.model
    if manifest.core:
        say(f"shared checkpoint: {len(manifest.core)} core fingerprints")
        base = str(_insert(cfg, cfg.model, subset("core", manifest.core), "core"))
        timing["core_seconds"] = round(time.time() - start, 1)
    for host in manifest.hosts:
        t0 = time.time()
        say(f"{host.host}: {len(host.ids)} fingerprints")
        host.model = str(_insert(cfg, base, subset(host.host, manifest.core + host.ids), host.host))
        timing["hosts"][host.host] = round(time.time() - t0, 1)
    timing["total_seconds"] = round(time.time() - start, 1)
    return manifest.save(path, overwrite=True), timing
