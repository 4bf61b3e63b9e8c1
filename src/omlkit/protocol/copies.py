"""Models distributed as per-host copies (``oml distribute``): the platform keeps which copy holds which
pool fingerprint, and traces a violation to the copy it came from.

At registration the platform draws, with its own randomness, the order in which pool keys must be
revealed to count for tracing (:func:`store_copies`); ``GET /v1/models/{id}/trace-order`` lists the
unspent ones. A submission whose pool keys are exactly the first unspent ones in that order is traced
(:func:`trace_violation`): the order is independent of which copy holds which key, so among the m pool
keys a host answered without permission, the number an innocent copy holds is Binomial(m, rate), and a
copy is named when that tail, times the number of copies, is at most alpha. A prover who picks its own
keys could pick one copy's keys and frame it; such a submission is still verified, but not traced.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable

from sqlalchemy import select

from omlkit.protocol.ledger import CommitmentRow, CopyRow, ModelRow
from omlkit.protocol.messages import CopyRegistration, TracedCopy
from omlkit.verification.ownership import poisson_binomial_sf


def store_copies(session, model: ModelRow, registration: CopyRegistration) -> None:  # noqa: ANN001
    """Record each copy's pool ids, the rate, and a trace order drawn from the platform's randomness."""
    order = list(registration.pool)
    secrets.SystemRandom().shuffle(order)
    model.copy_rate = registration.rate
    model.trace_order = json.dumps(order)
    session.add_all([CopyRow(model_id=model.model_id, name=c.name, host=c.host,
                             fingerprint_ids=json.dumps(sorted(set(c.fingerprint_ids))))
                     for c in registration.copies])


def unspent_order(session, model: ModelRow) -> list[int]:  # noqa: ANN001
    """The model's pool ids not yet spent, in the platform's trace order (empty: not distributed)."""
    if not model.trace_order:
        return []
    spent = set(session.scalars(select(CommitmentRow.fingerprint_id).where(
        CommitmentRow.model_id == model.model_id, CommitmentRow.spent_at.is_not(None))))
    return [i for i in json.loads(model.trace_order) if i not in spent]


def trace_violation(session, model: ModelRow, revealed: Iterable[int], matched: Iterable[int],  # noqa: ANN001
                    alpha: float) -> list[TracedCopy] | None:
    """The copies a violation traces to, most significant first; None when the model has no copies or
    the submission's pool keys were not the next unspent ones in the trace order."""
    order = unspent_order(session, model)
    pool = set(order)
    asked = {i for i in revealed if i in pool}
    if not asked or asked != set(order[: len(asked)]):
        return None
    hits = {i for i in matched if i in asked}
    copies = list(session.scalars(select(CopyRow).where(CopyRow.model_id == model.model_id)))
    traced = []
    for copy in copies:
        held = len(hits & set(json.loads(copy.fingerprint_ids)))
        p = min(1.0, len(copies) * poisson_binomial_sf([model.copy_rate] * len(hits), held))
        if held and p <= alpha:
            traced.append(TracedCopy(name=copy.name, host=copy.host, held=held, matched=len(hits), p_value=p))
    return sorted(traced, key=lambda t: t.p_value)
