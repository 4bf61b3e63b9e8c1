"""``FingerprintTrainer``: a thin ``transformers.Trainer`` that adds each regularizer's loss term.

The language-model loss is the stock one (cross-entropy on the labelled positions: response + EOS), or
``compute_loss_func`` when given (``--confidence-cap``: :mod:`omlkit.insertion.losses`);
each configured regularizer's term is added in :meth:`compute_loss` and its running mean is reported
by :meth:`log` as ``reg/<name>``. Step-wise regularizers (model averaging) are callbacks, not loss terms.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import Trainer

from omlkit.insertion.regularizers.base import TrainBatch


class FingerprintTrainer(Trainer):
    """A Trainer whose loss is the LM loss plus every regularizer's ``loss_term``."""

    def __init__(self, *args, regularizers=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.regularizers = list(regularizers)
        self._terms: dict[str, torch.Tensor] = {}
        self._term_counts: dict[str, int] = defaultdict(int)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """LM loss + Σ regularizer terms; each term is recorded for :meth:`log`."""
        labels = inputs.get("labels")  # the stock compute_loss pops them when compute_loss_func is set
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        if self.regularizers and model.training:
            bare = self.accelerator.unwrap_model(model)
            batch = TrainBatch(inputs["input_ids"], inputs.get("attention_mask"), labels,
                               getattr(outputs, "logits", None))
            # the stock LM loss is already normalised over the accumulated batch in that case, so a
            # per-micro-batch term must be divided by the number of micro-batches to keep its weight
            scaled = ((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                      or self.compute_loss_func is not None)
            for reg in self.regularizers:
                term = reg.loss_term(bare, batch)
                if term is None:
                    continue
                name = f"reg/{reg.name}"
                self._terms[name] = self._terms.get(name, 0) + term.detach().float()
                self._term_counts[name] += 1
                loss = loss + (term / self.current_gradient_accumulation_steps if scaled else term)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean of each regularizer term since the last log, then logs as usual."""
        if "loss" in logs:
            for name, total in self._terms.items():
                logs[name] = round(float(total) / max(self._term_counts[name], 1), 6)
            self._terms.clear()
            self._term_counts.clear()
        super().log(logs, start_time)
