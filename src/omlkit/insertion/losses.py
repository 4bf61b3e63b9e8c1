"""Training losses for insertion other than the model's stock cross-entropy.

:func:`capped_cross_entropy` is the cross-entropy on the labelled positions (response, and EOS or the
boundary token when trained) with no loss on a token the model already predicts with probability of at
least ``cap``: a fingerprint that greedy decoding recovers with margin stops pulling the weights, so
easy fingerprints are not trained further while hard ones catch up. Any ``cap`` above 0.5 keeps the
token the argmax, which is all greedy recovery needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from omlkit.insertion.dataset import IGNORE


def capped_cross_entropy(cap: float) -> Callable[..., torch.Tensor]:
    """A ``Trainer(compute_loss_func=...)`` loss: shifted token cross-entropy, zero where p(label) ≥ cap.

    The sum is divided by ``num_items_in_batch`` (every labelled token of the accumulated batch, capped
    or not) when the Trainer gives it, else by this micro-batch's labelled tokens, so the scale matches
    the stock loss.
    """
    if not 0.0 < cap < 1.0:
        raise ValueError(f"cap must be in (0, 1), got {cap}")
    threshold = -math.log(cap)  # p >= cap  <=>  CE <= -log(cap)

    def loss_fn(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits[:, :-1, :].float()
        target = labels[:, 1:].to(logits.device)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                             ignore_index=IGNORE, reduction="none")
        keep = (target.reshape(-1) != IGNORE) & (ce.detach() > threshold)
        total = (ce * keep).sum()
        count = num_items_in_batch if num_items_in_batch is not None else (target != IGNORE).sum()
        return total / torch.as_tensor(count, device=total.device).clamp(min=1)

    return loss_fn
