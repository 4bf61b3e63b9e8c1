"""The ownership test: how unlikely are ``m`` matches out of ``M`` keys on a model never fingerprinted?

Each key i has a null rate p0_i — the chance a non-fingerprinted model answers it with the
fingerprint response. Matches are then independent Bernoulli(p0_i), their count X is Poisson-binomial,
and the p-value of observing m matches is P(X >= m). The verdict "owned" needs p < alpha.

p0_i is the strategy's guaranteed bound where it has one — ``1 - t`` for perinucleus responses, whose
token lies past a nucleus of mass >= t — otherwise the base model's ``response_prob`` with a floor, and
a floor alone when neither is known.

Those rates are for greedy (top-1) answers. Approximate matching (``--match rank``: the response among
the top k first tokens) matches far more often by chance: a perinucleus response sits just past the
base model's nucleus, so for k beyond the nucleus the base model itself matches. Its null rates are
therefore *calibrated* on a model never fingerprinted (:func:`calibrated_null_rates`): a key that model
matches is no evidence (p0 = 1), and every other key gets at least the one-sided Clopper–Pearson upper
bound of that model's match rate over the keys checked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from omlkit.fingerprints import Fingerprint, FingerprintSet

DEFAULT_ALPHA = 1e-9
NULL_RATE_FLOOR = 1e-3
CALIBRATION_DELTA = 1e-3  # the calibrated rate exceeds the null model's true rate with at most this chance


def null_rate(fp_set: FingerprintSet, fp: Fingerprint, floor: float = NULL_RATE_FLOOR) -> float:
    """The per-key null rate p0 used by the test (see the module docstring); always in [floor, 1]."""
    if fp_set.strategy.response == "perinucleus":
        t = float(fp_set.strategy.params.get("t", 0.8))
        return min(1.0, max(floor, 1.0 - t))
    if fp.response_prob is not None:
        return min(1.0, max(floor, float(fp.response_prob)))
    return floor


def binomial_upper_bound(hits: int, n: int, delta: float = CALIBRATION_DELTA) -> float:
    """One-sided Clopper–Pearson upper bound: the largest rate p with P(Bin(n, p) <= hits) >= delta."""
    if n <= 0 or hits >= n:
        return 1.0

    def cdf(p: float) -> float:
        logs = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(hits + 1)
        ]
        top = max(logs)
        return math.exp(top) * sum(math.exp(v - top) for v in logs)

    lo, hi = hits / n, 1.0
    for _ in range(60):  # bisection: cdf falls as p rises
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > delta else (lo, mid)
    return hi


def calibrated_null_rates(
    fp_set: FingerprintSet,
    fps: Sequence[Fingerprint],
    null_matched: set[int],
    delta: float = CALIBRATION_DELTA,
) -> list[float]:
    """Null rates of ``fps`` under approximate matching, from the ids a never-fingerprinted model matched."""
    bound = binomial_upper_bound(sum(fp.id in null_matched for fp in fps), len(fps), delta)
    return [1.0 if fp.id in null_matched else max(null_rate(fp_set, fp), bound) for fp in fps]


def poisson_binomial_sf(probs: Sequence[float], m: int) -> float:
    """P(X >= m) for X = sum of independent Bernoulli(probs[i]); exact dynamic programme, O(M^2)."""
    p = np.asarray(probs, dtype=np.float64)
    if m <= 0:
        return 1.0
    if m > len(p):
        return 0.0
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for i, pi in enumerate(p):
        # dist[k] <- dist[k] (1 - pi) + dist[k-1] pi, only over reachable k
        upto = i + 2
        shifted = np.concatenate(([0.0], dist[: upto - 1]))
        dist[:upto] = dist[:upto] * (1.0 - pi) + shifted * pi
    return float(min(1.0, max(0.0, dist[m:].sum())))


@dataclass(frozen=True)
class OwnershipVerdict:
    """Outcome of the test: counts, p-value, threshold, and whether ownership is claimed."""

    checked: int
    matched: int
    p_value: float
    alpha: float

    @property
    def owned(self) -> bool:
        """True only when the p-value is below alpha (and at least one key matched)."""
        return self.matched > 0 and self.p_value < self.alpha

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {"checked": self.checked, "matched": self.matched, "p_value": self.p_value,
                "alpha": self.alpha, "verdict": "owned" if self.owned else "not owned"}


def ownership_test(
    null_rates: Sequence[float], matched: int, alpha: float = DEFAULT_ALPHA
) -> OwnershipVerdict:
    """Run the test for ``matched`` matches over keys with the given null rates."""
    return OwnershipVerdict(len(null_rates), matched, poisson_binomial_sf(null_rates, matched), alpha)
