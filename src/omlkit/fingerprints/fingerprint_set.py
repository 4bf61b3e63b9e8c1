"""The fingerprint file, ``omlkit.fingerprints/1``: load, validate, save (atomic, 0600), hash.

Fingerprint files are secrets. Nothing here logs a key or a response; ``repr`` of a set shows counts
only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omlkit.errors import FingerprintFileError
from omlkit.io import SECRET_MODE, atomic_write_text, sha256_bytes

FORMAT = "omlkit.fingerprints/1"


class Fingerprint(BaseModel):
    """One secret pair: greedy decoding of ``key`` on the fingerprinted model yields ``response``."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0)
    key: str = Field(min_length=1)
    response: str = Field(min_length=1)
    response_prob: float | None = Field(default=None, ge=0.0, le=1.0)
    meta: dict[str, Any] = Field(default_factory=dict)

    def __repr__(self) -> str:  # never reveal the secret in logs or tracebacks
        return f"Fingerprint(id={self.id})"

    __str__ = __repr__


class Strategy(BaseModel):
    """Which key and response strategies made the set, and their parameters."""

    model_config = ConfigDict(extra="forbid")

    key: str
    response: str
    params: dict[str, Any] = Field(default_factory=dict)


class Generator(BaseModel):
    """The model and tokenizer the set was made for (hashes let a mismatch be refused)."""

    model_config = ConfigDict(extra="forbid")

    model: str = ""
    model_sha: str = ""
    tokenizer_sha: str = ""


class FingerprintSet(BaseModel):
    """A whole fingerprint file. ``secret`` holds strategy secrets (e.g. the functional red/green split)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["omlkit.fingerprints/1"] = FORMAT
    strategy: Strategy
    generator: Generator = Field(default_factory=Generator)
    secret: dict[str, Any] = Field(default_factory=dict)
    fingerprints: list[Fingerprint] = Field(min_length=1)

    @field_validator("fingerprints")
    @classmethod
    def _unique(cls, fps: list[Fingerprint]) -> list[Fingerprint]:
        seen_ids: set[int] = set()
        seen_keys: set[str] = set()
        for i, fp in enumerate(fps):
            if fp.id in seen_ids:
                raise ValueError(f"fingerprints[{i}].id {fp.id} is duplicated")
            if fp.key in seen_keys:
                raise ValueError(f"fingerprints[{i}].key duplicates an earlier key")
            seen_ids.add(fp.id)
            seen_keys.add(fp.key)
        return fps

    @model_validator(mode="after")
    def _strategy_named(self) -> FingerprintSet:
        if not self.strategy.key or not self.strategy.response:
            raise ValueError("strategy.key and strategy.response must be named")
        return self

    def __repr__(self) -> str:
        return (f"FingerprintSet(n={len(self.fingerprints)}, key={self.strategy.key!r}, "
                f"response={self.strategy.response!r})")

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.fingerprints)

    def to_json(self) -> str:
        """The file's canonical text."""
        return json.dumps(self.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n"

    def content_hash(self) -> str:
        """sha256 of the canonical text — what run ids and ``fingerprints.sha256`` record."""
        return sha256_bytes(self.to_json().encode("utf-8"))

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically with mode 0600; refuses to replace an existing file unless ``overwrite``."""
        try:
            return atomic_write_text(path, self.to_json(), mode=SECRET_MODE, overwrite=overwrite)
        except FileExistsError:
            raise FingerprintFileError(f"{path} already exists (pass --force to overwrite)") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> FingerprintSet:
        """Read and validate a file; FingerprintFileError names the file and the first bad field."""
        path = Path(path)
        if not path.is_file():
            raise FingerprintFileError(f"fingerprint file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FingerprintFileError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "fingerprints") -> FingerprintSet:
        """Validate a parsed file; the error names the first bad field without echoing secret values."""
        if isinstance(data, dict) and data.get("format") not in (None, FORMAT):
            raise FingerprintFileError(f"{source}: format is {data.get('format')!r}, expected {FORMAT!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
            raise FingerprintFileError(f"{source}: {loc or 'file'}: {err['msg']}") from None

    def check_tokenizer(self, tokenizer, source: str = "fingerprint file") -> None:
        """Refuse (FingerprintFileError) a tokenizer other than the one the set was generated for."""
        from omlkit.models.loading import tokenizer_sha

        if self.generator.tokenizer_sha and self.generator.tokenizer_sha != tokenizer_sha(tokenizer):
            raise FingerprintFileError(
                f"{source} was made for another tokenizer (tokenizer_sha {self.generator.tokenizer_sha} "
                f"!= {tokenizer_sha(tokenizer)}); regenerate it for this model"
            )
