"""Models distributed as per-host copies (``oml distribute``): the platform keeps which copy holds which
pool fingerprint, and traces a violation to the copy it came from.

The tracing test is sound only if the keys asked are independent of who holds them. The owner knows
the assignment, so a prover who chose the pool keys (or when to stop) could reveal only one copy's keys
and frame it. So pool keys are revealed in *trace blocks* the platform draws: at registration it
shuffles the pool with its own randomness and keeps the order secret; ``POST
/v1/models/{id}/trace-block`` with a size n reserves the next n keys of that order and only then tells
the prover which they are (:func:`reserve_block`); a proof submission must reveal exactly the reserved
block's pool keys (core keys may come with it) and spends it (:func:`check_block`). Among the m keys of
the block the host answered without permission, the number an innocent copy holds is then
Binomial(m, rate) whatever the host served, and a copy is named when that tail, times the number of
copies, is at most alpha (:func:`trace_violation`): each record accuses an innocent copy with
probability at most alpha.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable

from sqlalchemy import select

from omlkit.protocol.ledger import CopyRow, ModelRow
from omlkit.protocol.messages import CopyRegistration, TracedCopy
from omlkit.protocol.refusals import Conflict
from omlkit.verification.ownership import poisson_binomial_sf


def store_copies(session, model: ModelRow, registration: CopyRegistration) -> None:  # noqa: ANN001
    """Record each copy's pool ids, the rate, and a secret trace order drawn from the platform's
    randomness (no block reserved yet)."""
    order = list(registration.pool)
    secrets.SystemRandom().shuffle(order)
    model.copy_rate, model.trace_order, model.trace_pos, model.trace_pending = (
        registration.rate, json.dumps(order), 0, 0)
    session.add_all([CopyRow(model_id=model.model_id, name=c.name, host=c.host,
                             fingerprint_ids=json.dumps(sorted(set(c.fingerprint_ids))))
                     for c in registration.copies])


def pending_block(model: ModelRow) -> list[int]:
    """The reserved block's pool ids (empty when none is reserved or the model has no copies)."""
    if not model.trace_order or not model.trace_pending:
        return []
    return json.loads(model.trace_order)[model.trace_pos : model.trace_pos + model.trace_pending]


def reserve_block(model: ModelRow, n: int) -> list[int]:
    """Reserve the next ``n`` pool keys of the trace order and return their ids; a block already reserved
    is returned as it is (it must be revealed first). Conflict for a model without copies or with every
    pool key spent."""
    if not model.trace_order:
        raise Conflict(f"model {model.model_id!r} was not registered as per-host copies")
    if model.trace_pending:
        return pending_block(model)
    left = len(json.loads(model.trace_order)) - model.trace_pos
    if left <= 0:
        raise Conflict(f"model {model.model_id!r}: every pool key is spent")
    model.trace_pending = min(n, left)
    return pending_block(model)


def check_block(model: ModelRow, revealed: Iterable[int]) -> list[int]:
    """The pool ids among ``revealed``, which must be exactly the reserved block (or none, for a model
    without copies or a submission of core keys only); Conflict otherwise."""
    if not model.trace_order:
        return []
    pool = set(json.loads(model.trace_order))
    asked = {i for i in revealed if i in pool}
    block = pending_block(model)
    if asked and asked != set(block):
        raise Conflict(f"model {model.model_id!r} is distributed as per-host copies: pool keys are revealed "
                       "only as the trace block the platform reserved (POST /v1/models/{id}/trace-block)")
    return block if asked else []


def spend_block(model: ModelRow, block: list[int]) -> None:
    """Move the trace order past a block that was just revealed."""
    if block:
        model.trace_pos, model.trace_pending = model.trace_pos + len(block), 0


def trace_violation(session, model: ModelRow, block: list[int], matched: Iterable[int],  # noqa: ANN001
                    alpha: float) -> list[TracedCopy] | None:
    """The copies a violation traces to, most significant first (None: no trace block was revealed)."""
    if not block:
        return None
    hits = set(block) & set(matched)
    copies = list(session.scalars(select(CopyRow).where(CopyRow.model_id == model.model_id)))
    traced = []
    for copy in copies:
        held = len(hits & set(json.loads(copy.fingerprint_ids)))
        p = min(1.0, len(copies) * poisson_binomial_sf([model.copy_rate] * len(hits), held))
        if held and p <= alpha:
            traced.append(TracedCopy(name=copy.name, host=copy.host, held=held, matched=len(hits), p_value=p))
    return sorted(traced, key=lambda t: t.p_value)
