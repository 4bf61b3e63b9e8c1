"""Protocol messages (pydantic): what owners, hosts, provers and the platform send and sign.

Signed messages carry a ``kind`` tag (so a signature made for one kind of message can never pass as
another) and a ``signature`` over the canonical JSON of every other field. Fingerprints stay secret:
the owner registers salted hash commitments, ``sha256(salt || canonical({key, response}))`` with a
fresh 32-byte salt per fingerprint, and keeps the salts in a reveal file (mode 0600) that the prover
uses to open a commitment when it submits a proof.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from omlkit.errors import ProtocolError
from omlkit.fingerprints import FingerprintSet
from omlkit.fingerprints.matching import MatchMode
from omlkit.io import SECRET_MODE, atomic_write_text, sha256_bytes
from omlkit.protocol.identity import Identity, canonical_bytes, normalize_address, recover_signer
from omlkit.protocol.refusals import BadSignature
from omlkit.text import WireText

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
Signature = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]
ModelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")]
Nonce = Annotated[str, Field(pattern=r"^[0-9a-f]{16,64}$")]
Endpoint = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=512)]

MAX_TEXT = 65536  # characters of a key, response or answer
MAX_ID = 2**63 - 1  # fingerprint ids are 64-bit signed integers in the ledger
MAX_PROOFS = 1024
MAX_COMMITMENTS = 100_000
MAX_ANSWER_TOKENS = 512
#: Fields added to signed records after records were first signed: left out of the signed payload while
#: None, so a record signed before they existed still verifies.
LATER_SIGNED_FIELDS = frozenset({"endpoint", "traced"})
REVEAL_FORMAT = "omlkit.reveal/1"


def query_sha256(query: str) -> str:
    """Hex sha256 of a query's UTF-8 text — what a permission names instead of the query itself."""
    return sha256_bytes(query.encode("utf-8"))


def commitment_of(salt_hex: str, key: str, response: str) -> str:
    """Hex ``sha256(salt || canonical({"key", "response"}))``; ProtocolError if the salt is not hex."""
    try:
        salt = bytes.fromhex(salt_hex)
    except (ValueError, TypeError):
        raise ProtocolError("salt: expected hex bytes") from None
    return sha256_bytes(salt + canonical_bytes({"key": key, "response": response}))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Signed(_Model):
    """A message with a ``signature`` over the canonical JSON of all its other fields."""

    def payload(self) -> dict[str, Any]:
        """The dict that is signed: every field except ``signature`` (and later fields while None)."""
        data = self.model_dump(mode="json", exclude={"signature"})
        return {k: v for k, v in data.items() if not (k in LATER_SIGNED_FIELDS and v is None)}

    def signer(self) -> str:
        """Address that made ``signature``; ProtocolError when it is malformed."""
        return recover_signer(self.payload(), self.signature)  # type: ignore[attr-defined]

    def check_signed_by(self, address: str, what: str) -> None:
        """Refuse (BadSignature) unless ``address`` signed this message; ``what`` names it in the error."""
        try:
            signer = self.signer()
        except ProtocolError as exc:
            raise BadSignature(f"{what}: {exc}") from None
        if signer != normalize_address(address):
            raise BadSignature(
                f"{what}: signature does not match {address} (tampered or signed by another key)"
            )


# -- registration -----------------------------------------------------------------------------------


class CommitmentEntry(_Model):
    """One fingerprint as the platform knows it: its id, commitment and public null rate p0."""

    fingerprint_id: int = Field(ge=0, le=MAX_ID)
    commitment: Hex64
    null_rate: float = Field(gt=0.0, le=1.0)


class CopyEntry(_Model):
    """One host's copy of a distributed model: its name (the manifest's host name), the registered host
    address it was licensed to (if any), and the pool fingerprints it holds."""

    name: str = Field(min_length=1, max_length=128)
    host: Address | None = None
    fingerprint_ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(max_length=MAX_COMMITMENTS)


class CopyRegistration(_Model):
    """Which copy holds which pool fingerprint (``oml distribute``'s manifest, without keys): each pool
    id went to each copy independently with probability ``rate``, so the platform can trace a violation
    to the copy it came from (``docs/tracing.md``)."""

    rate: float = Field(gt=0.0, lt=1.0)
    pool: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(min_length=1, max_length=MAX_COMMITMENTS)
    copies: list[CopyEntry] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _consistent(self) -> CopyRegistration:
        pool = set(self.pool)
        if len(pool) != len(self.pool):
            raise ValueError("pool ids must be unique")
        names = [c.name for c in self.copies]
        if len(set(names)) != len(names):
            raise ValueError("copy names must be unique")
        if any(not set(c.fingerprint_ids) <= pool for c in self.copies):
            raise ValueError("a copy holds an id that is not in the pool")
        return self


class RegisterModel(_Model):
    """Owner -> platform (admin token): a model id, its match rule, one commitment per fingerprint and,
    for a model distributed as per-host copies, which copy holds which pool fingerprint."""

    model_id: ModelId
    match: MatchMode = "exact"
    commitments: list[CommitmentEntry] = Field(min_length=1, max_length=MAX_COMMITMENTS)
    copies: CopyRegistration | None = None

    @field_validator("commitments")
    @classmethod
    def _unique(cls, entries: list[CommitmentEntry]) -> list[CommitmentEntry]:
        ids = [e.fingerprint_id for e in entries]
        if len(set(ids)) != len(ids):
            raise ValueError("fingerprint ids must be unique")
        return entries

    @model_validator(mode="after")
    def _pool_committed(self) -> RegisterModel:
        if self.copies and not set(self.copies.pool) <= {e.fingerprint_id for e in self.commitments}:
            raise ValueError("copies: every pool id needs a commitment")
        return self


class RegisterHost(_Model):
    """Owner/admin -> platform: a host that signed the licence agreement, and the public endpoint it
    serves the model at (where the platform's verifier asks the keys a prover reveals)."""

    address: Address
    name: str = Field(default="", max_length=128)
    endpoint: Endpoint | None = None
    served_model: str | None = Field(default=None, max_length=256)


class RevealFile(_Model):
    """The owner's secret salts (file mode 0600): fingerprint id -> hex salt, for one registered model."""

    format: Literal["omlkit.reveal/1"] = REVEAL_FORMAT
    model_id: ModelId
    fingerprints_sha256: Hex64
    salts: dict[int, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]]

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write atomically with mode 0600; refuses an existing file unless ``overwrite``."""
        text = json.dumps(self.model_dump(mode="json"), indent=1) + "\n"
        try:
            return atomic_write_text(path, text, mode=SECRET_MODE, overwrite=overwrite)
        except FileExistsError:
            raise ProtocolError(f"{path} already exists (pass --force to overwrite)") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> RevealFile:
        """Read and validate; ProtocolError names the file and the first bad field (never a salt)."""
        path = Path(path)
        if not path.is_file():
            raise ProtocolError(f"reveal file {path} does not exist")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(f"{path}: not valid JSON") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ProtocolError(f"{path}: {'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}") from None


def make_registration(
    fp_set: FingerprintSet, model_id: str, match: str = "exact"
) -> tuple[RegisterModel, RevealFile]:
    """Commit to every fingerprint of ``fp_set`` with a fresh random salt; returns (request, reveal file)."""
    from omlkit.verification.ownership import null_rate

    salts = {fp.id: secrets.token_hex(32) for fp in fp_set.fingerprints}
    entries = [
        CommitmentEntry(
            fingerprint_id=fp.id,
            commitment=commitment_of(salts[fp.id], fp.key, fp.response),
            null_rate=null_rate(fp_set, fp),
        )
        for fp in fp_set.fingerprints
    ]
    request = RegisterModel(model_id=model_id, match=match, commitments=entries)
    reveal = RevealFile(model_id=model_id, fingerprints_sha256=fp_set.content_hash(), salts=salts)
    return request, reveal


# -- permissions ------------------------------------------------------------------------------------


class PermissionRequest(Signed):
    """Host -> platform: ``(model_id, sha256(query), nonce, timestamp)`` signed by the host's key."""

    kind: Literal["oml.permission_request/1"] = "oml.permission_request/1"
    host: Address
    model_id: ModelId
    query_sha256: Hex64
    nonce: Nonce
    timestamp: float = Field(gt=0)
    signature: Signature

    @classmethod
    def create(
        cls,
        identity: Identity,
        model_id: str,
        query: str,
        *,
        nonce: str | None = None,
        timestamp: float | None = None,
    ) -> PermissionRequest:
        """A signed request for ``query`` (only its hash leaves the host) with a fresh 128-bit nonce."""
        body = {
            "kind": "oml.permission_request/1",
            "host": identity.address,
            "model_id": model_id,
            "query_sha256": query_sha256(query),
            "nonce": nonce or secrets.token_hex(16),
            "timestamp": float(time.time() if timestamp is None else timestamp),
        }
        return cls(**body, signature=identity.sign(body))


class Permission(Signed):
    """Platform -> host: σ, the platform's signature over the request tuple, its ledger id and a timestamp."""

    kind: Literal["oml.permission/1"] = "oml.permission/1"
    platform: Address
    host: Address
    model_id: ModelId
    query_sha256: Hex64
    nonce: Nonce
    request_timestamp: float
    timestamp: float
    signature: Signature


# -- proofs and verdicts ----------------------------------------------------------------------------


class Proof(_Model):
    """One fingerprint a prover reveals: the opened commitment. ``answer`` is accepted from older
    provers and ignored: the platform's verifier asks the host itself (docs/protocol.md)."""

    fingerprint_id: int = Field(ge=0, le=MAX_ID)
    answer: WireText | None = Field(default=None, max_length=MAX_TEXT)
    key: WireText = Field(min_length=1, max_length=MAX_TEXT)
    response: WireText = Field(min_length=1, max_length=MAX_TEXT)
    salt: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    def __repr__(self) -> str:  # the key and response are secrets until the platform has checked them
        return f"Proof(fingerprint_id={self.fingerprint_id})"

    __str__ = __repr__


class ProofSubmission(_Model):
    """Prover -> platform: the host to check, the model, one opened fingerprint per key to spend, and
    how the verifier is to ask the host (chat or raw completion, tokens to generate)."""

    host: Address
    model_id: ModelId
    proofs: list[Proof] = Field(min_length=1, max_length=MAX_PROOFS)
    chat: bool = False
    max_new_tokens: int = Field(default=16, ge=1, le=MAX_ANSWER_TOKENS)

    @field_validator("proofs")
    @classmethod
    def _unique(cls, proofs: list[Proof]) -> list[Proof]:
        ids = [p.fingerprint_id for p in proofs]
        if len(set(ids)) != len(ids):
            raise ValueError("each fingerprint id may appear once")
        return proofs


class KeyOutcome(_Model):
    """What the verifier found for one key; hashes only, so the record leaks no secret."""

    fingerprint_id: int
    commitment: Hex64
    query_sha256: Hex64
    answer_sha256: Hex64 | None
    permitted: bool
    permission_id: int | None
    matched: bool
    null_rate: float


class TraceBlockRequest(_Model):
    """Prover -> platform: reserve the next ``n`` pool keys of a distributed model's trace order."""

    n: int = Field(ge=1, le=MAX_PROOFS)


class TracedCopy(_Model):
    """A copy a violation was traced to: of the ``matched`` pool keys the host answered, ``held`` are in
    this copy, and ``p_value`` (corrected over every copy) bounds the chance of that for an innocent
    copy."""

    name: str
    host: Address | None = None
    held: int
    matched: int
    p_value: float


class ViolationRecord(Signed):
    """Platform-signed evidence that ``host`` served ``model_id`` without permission.

    Anyone holding only the platform's address can check it (:func:`check_violation_record`).
    """

    kind: Literal["oml.violation/1"] = "oml.violation/1"
    id: str
    platform: Address
    host: Address
    model_id: ModelId
    endpoint: str | None = None  # where the platform observed the answers (records since 2026-12-03)
    timestamp: float
    match: str
    checked: int
    matched: int
    p_value: float
    alpha: float
    keys: list[KeyOutcome]
    traced: list[TracedCopy] | None = None  # the copies it came from (distributed models, since 2026-12-03)
    signature: Signature


class VerificationReport(Signed):
    """Platform-signed outcome of one proof submission: compliant, violation, or not proven."""

    kind: Literal["oml.verification/1"] = "oml.verification/1"
    id: str
    platform: Address
    host: Address
    model_id: ModelId
    endpoint: str | None = None
    timestamp: float
    outcome: Literal["compliant", "violation", "not_proven"]
    checked: int
    permitted: int
    unpermitted_matched: int
    p_value: float
    alpha: float
    keys: list[KeyOutcome]
    violation: ViolationRecord | None
    signature: Signature


def new_record_id() -> str:
    """A random record id."""
    return uuid.uuid4().hex


def check_violation_record(data: dict[str, Any] | str, platform_address: str) -> ViolationRecord:
    """Validate a violation record and its signature against ``platform_address`` alone.

    Returns the record; ProtocolError when it is malformed, not a violation record, names another
    platform, or its signature was not made by that address (any tampered field breaks it).
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            raise ProtocolError("record: not valid JSON") from None
    if isinstance(data, dict) and data.get("kind") == "oml.verification/1":
        data = data.get("violation") or {}
    try:
        record = ViolationRecord.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ProtocolError(f"record: {'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}") from None
    address = normalize_address(platform_address, "platform address")
    if normalize_address(record.platform) != address:
        raise ProtocolError(f"record: names platform {record.platform}, expected {address}")
    record.check_signed_by(address, "record")
    return record
