"""Configs of the protocol commands (pydantic only, so ``oml --help`` stays instant).

Admin tokens may come from a flag, a config file or ``$OMLKIT_ADMIN_TOKEN``; they are excluded from
reprs so they never reach a log line.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from omlkit.config import OMIT_DEFAULT_FROM_ID, OmlConfig
from omlkit.errors import ConfigError
from omlkit.fingerprints.matching import MatchMode

ADMIN_TOKEN_ENV = "OMLKIT_ADMIN_TOKEN"


def resolve_admin_token(token: str | None, required: bool = True) -> str | None:
    """The token from the flag or ``$OMLKIT_ADMIN_TOKEN``; ConfigError when required and missing or short."""
    token = token or os.environ.get(ADMIN_TOKEN_ENV) or None
    if token is None:
        if required:
            raise ConfigError(f"--admin-token: required (or set ${ADMIN_TOKEN_ENV})")
        return None
    if len(token) < 16:
        raise ConfigError("--admin-token: expected at least 16 characters")
    return token


class PlatformConfig(OmlConfig):
    """`oml platform serve`: the platform service (registration, permissions, ledger, verifier)."""

    db: str = Field(
        "platform.db", description="Ledger: a SQLite file path, sqlite:///..., or postgresql://..."
    )
    key: Path | None = Field(
        None, description="Platform key file (created when missing); default $OMLKIT_HOME/platform.key"
    )
    admin_token: str | None = Field(
        None, repr=False, description=f"Token for registration calls (or ${ADMIN_TOKEN_ENV})"
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8900, ge=0, le=65535, description="Port to listen on.")
    time_window_s: float = Field(
        60.0, gt=0, description="Permission requests older/newer than this are refused."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Request bodies larger than this are refused."
    )
    alpha: float = Field(1e-9, gt=0, lt=1, description="Significance level of the ownership test.")
    access_log: bool = Field(False, description="Log every request line (paths only, never bodies).")


class RegisterModelConfig(OmlConfig):
    """`oml platform register-model`: commit to a fingerprint file's fingerprints on the platform."""

    platform: str = Field(description="Platform base URL, e.g. http://127.0.0.1:8900")
    fingerprints: Path = Field(description="Fingerprint file (omlkit.fingerprints/1); stays local.")
    model_id: str = Field(description="Model id to register.")
    reveal_out: Path = Field(description="Where to write the secret salts (mode 0600); `oml prove` needs it.")
    match: MatchMode = Field("exact", description="Match rule the verifier applies.")
    admin_token: str | None = Field(None, repr=False, description=f"Admin token (or ${ADMIN_TOKEN_ENV})")
    manifest: Path | None = Field(
        None, description="`oml distribute`'s manifest: also register which copy holds which pool key, so "
        "a violation is traced to its copy (the manifest stays local; the platform learns ids only).",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    copy_host: list[str] = Field(
        [], description="With --manifest: NAME=0xADDRESS, the registered host a copy was licensed to.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    force: bool = Field(False, description="Overwrite an existing reveal file.")


class RegisterHostConfig(OmlConfig):
    """`oml platform register-host`: register a host address (from --address or a key file)."""

    platform: str = Field(description="Platform base URL.")
    address: str | None = Field(None, description="Host address (0x...).")
    key: Path | None = Field(None, description="Host key file to take the address from.")
    name: str = Field("", description="Free-form name of the host.")
    endpoint: str | None = Field(
        None, description="Host's public OpenAI-compatible URL; the verifier asks revealed keys there."
    )
    served_model: str | None = Field(None, description="Model name sent to --endpoint (default: its first).")
    admin_token: str | None = Field(None, repr=False, description=f"Admin token (or ${ADMIN_TOKEN_ENV})")


class ProxyConfig(OmlConfig):
    """`oml host proxy`: an OpenAI-compatible proxy that obtains σ from the platform for every query."""

    upstream: str = Field(description="Base URL of the inference server (vLLM, TGI, oml serve).")
    platform: str = Field(description="Platform base URL.")
    key: Path = Field(description="Host key file (oml keys new).")
    model_id: str = Field(description="Platform model id the upstream serves.")
    platform_address: str | None = Field(
        None, description="Pin the platform's address (default: ask the platform at startup)."
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8800, ge=0, le=65535, description="Port to listen on.")
    log: Path = Field(Path("host_proxy.jsonl"), description="JSONL log (hashes and status only, no text).")
    timeout_s: float = Field(120.0, gt=0, description="Timeout of upstream and platform calls.")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="Request bodies larger than this are refused.")

    def check(self) -> ProxyConfig:
        """Refuse URLs that are not http(s)."""
        for name in ("upstream", "platform"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ConfigError(f"--{name}: expected an http:// or https:// URL")
        return self


class ProveConfig(OmlConfig):
    """`oml prove`: reveal unspent fingerprint keys to the platform, which asks the host's endpoint."""

    endpoint: str | None = Field(
        None, description="Not used any more: the platform asks the endpoint the host registered."
    )
    fingerprints: Path = Field(description="Fingerprint file of the registered model.")
    platform: str = Field(description="Platform base URL.")
    reveal_file: Path = Field(description="Reveal file written at registration.")
    host_address: str = Field(description="Address of the host being proven.")
    count: int | None = Field(None, gt=0, description="Keys to spend (default: every unspent key).")
    max_new_tokens: int = Field(16, gt=0, le=512, description="Tokens the verifier asks per key.")
    chat: bool = Field(False, description="The verifier asks via chat completions (else completions).")
    seed: int = Field(0, description="Seed of the key sample.")
    trace: bool = Field(
        False, description="A model distributed as per-host copies: reveal the trace block of --count pool "
        "keys the platform reserves (it picks which), so a violation names the copy it came from.",
        json_schema_extra=OMIT_DEFAULT_FROM_ID,
    )
    out: Path | None = Field(None, description="Write the signed report here (JSON).")
    force: bool = Field(False, description="Overwrite --out.")


class KeysNewConfig(OmlConfig):
    """`oml keys new`: create a new key pair; prints its address (the private key only goes to the file)."""

    out: Path = Field(description="Key file to write (mode 0600).")
    force: bool = Field(False, description="Overwrite an existing key file.")


class KeyFileConfig(OmlConfig):
    """`oml keys address`: print the address of a key file."""

    key: Path = Field(description="Key file.")


class ViolationsConfig(OmlConfig):
    """`oml platform violations`: print the platform's signed violation records as JSON."""

    platform: str = Field(description="Platform base URL.")
    host: str | None = Field(None, description="Only this host's records.")


class UsageConfig(OmlConfig):
    """`oml platform usage`: print permission counts per host and model."""

    platform: str = Field(description="Platform base URL.")
    host: str | None = Field(None, description="Only this host.")
    model_id: str | None = Field(None, description="Only this model.")


class VerifyRecordConfig(OmlConfig):
    """`oml verify-record`: check a violation record offline with only the platform's address."""

    record: Path = Field(description="Violation record (or verification report) JSON.")
    platform_address: str = Field(description="The platform's address (0x...).")
