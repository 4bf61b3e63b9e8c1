"""Identities: secp256k1 key pairs named by their Ethereum address, and EIP-191 signatures of JSON messages.

Every protocol message is signed over its canonical JSON (sorted keys, no whitespace) wrapped with
``encode_defunct`` (EIP-191 "personal_sign"), so any Ethereum tool can check a signature and a third
party needs only the signer's address. Key files are JSON written atomically with mode 0600; the
private key never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

_RECURSION_LIMIT = sys.getrecursionlimit()

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402
from eth_account.signers.local import LocalAccount  # noqa: E402

from omlkit.errors import ProtocolError  # noqa: E402
from omlkit.io import SECRET_MODE, atomic_write_text, canonical_json  # noqa: E402

# eth_account imports py_ecc, which raises Python's recursion limit to 100000 for its own pairing code
# (not used here). With it, json.loads of a deeply nested request body overflows the C stack and kills
# the server with SIGSEGV before Python can raise RecursionError; back at the limit it had, the body is
# a RecursionError that the web layer answers with a 4xx.
sys.setrecursionlimit(_RECURSION_LIMIT)

KEY_FORMAT = "omlkit.key/1"


def canonical_bytes(message: dict[str, Any]) -> bytes:
    """The exact bytes that are signed for ``message``: its canonical JSON in UTF-8."""
    return canonical_json(message).encode("utf-8")


def normalize_address(address: str, field: str = "address") -> str:
    """Return the checksummed form of ``address``; ProtocolError if it is not a 20-byte hex address."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise ProtocolError(f"{field}: expected a 0x-prefixed 20-byte Ethereum address, got {address!r}")
    return to_checksum_address(address)


def recover_signer(message: dict[str, Any], signature: str) -> str:
    """The checksummed address that signed ``message``; ProtocolError when the signature is malformed."""
    try:
        return Account.recover_message(encode_defunct(canonical_bytes(message)), signature=signature)
    except Exception as exc:  # eth-account raises several types for bad signatures
        raise ProtocolError(
            f"signature: not a valid 65-byte EIP-191 signature ({type(exc).__name__})"
        ) from None


def verify_signature(message: dict[str, Any], signature: str, address: str) -> bool:
    """True when ``signature`` over ``message`` was made by ``address``; a malformed signature is False."""
    try:
        return recover_signer(message, signature) == normalize_address(address)
    except ProtocolError:
        return False


class Identity:
    """A key pair: ``address`` is public, the private key stays inside and is never printed."""

    def __init__(self, account: LocalAccount) -> None:
        self._account = account

    @classmethod
    def new(cls) -> Identity:
        """A fresh random key pair (os.urandom entropy via eth-account)."""
        return cls(Account.create())

    @classmethod
    def from_private_key(cls, private_key: str | bytes) -> Identity:
        """Build from a hex (or raw 32-byte) private key; ProtocolError if it is not one."""
        try:
            return cls(Account.from_key(private_key))
        except Exception:
            raise ProtocolError("private_key: expected 32 bytes of hex") from None

    @property
    def address(self) -> str:
        """The checksummed Ethereum address."""
        return self._account.address

    def sign(self, message: dict[str, Any]) -> str:
        """0x-hex EIP-191 signature over the canonical JSON of ``message``."""
        signed = self._account.sign_message(encode_defunct(canonical_bytes(message)))
        return "0x" + bytes(signed.signature).hex()

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the key file atomically with mode 0600; refuses an existing file unless ``overwrite``."""
        text = (
            json.dumps(
                {
                    "format": KEY_FORMAT,
                    "address": self.address,
                    "private_key": "0x" + bytes(self._account.key).hex(),
                },
                indent=1,
            )
            + "\n"
        )
        try:
            return atomic_write_text(path, text, mode=SECRET_MODE, overwrite=overwrite)
        except FileExistsError:
            raise ProtocolError(f"{path} already exists (pass --force to overwrite)") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Identity:
        """Read a key file; ProtocolError names the file and what is wrong (never the key itself)."""
        path = Path(path)
        if not path.is_file():
            raise ProtocolError(
                f"key file {path} does not exist (create one with `oml keys new --out {path}`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(f"{path}: not a JSON key file") from None
        if not isinstance(data, dict) or data.get("format") != KEY_FORMAT or "private_key" not in data:
            raise ProtocolError(f"{path}: expected format {KEY_FORMAT!r} with a private_key field")
        ident = cls.from_private_key(data["private_key"])
        if data.get("address") and normalize_address(data["address"]) != ident.address:
            raise ProtocolError(f"{path}: address does not belong to the private key")
        return ident

    @classmethod
    def load_or_create(cls, path: str | os.PathLike) -> tuple[Identity, bool]:
        """Load ``path``, or create and save a new key when it does not exist; returns (identity, created)."""
        if Path(path).exists():
            return cls.load(path), False
        ident = cls.new()
        ident.save(path)
        return ident, True

    def __repr__(self) -> str:
        return f"Identity({self.address})"

    __str__ = __repr__
