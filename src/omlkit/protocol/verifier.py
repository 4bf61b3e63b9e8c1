"""The verifier: open each proof against its commitment, ask the host the keys itself, look for σ on
the ledger, match, test, sign.

For one proof submission (one host, one model, several revealed keys) the verifier

1. refuses the whole submission — writing nothing — when the host or model is unknown, the host has no
   registered endpoint, a fingerprint is not registered, a key is already spent, or a revealed (key,
   response, salt) does not open its commitment (:func:`open_submission`);
2. sends each key to the host's registered endpoint itself, as any user would, and keeps the answers
   it observed (``observe``; :func:`http_observer` by default). A prover never supplies evidence, so it
   cannot frame a compliant host, nor replay what another host answered;
3. for each key looks for a permission from that host for ``sha256(key)``: present means the query was
   accounted for (a compliant host's proxy obtained it while answering step 2);
4. matches the observed answers on the *unpermitted* keys against the revealed responses
   (``omlkit.fingerprints.matching``) and runs the ownership test over their null rates
   (``omlkit.verification.ownership``): a p-value below alpha is a violation;
5. for a model distributed as per-host copies, traces a violation to the copies it came from, on the
   trace block the platform reserved (:mod:`omlkit.protocol.copies`);
6. marks every key spent and stores a platform-signed report (and violation record) naming the
   endpoint it observed and the copies traced (:func:`record_outcome`).

No ledger transaction is open while the host is asked: a compliant host's proxy needs the platform to
issue permissions for the verifier's own queries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from omlkit.fingerprints.matching import response_matches
from omlkit.io import sha256_bytes
from omlkit.protocol.copies import check_block, spend_block, trace_violation
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
from omlkit.protocol.refusals import (
    BadCommitment,
    HostUnreachable,
    NoEndpoint,
    NotFound,
    Spent,
    Unregistered,
)
from omlkit.verification.ownership import ownership_test


@dataclass(frozen=True)
class HostEndpoint:
    """Where a registered host serves the model: its address, API root and the model name to send."""

    address: str
    endpoint: str
    served_model: str | None


@dataclass(frozen=True)
class Opened:
    """A submission that opened: the host, the model's match rule, and each fingerprint's commitment and
    null rate by id."""

    host: HostEndpoint
    match: str
    commitments: dict[int, tuple[str, float]]


#: ``observe(host, prompts, max_new_tokens) -> answers`` (None where the host gave none).
Observer = Callable[[HostEndpoint, Sequence, int], list]


def http_observer(timeout: float = 120.0) -> Observer:
    """An observer that asks the host's endpoint through the ``http`` verification backend."""

    def observe(host: HostEndpoint, prompts: Sequence, max_new_tokens: int) -> list:
        from omlkit.verification.backends import BACKENDS

        backend = BACKENDS.get("http")(host.endpoint, model=host.served_model, timeout=timeout)
        try:
            return backend.generate(list(prompts), max_new_tokens)
        finally:
            backend.close()

    return observe


def _signed(cls, identity: Identity, body: dict):  # noqa: ANN001, ANN202
    return cls(**body, signature=identity.sign(cls.model_construct(**body, signature="").payload()))


def verify_submission(
    ledger: Ledger,
    identity: Identity,
    submission: ProofSubmission,
    *,
    observe: Observer | None = None,
    alpha: float = 1e-9,
    now: float | None = None,
) -> VerificationReport:
    """Verify ``submission`` and record the outcome; returns the platform-signed report.

    Refuses (Unregistered, NoEndpoint, NotFound, Spent, BadCommitment) before anything is written.
    """
    opened = open_submission(ledger, submission)
    prompts = [[{"role": "user", "content": p.key}] if submission.chat else p.key for p in submission.proofs]
    answers = (observe or http_observer())(opened.host, prompts, submission.max_new_tokens)
    if all(a is None for a in answers):  # down or unreachable: no evidence either way, nothing is spent
        raise HostUnreachable(
            f"host {opened.host.address} answered none of the keys at {opened.host.endpoint}; nothing was "
            "recorded and no key was spent"
        )
    return record_outcome(
        ledger, identity, submission, opened, answers, alpha=alpha, now=time.time() if now is None else now
    )


def open_submission(ledger: Ledger, submission: ProofSubmission) -> Opened:
    """Check the host, the model and every revealed fingerprint (read only); refuse on the first problem."""
    host = normalize_address(submission.host, "host")
    ids = [p.fingerprint_id for p in submission.proofs]
    with ledger.read() as session:
        host_row = session.get(HostRow, host)
        if host_row is None:
            raise Unregistered(f"host {host} is not registered with this platform")
        if not host_row.endpoint:
            raise NoEndpoint(f"host {host} registered no endpoint, so the verifier cannot ask it the keys")
        model = session.get(ModelRow, submission.model_id)
        if model is None:
            raise NotFound(f"model {submission.model_id!r} is not registered")
        rows = _commitments(session, submission.model_id, ids)
        for proof in submission.proofs:
            _check_opening(rows.get(proof.fingerprint_id), proof, submission.model_id)
        check_block(model, ids)  # a distributed model's pool keys only as the reserved trace block
        return Opened(
            HostEndpoint(host, host_row.endpoint, host_row.served_model),
            model.match,
            {i: (r.commitment, r.null_rate) for i, r in rows.items()},
        )


def _commitments(session, model_id: str, ids: list[int]) -> dict[int, CommitmentRow]:  # noqa: ANN001
    query = select(CommitmentRow).where(
        CommitmentRow.model_id == model_id, CommitmentRow.fingerprint_id.in_(ids)
    )
    return {r.fingerprint_id: r for r in session.scalars(query)}


def _check_opening(row: CommitmentRow | None, proof, model_id: str) -> None:  # noqa: ANN001
    if row is None:
        raise NotFound(f"fingerprint {proof.fingerprint_id} is not registered for model {model_id!r}")
    if row.spent_at is not None:
        raise Spent(f"fingerprint {proof.fingerprint_id} of model {model_id!r} is already spent")
    if commitment_of(proof.salt, proof.key, proof.response) != row.commitment:
        raise BadCommitment(
            f"fingerprint {proof.fingerprint_id}: the revealed key, response and salt "
            "do not match the registered commitment"
        )


def _outcomes(session, submission: ProofSubmission, opened: Opened, answers: list) -> list[KeyOutcome]:  # noqa: ANN001
    """One outcome per key: the permission found (if any) and whether the observed answer matched."""
    outcomes = []
    for proof, answer in zip(submission.proofs, answers, strict=True):
        qh = query_sha256(proof.key)
        permission_id = session.scalar(
            select(PermissionRow.id)
            .where(PermissionRow.host == opened.host.address, PermissionRow.model_id == submission.model_id,
                   PermissionRow.query_sha256 == qh)
            .limit(1)
        )
        commitment, null_rate = opened.commitments[proof.fingerprint_id]
        outcomes.append(KeyOutcome(
            fingerprint_id=proof.fingerprint_id,
            commitment=commitment,
            query_sha256=qh,
            answer_sha256=None if answer is None else sha256_bytes(answer.encode("utf-8")),
            permitted=permission_id is not None,
            permission_id=permission_id,
            matched=response_matches(proof.response, answer, opened.match),
            null_rate=null_rate,
        ))
    return outcomes


def record_outcome(
    ledger: Ledger,
    identity: Identity,
    submission: ProofSubmission,
    opened: Opened,
    answers: list,
    *,
    alpha: float,
    now: float,
) -> VerificationReport:
    """Test the observed answers, sign the report (and violation), spend the keys; one transaction."""
    host, model_id = opened.host.address, submission.model_id
    with ledger.write() as session:
        rows = _commitments(session, model_id, list(opened.commitments))
        for proof in submission.proofs:  # a concurrent submission may have spent a key meanwhile
            _check_opening(rows.get(proof.fingerprint_id), proof, model_id)
        model = session.get(ModelRow, model_id)
        block = check_block(model, list(opened.commitments))
        outcomes = _outcomes(session, submission, opened, answers)
        unpermitted = [o for o in outcomes if not o.permitted]
        matched = sum(o.matched for o in unpermitted)
        verdict = ownership_test([o.null_rate for o in unpermitted], matched, alpha)
        outcome = "violation" if verdict.owned else ("not_proven" if matched else "compliant")
        common = dict(platform=identity.address, host=host, model_id=model_id,
                      endpoint=opened.host.endpoint, timestamp=now, p_value=verdict.p_value, alpha=alpha)
        violation = None
        if verdict.owned:
            matched_ids = [o.fingerprint_id for o in unpermitted if o.matched]
            traced = trace_violation(session, model, block, matched_ids, alpha)
            violation = _signed(ViolationRecord, identity, dict(
                kind="oml.violation/1", id=new_record_id(), match=opened.match, checked=len(unpermitted),
                matched=matched, keys=[o for o in unpermitted if o.matched], traced=traced, **common,
            ))
        report = _signed(VerificationReport, identity, dict(
            kind="oml.verification/1", id=new_record_id(), outcome=outcome, checked=len(outcomes),
            permitted=len(outcomes) - len(unpermitted), unpermitted_matched=matched, keys=outcomes,
            violation=violation, **common,
        ))
        spend_block(model, block)
        _store(session, report, violation, rows.values(), now)
    return report


def _store(session, report: VerificationReport, violation, spent_rows, now: float) -> None:  # noqa: ANN001
    for row in spent_rows:
        row.spent_at = now
        row.spent_report = report.id
    session.add(ReportRow(id=report.id, host=report.host, model_id=report.model_id, outcome=report.outcome,
                          violation=violation is not None, created_at=now, body=report.model_dump_json()))
    session.flush()  # the report row must exist before the violation that references it
    if violation is not None:
        session.add(ViolationRow(id=violation.id, report_id=report.id, host=report.host,
                                 model_id=report.model_id, created_at=now, body=violation.model_dump_json()))
