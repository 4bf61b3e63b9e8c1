"""Tracing a suspect model to the host (or hosts) whose copy it came from, spending few keys.

Keys of the pool are asked in a seeded random order, ``chunk`` at a time. After each chunk, for every
host h: among the m pool keys the suspect matched so far, T_h are held by h. If h is innocent, its
membership bits are independent of everything the suspect's makers did (the assignment is a random
code, :mod:`omlkit.tracing.manifest`), so T_h ~ Binomial(m, rate) and the p-value is P(Bin(m, rate) ≥
T_h), exact whatever the coalition (merged weights, routed queries, token majority). A host is accused
when its p-value is at most α / (N · L) at some look — N hosts, L the most looks the key budget allows
— so by the union bound an innocent host is accused with probability at most α / N and any innocent
host with probability at most α. Tracing stops at the first look that accuses someone: every key not
yet asked stays unspent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omlkit.errors import ConfigError
from omlkit.fingerprints import FingerprintSet
from omlkit.tracing.manifest import Manifest

DEFAULT_ALPHA = 1e-6

#: ``ask(fingerprints) -> matched ids``: how a suspect is queried (a model, an endpoint, a coalition).
Ask = Callable[[list], set[int]]


def binomial_sf(m: int, rate: float, t: int) -> float:
    """P(Binomial(m, rate) ≥ t), exact."""
    if t <= 0:
        return 1.0
    if t > m:
        return 0.0
    return min(1.0, sum(math.comb(m, i) * rate**i * (1 - rate) ** (m - i) for i in range(t, m + 1)))


@dataclass
class TraceResult:
    """Who was accused, with each host's evidence, and what tracing cost."""

    accused: list[str]
    p_values: dict[str, float]
    held_matches: dict[str, int]
    matched: int
    keys_spent: int
    threshold: float
    alpha: float
    looks: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (host names and counts only: no keys)."""
        return {
            "accused": self.accused,
            "p_values": self.p_values,
            "held_matches": self.held_matches,
            "matched": self.matched,
            "keys_spent": self.keys_spent,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "looks": self.looks,
        }


def host_p_values(manifest: Manifest, matched: set[int]) -> tuple[dict[str, float], dict[str, int]]:
    """Per host, the p-value of holding as many of the ``matched`` pool keys as it does, and that count."""
    pool = set(manifest.pool)
    hits = matched & pool
    held = {h: len(hits & ids) for h, ids in manifest.holds().items()}
    return {h: binomial_sf(len(hits), manifest.rate, t) for h, t in held.items()}, held


def trace(
    fp_set: FingerprintSet,
    manifest: Manifest,
    ask: Ask,
    *,
    alpha: float = DEFAULT_ALPHA,
    chunk: int = 16,
    max_keys: int | None = None,
    seed: int = 0,
) -> TraceResult:
    """Ask pool keys ``chunk`` at a time until a host is accused or the budget (``max_keys``, default
    the whole pool) is spent. Refuses a manifest made for another fingerprint set."""
    if manifest.fingerprints_sha256 != fp_set.content_hash():
        raise ConfigError("the manifest was made for another fingerprint file (content hashes differ)")
    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1 (got {chunk})")
    by_id = {fp.id: fp for fp in fp_set.fingerprints}
    order = list(manifest.pool)
    random.Random(f"omlkit-trace/{seed}").shuffle(order)
    order = order[: max_keys or len(order)]
    looks = max(1, math.ceil(len(order) / chunk))
    threshold = alpha / (len(manifest.hosts) * looks)
    matched: set[int] = set()
    history = []
    p_values, held, spent = {h.host: 1.0 for h in manifest.hosts}, {h.host: 0 for h in manifest.hosts}, 0
    for start in range(0, len(order), chunk):
        batch = [by_id[i] for i in order[start : start + chunk]]
        matched |= ask(batch)
        spent += len(batch)
        p_values, held = host_p_values(manifest, matched)
        history.append({"keys_spent": spent, "matched": len(matched), "min_p": min(p_values.values())})
        if min(p_values.values()) <= threshold:
            break
    accused = sorted((h for h, p in p_values.items() if p <= threshold), key=lambda h: p_values[h])
    return TraceResult(accused, p_values, held, len(matched), spent, threshold, alpha, looks, history)


def ask_backend(
    fp_set: FingerprintSet, backend: Any, chat: bool = False, system_prompt: str | None = None
) -> Ask:
    """An :data:`Ask` over a verification backend: greedy answers matched as ``oml verify`` matches."""
    from omlkit.verification.verify import verify_fingerprints

    def ask(fps: Sequence) -> set[int]:
        subset = fp_set.model_copy(update={"fingerprints": list(fps)})
        res = verify_fingerprints(subset, backend, chat=chat, system_prompt=system_prompt)
        return {r["id"] for r in res.records if r["matched"]}

    return ask



def trace_target(cfg: Any) -> TraceResult:
    """``oml trace``'s work: load the pool and the manifest, query ``cfg.model`` or ``cfg.endpoint``,
    trace; writes ``cfg.out`` (host names and counts only) atomically with mode 0600."""
    from omlkit.io import SECRET_MODE, atomic_write_json
    from omlkit.verification.backends import BACKENDS

    fp_set = FingerprintSet.load(cfg.fingerprints)
    manifest = Manifest.load(cfg.manifest)
    if cfg.model is not None:
        backend = BACKENDS.get("transformers")(cfg.model)
    else:
        backend = BACKENDS.get("http")(cfg.endpoint, api_key=cfg.api_key)
    with backend:
        ask = ask_backend(fp_set, backend, chat=cfg.chat)
        result = trace(
            fp_set, manifest, ask, alpha=cfg.alpha, chunk=cfg.chunk, max_keys=cfg.max_keys, seed=cfg.seed
        )
    if cfg.out is not None:
        atomic_write_json(cfg.out, result.as_dict(), mode=SECRET_MODE)
    return result
