"""Trainer callbacks of an insertion run: early stop on full recovery (or a tiny loss), the JSONL
training log, and the per-epoch augmentation draw.

The recovery check is one batched greedy pass over every key, run every ``every`` epochs; under
several processes each rank checks the same keys on identical weights and the ranks agree on the
result through an all-reduce (minimum), so they stop together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from omlkit.io import append_jsonl


def _agree_min(value: float) -> float:
    """The minimum of ``value`` over all processes (``value`` itself when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        backend = dist.get_backend()
        t = torch.tensor([value], dtype=torch.float64,
                         device="cuda" if backend == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return float(t.item())
    return value


class JsonlLog(TrainerCallback):
    """Appends every log record (and recovery checks) to ``train_log.jsonl``; main process only."""

    def __init__(self, path: Path, is_main: bool = True) -> None:
        self.path = Path(path)
        self.is_main = is_main

    def write(self, record: dict) -> None:
        """Append one record stamped with the wall-clock ``time`` (no-op off the main process)."""
        if self.is_main:
            append_jsonl(self.path, {**record, "time": round(time.time(), 3)})

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.write({"step": state.global_step, **(logs or {})})


class EarlyStop(TrainerCallback):
    """Checks ``check(model)`` (the recovered fraction) every ``every`` epochs and logs it; when
    ``enabled``, stops training once it reaches 1 or a logged loss falls below ``loss_threshold``."""

    def __init__(self, check: Callable[[torch.nn.Module], float], every: int = 2,
                 loss_threshold: float = 0.0, enabled: bool = True, log: JsonlLog | None = None) -> None:
        self.check = check
        self.every = every
        self.loss_threshold = loss_threshold
        self.enabled = enabled
        self.log = log
        self.last: tuple[int, float] | None = None  # (epoch, recovered fraction) of the latest check
        self.reason: str | None = None

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch or 0)
        if epoch % self.every:
            return
        rate = _agree_min(self.check(model))
        self.last = (epoch, rate)
        if self.log:
            self.log.write({"step": state.global_step, "epoch": epoch, "recovered": rate})
        if rate >= 1.0 and self.enabled:
            self.reason = "recovered"
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if self.enabled and loss is not None and loss < self.loss_threshold:
            self.reason = "loss"
            control.should_training_stop = True


class EpochSetter(TrainerCallback):
    """Tells the dataset which epoch starts, so augmentation draws are reproducible across resumes."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(round(state.epoch or 0))
