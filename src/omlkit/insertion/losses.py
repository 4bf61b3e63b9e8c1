"""Training losses for insertion other than the model's stock cross-entropy.

:func:`capped_cross_entropy` is the cross-entropy on the labelled positions (response, and EOS or the
boundary token when trained) with no loss on a token the model has already learnt: one it predicts with
probability of at least ``cap`` (``--confidence-cap``), or whose logit leads every other token's by at
least ``margin`` nats (``--margin-cap``). A fingerprint that greedy decoding recovers with that much room
stops pulling the weights, so easy fingerprints are not trained further while hard ones catch up. Any
``cap`` above 0.5 and any positive ``margin`` keep the token the argmax, which is all greedy recovery
needs; a margin asks for the least change that still leaves room, a cap for a fixed confidence however
flat the rest of the distribution is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from omlkit.insertion.dataset import IGNORE


def logit_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits[i, target[i]]`` minus the largest other logit of row ``i`` (rows [N, V], targets [N] ≥ 0)."""
    own = logits.gather(-1, target[:, None])[:, 0]
    others = logits.scatter(-1, target[:, None], float("-inf"))
    return own - others.max(dim=-1).values


def capped_cross_entropy(cap: float = 0.0, margin: float = 0.0) -> Callable[..., torch.Tensor]:
    """A ``Trainer(compute_loss_func=...)`` loss: shifted token cross-entropy, zero on a labelled token
    where p(label) ≥ ``cap`` (when ``cap`` > 0) or where the label's logit leads every other by at least
    ``margin`` (when ``margin`` > 0).

    The sum is divided by ``num_items_in_batch`` (every labelled token of the accumulated batch, capped
    or not) when the Trainer gives it, else by this micro-batch's labelled tokens, so the scale matches
    the stock loss. ValueError unless ``cap`` is in [0, 1), ``margin`` ≥ 0 and one of them is set.
    """
    if not 0.0 <= cap < 1.0 or margin < 0.0 or not (cap or margin):
        raise ValueError(f"need a cap in (0, 1) or a margin > 0, got cap={cap}, margin={margin}")
    threshold = -math.log(cap) if cap else -math.inf  # p >= cap  <=>  CE <= -log(cap)

    def loss_fn(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
        target = labels[:, 1:].to(logits.device).reshape(-1)
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
        labelled = target != IGNORE
        learnt = ce.detach() <= threshold
        if margin:
            rows = labelled.nonzero()[:, 0]  # the margin of the labelled positions only
            with torch.no_grad():
                learnt[rows] |= logit_margin(logits[rows], target[rows]) >= margin
        total = (ce * (labelled & ~learnt)).sum()
        count = num_items_in_batch if num_items_in_batch is not None else labelled.sum()
        return total / torch.as_tensor(count, device=total.device).clamp(min=1)

    return loss_fn
