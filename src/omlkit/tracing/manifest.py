"""Which host's copy holds which fingerprints: the assignment and its secret manifest file.

Each fingerprint of the pool goes to each host independently with probability ``rate`` (a random code:
host h's codeword is its membership bits). Independence is what makes tracing sound: an innocent host's
bits are independent of whatever a coalition of other hosts does, so among the keys a suspect model
matches, the number an innocent host holds is Binomial(matched, rate) whatever the coalition did
(:mod:`omlkit.tracing.trace`). ``core`` keys go to every host: they prove the model is the owner's but
say nothing about which host leaked it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omlkit.errors import FingerprintFileError
from omlkit.io import SECRET_MODE, atomic_write_json

MANIFEST_FORMAT = "omlkit.manifest/1"


class HostCopy(BaseModel):
    """One host's copy: its name, the model folder, and the pool fingerprints it holds."""

    model_config = ConfigDict(extra="forbid")

    host: str
    model: str = ""
    ids: list[int]


class Manifest(BaseModel):
    """The assignment of a fingerprint set to hosts (secret: it says which keys identify whom). ``pool``
    is every id that was assigned at random — held by some hosts, or by none — and ``core`` the ids every
    host holds."""

    model_config = ConfigDict(extra="forbid")

    format: str = MANIFEST_FORMAT
    fingerprints_sha256: str
    rate: float = Field(gt=0.0, lt=1.0)
    seed: int
    core: list[int] = Field(default_factory=list)
    pool: list[int]
    hosts: list[HostCopy]

    def __repr__(self) -> str:
        return f"Manifest(hosts={len(self.hosts)}, core={len(self.core)})"

    def holds(self) -> dict[str, set[int]]:
        """``{host: ids it holds}`` (pool ids only; every host also holds the core)."""
        return {h.host: set(h.ids) for h in self.hosts}

    @classmethod
    def build(cls, fp_set, hosts: list[str], rate: float, seed: int, core: int = 0) -> Manifest:
        """The assignment of ``fp_set``'s ids to ``hosts`` (:func:`assign`), copies not made yet."""
        ids = [fp.id for fp in fp_set.fingerprints]
        core_ids, held = assign(ids, hosts, rate, seed, core)
        return cls(
            fingerprints_sha256=fp_set.content_hash(),
            rate=rate,
            seed=seed,
            core=core_ids,
            pool=sorted(set(ids) - set(core_ids)),
            hosts=[HostCopy(host=h, ids=held[h]) for h in hosts],
        )

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically with mode 0600; refuses to replace a file unless ``overwrite``."""
        return atomic_write_json(path, self.model_dump(mode="json"), mode=SECRET_MODE, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read and validate a manifest; a bad file is a one-line FingerprintFileError."""
        import json

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            manifest = cls.model_validate(data)
        except FileNotFoundError:
            raise FingerprintFileError(f"manifest {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FingerprintFileError(f"manifest {path} is not JSON") from None
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise FingerprintFileError(f"manifest {path}: invalid field {where!r}") from None
        if manifest.format != MANIFEST_FORMAT:
            raise FingerprintFileError(
                f"manifest {path}: format {manifest.format!r}, expected {MANIFEST_FORMAT}"
            )
        return manifest


def assign(
    ids: list[int], hosts: list[str], rate: float, seed: int, core: int = 0
) -> tuple[list[int], dict[str, list[int]]]:
    """``(core ids, {host: pool ids})``: the first ``core`` ids of a seeded shuffle go to every host, each
    other id to each host independently with probability ``rate``."""
    rng = random.Random(f"omlkit-assign/{seed}")
    order = list(ids)
    rng.shuffle(order)
    core_ids, pool = sorted(order[:core]), order[core:]
    return core_ids, {h: sorted(i for i in pool if rng.random() < rate) for h in hosts}
