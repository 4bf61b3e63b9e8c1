"""The platform's operations, free of HTTP: register, issue permissions, count usage, verify, list.

Every operation either completes inside one ledger transaction or raises a refusal
(``omlkit.protocol.refusals``) before anything is committed.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from omlkit.protocol.copies import reserve_block, store_copies
from omlkit.protocol.identity import Identity, normalize_address
from omlkit.protocol.ledger import CommitmentRow, HostRow, Ledger, ModelRow, PermissionRow, ViolationRow
from omlkit.protocol.messages import (
    Permission,
    PermissionRequest,
    ProofSubmission,
    RegisterHost,
    RegisterModel,
)
from omlkit.protocol.refusals import Conflict, NotFound, Replay, Stale, Unregistered
from omlkit.protocol.verifier import Observer, http_observer, verify_submission


class Platform:
    """One platform: its signing identity, its ledger, the permission time window, the test's alpha, and
    how its verifier asks hosts the revealed keys (``observe``: their registered endpoints over HTTP)."""

    def __init__(
        self,
        ledger: Ledger,
        identity: Identity,
        *,
        time_window_s: float = 60.0,
        alpha: float = 1e-9,
        observe: Observer | None = None,
    ) -> None:
        self.ledger = ledger
        self.identity = identity
        self.time_window_s = time_window_s
        self.alpha = alpha
        self.observe = observe or http_observer()  # how the verifier asks a host the revealed keys
        # hosts and models are never removed, so a positive lookup can be remembered
        self._known_hosts: set[str] = set()
        self._known_models: set[str] = set()

    @property
    def address(self) -> str:
        """The platform's address: all a third party needs to check its signatures."""
        return self.identity.address

    def register_model(self, request: RegisterModel) -> dict:
        """Store the model's commitments; Conflict if the id is taken. Returns a summary."""
        now = time.time()
        try:
            with self.ledger.write() as session:
                if session.get(ModelRow, request.model_id) is not None:
                    raise Conflict(f"model {request.model_id!r} is already registered")
                model = ModelRow(model_id=request.model_id, match=request.match, created_at=now)
                session.add(model)
                session.flush()
                session.add_all(
                    [
                        CommitmentRow(
                            model_id=request.model_id,
                            fingerprint_id=c.fingerprint_id,
                            commitment=c.commitment,
                            null_rate=c.null_rate,
                        )
                        for c in request.commitments
                    ]
                )
                if request.copies is not None:
                    session.flush()  # the commitments before the copies that name them
                    store_copies(session, model, request.copies)
        except IntegrityError:
            raise Conflict(f"model {request.model_id!r} is already registered") from None
        return {
            "model_id": request.model_id,
            "fingerprints": len(request.commitments),
            "match": request.match,
            "copies": len(request.copies.copies) if request.copies else 0,
        }

    def register_host(self, request: RegisterHost) -> dict:
        """Register a host address and its public endpoint; Conflict if it already is. Returns a summary."""
        address = normalize_address(request.address)
        try:
            with self.ledger.write() as session:
                if session.get(HostRow, address) is not None:
                    raise Conflict(f"host {address} is already registered")
                session.add(HostRow(address=address, name=request.name, created_at=time.time(),
                                    endpoint=request.endpoint, served_model=request.served_model))
        except IntegrityError:
            raise Conflict(f"host {address} is already registered") from None
        return {"address": address, "name": request.name, "endpoint": request.endpoint}

    def _check_registered(self, host: str, model_id: str) -> None:
        if host in self._known_hosts and model_id in self._known_models:
            return
        with self.ledger.read() as session:
            if session.get(HostRow, host) is None:
                raise Unregistered(f"host {host} is not registered with this platform")
            if session.get(ModelRow, model_id) is None:
                raise NotFound(f"model {model_id!r} is not registered")
        self._known_hosts.add(host)
        self._known_models.add(model_id)

    def issue_permission(self, request: PermissionRequest, now: float | None = None) -> Permission:
        """Record the host's request on the ledger and return σ, the platform-signed permission.

        Refuses a timestamp outside the time window (Stale), a signature not made by ``request.host``
        (BadSignature), an unregistered host (Unregistered), an unknown model (NotFound) and a nonce this
        host already used (Replay). The permission is returned only after the ledger commit.
        """
        now = time.time() if now is None else now
        if abs(now - request.timestamp) > self.time_window_s:
            raise Stale(
                f"permission request: timestamp is {now - request.timestamp:+.0f} s away from the "
                f"platform's clock (window ±{self.time_window_s:g} s)"
            )
        host = normalize_address(request.host, "host")
        request.check_signed_by(host, "permission request")
        self._check_registered(host, request.model_id)
        body = {
            "kind": "oml.permission/1",
            "platform": self.address,
            "host": host,
            "model_id": request.model_id,
            "query_sha256": request.query_sha256,
            "nonce": request.nonce,
            "request_timestamp": request.timestamp,
            "timestamp": now,
        }
        sigma = self.identity.sign(body)
        try:
            with self.ledger.write() as session:
                session.add(
                    PermissionRow(
                        host=host,
                        model_id=request.model_id,
                        query_sha256=request.query_sha256,
                        nonce=request.nonce,
                        request_timestamp=request.timestamp,
                        issued_at=now,
                        request_signature=request.signature,
                        signature=sigma,
                    )
                )
        except IntegrityError:
            raise Replay(
                f"permission request: nonce {request.nonce} was already used by host {host}"
            ) from None
        return Permission(**body, signature=sigma)

    def usage(self, host: str | None = None, model_id: str | None = None) -> list[dict]:
        """Permission counts per (host, model), optionally filtered."""
        query = (
            select(PermissionRow.host, PermissionRow.model_id, func.count())
            .group_by(PermissionRow.host, PermissionRow.model_id)
            .order_by(PermissionRow.host, PermissionRow.model_id)
        )
        if host:
            query = query.where(PermissionRow.host == normalize_address(host, "host"))
        if model_id:
            query = query.where(PermissionRow.model_id == model_id)
        with self.ledger.read() as session:
            return [{"host": h, "model_id": m, "permissions": n} for h, m, n in session.execute(query)]

    def spent(self, model_id: str) -> list[int]:
        """Ids of the model's fingerprints already used in a proof; NotFound for an unknown model."""
        with self.ledger.read() as session:
            if session.get(ModelRow, model_id) is None:
                raise NotFound(f"model {model_id!r} is not registered")
            return list(
                session.scalars(
                    select(CommitmentRow.fingerprint_id)
                    .where(CommitmentRow.model_id == model_id, CommitmentRow.spent_at.is_not(None))
                    .order_by(CommitmentRow.fingerprint_id)
                )
            )

    def trace_block(self, model_id: str, n: int) -> list[int]:
        """Reserve the next ``n`` pool keys of a distributed model's secret trace order (or return the
        block already reserved): the pool ids the next proof must reveal. NotFound for an unknown model,
        Conflict for one without copies or with no pool key left."""
        with self.ledger.write() as session:
            model = session.get(ModelRow, model_id)
            if model is None:
                raise NotFound(f"model {model_id!r} is not registered")
            return reserve_block(model, n)

    def submit_proofs(self, submission: ProofSubmission) -> dict:
        """Verify a proof submission (see ``verifier``); returns the signed report as JSON-ready dict."""
        report = verify_submission(
            self.ledger, self.identity, submission, observe=self.observe, alpha=self.alpha
        )
        return report.model_dump(mode="json")

    def violations(self, host: str | None = None) -> list[dict]:
        """Every signed violation record, oldest first, optionally for one host."""
        query = select(ViolationRow.body).order_by(ViolationRow.created_at)
        if host:
            query = query.where(ViolationRow.host == normalize_address(host, "host"))
        with self.ledger.read() as session:
            return [json.loads(body) for body in session.scalars(query)]
