"""Why the platform refuses a message: one ProtocolError subclass per reason, each with its HTTP status.

The platform turns a refusal into ``{"error": message}`` with ``status``; the client turns it back into
the same class, so a caller sees one clear line whichever side refused.
"""

from __future__ import annotations

from omlkit.errors import ProtocolError


class Refused(ProtocolError):
    """A request the platform will not act on; nothing is written to the ledger."""

    status = 400


class BadSignature(Refused):
    """The signature was not made by the party the message names (tampered or forged)."""

    status = 401


class Unauthorized(Refused):
    """An administrative call without the right admin token."""

    status = 401


class Stale(Refused):
    """The request's timestamp lies outside the platform's time window."""

    status = 401


class Unregistered(Refused):
    """The host is not registered with the platform."""

    status = 403


class NoEndpoint(Refused):
    """The host registered no endpoint, so the verifier cannot ask it the keys itself."""

    status = 409


class HostUnreachable(Refused):
    """The host's registered endpoint answered none of the verifier's queries."""

    status = 502


class NotFound(Refused):
    """The model, fingerprint or record does not exist."""

    status = 404


class Replay(Refused):
    """The nonce was already used by this host."""

    status = 409


class Conflict(Refused):
    """The model or host is already registered."""

    status = 409


class Spent(Refused):
    """The fingerprint key was already used in a proof."""

    status = 409


class BadCommitment(Refused):
    """A revealed fingerprint does not open its registered commitment."""

    status = 422


class TooLarge(Refused):
    """The request body exceeds the size limit."""

    status = 413


def refusal_for(reason: str, message: str) -> ProtocolError:
    """Rebuild the refusal the platform named by class (``reason``); a plain ProtocolError for others."""
    classes = {cls.__name__: cls for cls in (Refused, *Refused.__subclasses__())}
    cls = classes.get(reason)
    return cls(message) if cls else ProtocolError(message)
