"""The verifier: open each proof against its commitment, look for σ on the ledger, match, test, sign.

For one proof submission (one host, one model, several keys) the verifier

1. refuses the whole submission — writing nothing — when the host or model is unknown, a fingerprint
   is not registered, a key is already spent, or a revealed (key, response, salt) does not open its
   commitment;
2. for each key looks for a permission from that host for ``sha256(key)``: present means the query was
   accounted for;
3. matches the host's answer on the *unpermitted* keys against the revealed responses
   (``omlkit.fingerprints.matching``) and runs the ownership test over their null rates
   (``omlkit.verification.ownership``): a p-value below alpha is a violation;
4. marks every key spent and stores a platform-signed report (and violation record).
"""

from __future__ import annotations

import time

from sqlalchemy import select

from omlkit.fingerprints.matching import response_matches
from omlkit.io import sha256_bytes
from omlkit.protocol.identity import Identity, normalize_address
from omlkit.protocol.ledger import (
    CommitmentRow,
    HostRow,
    Ledger,
    ModelRow,
    PermissionRow,
    ReportRow,
    ViolationRow,
)
from omlkit.protocol.messages import (
    KeyOutcome,
    ProofSubmission,
    VerificationReport,
    ViolationRecord,
    commitment_of,
    new_record_id,
    query_sha256,
)
from omlkit.protocol.refusals import BadCommitment, NotFound, Spent, Unregistered
from omlkit.verification.ownership import ownership_test


def _signed(cls, identity: Identity, body: dict):  # noqa: ANN001, ANN202
    return cls(**body, signature=identity.sign(cls.model_construct(**body, signature="").payload()))


def verify_submission(
    ledger: Ledger,
    identity: Identity,
    submission: ProofSubmission,
    *,
    alpha: float = 1e-9,
    now: float | None = None,
) -> VerificationReport:
    """Verify ``submission`` and record the outcome; returns the platform-signed report.

    Refuses (Unregistered, NotFound, Spent, BadCommitment) before anything is written.
    """
    now = time.time() if now is None else now
    host = normalize_address(submission.host, "host")
    model_id = submission.model_id
    ids = [p.fingerprint_id for p in submission.proofs]
    with ledger.write() as session:
        if session.get(HostRow, host) is None:
            raise Unregistered(f"host {host} is not registered with this platform")
        model = session.get(ModelRow, model_id)
        if model is None:
            raise NotFound(f"model {model_id!r} is not registered")
        rows = {
            r.fingerprint_id: r
            for r in session.scalars(
                select(CommitmentRow).where(
                    CommitmentRow.model_id == model_id, CommitmentRow.fingerprint_id.in_(ids)
                )
            )
        }
        for proof in submission.proofs:
            row = rows.get(proof.fingerprint_id)
            if row is None:
                raise NotFound(f"fingerprint {proof.fingerprint_id} is not registered for model {model_id!r}")
            if row.spent_at is not None:
                raise Spent(f"fingerprint {proof.fingerprint_id} of model {model_id!r} is already spent")
            if commitment_of(proof.salt, proof.key, proof.response) != row.commitment:
                raise BadCommitment(
                    f"fingerprint {proof.fingerprint_id}: the revealed key, response and salt "
                    "do not match the registered commitment"
                )

        outcomes: list[KeyOutcome] = []
        for proof in submission.proofs:
            qh = query_sha256(proof.key)
            permission_id = session.scalar(
                select(PermissionRow.id)
                .where(
                    PermissionRow.host == host,
                    PermissionRow.model_id == model_id,
                    PermissionRow.query_sha256 == qh,
                )
                .limit(1)
            )
            outcomes.append(
                KeyOutcome(
                    fingerprint_id=proof.fingerprint_id,
                    commitment=rows[proof.fingerprint_id].commitment,
                    query_sha256=qh,
                    answer_sha256=None
                    if proof.answer is None
                    else sha256_bytes(proof.answer.encode("utf-8")),
                    permitted=permission_id is not None,
                    permission_id=permission_id,
                    matched=response_matches(proof.response, proof.answer, model.match),
                    null_rate=rows[proof.fingerprint_id].null_rate,
                )
            )

        unpermitted = [o for o in outcomes if not o.permitted]
        matched = sum(o.matched for o in unpermitted)
        verdict = ownership_test([o.null_rate for o in unpermitted], matched, alpha)
        outcome = "violation" if verdict.owned else ("not_proven" if matched else "compliant")
        report_id = new_record_id()
        violation = None
        if verdict.owned:
            violation = _signed(
                ViolationRecord,
                identity,
                dict(
                    kind="oml.violation/1",
                    id=new_record_id(),
                    platform=identity.address,
                    host=host,
                    model_id=model_id,
                    timestamp=now,
                    match=model.match,
                    checked=len(unpermitted),
                    matched=matched,
                    p_value=verdict.p_value,
                    alpha=alpha,
                    keys=[o for o in unpermitted if o.matched],
                ),
            )
        report = _signed(
            VerificationReport,
            identity,
            dict(
                kind="oml.verification/1",
                id=report_id,
                platform=identity.address,
                host=host,
                model_id=model_id,
                timestamp=now,
                outcome=outcome,
                checked=len(outcomes),
                permitted=len(outcomes) - len(unpermitted),
                unpermitted_matched=matched,
                p_value=verdict.p_value,
                alpha=alpha,
                keys=outcomes,
                violation=violation,
            ),
        )

        for row in rows.values():
            row.spent_at = now
            row.spent_report = report_id
        session.add(
            ReportRow(
                id=report_id,
                host=host,
                model_id=model_id,
                outcome=outcome,
                violation=violation is not None,
                created_at=now,
                body=report.model_dump_json(),
            )
        )
        session.flush()  # the report row must exist before the violation that references it
        if violation is not None:
            session.add(
                ViolationRow(
                    id=violation.id,
                    report_id=report_id,
                    host=host,
                    model_id=model_id,
                    created_at=now,
                    body=violation.model_dump_json(),
                )
            )
    return report
