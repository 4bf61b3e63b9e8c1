"""Micro-batching for ``oml serve``: concurrent requests decoded together in one batched greedy pass.

Each HTTP request thread calls :meth:`DecodeBatcher.generate` and blocks. One worker thread takes the
oldest waiting request, gathers every other waiting request with the same ``(max_tokens, top_k)`` —
up to ``max_batch`` prompts, waiting at most ``max_wait_s`` for more to arrive — and decodes them in one
``generate_detailed`` call. Requests arriving while a batch decodes wait for the next one, so under
load batches fill by themselves and an idle server adds at most ``max_wait_s`` of latency. Only
requests with identical decoding settings share a batch, so each answer (and each refusal, such as a
prompt too long for the context) is what that request alone would get.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Job:
    prompts: list[list[int]]
    max_tokens: int
    top_k: int
    future: Future = field(default_factory=Future)

    @property
    def settings(self) -> tuple[int, int]:
        return self.max_tokens, self.top_k


@dataclass
class BatchStats:
    """What the worker has done: batches decoded, requests and prompts served, the largest batch."""

    batches: int = 0
    requests: int = 0
    prompts: int = 0
    largest: int = 0


class DecodeBatcher:
    """Serialises access to a backend's ``generate_detailed`` and batches concurrent callers."""

    def __init__(self, backend: Any, max_batch: int = 32, max_wait_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._waiting: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="omlkit-decode-batcher", daemon=True)
        self._worker.start()

    def generate(self, prompts: list[list[int]], max_tokens: int, top_k: int = 0) -> tuple[list, list]:
        """``backend.generate_detailed(prompts, max_tokens, top_k)``, possibly decoded beside other
        callers' prompts; blocks until done and re-raises the backend's exception, if any."""
        job = _Job([list(p) for p in prompts], max_tokens, top_k)
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode batcher is closed")
            self._waiting.append(job)
            self._cond.notify_all()
        return job.future.result()

    def close(self) -> None:
        """Stop the worker after the batch in progress; waiting callers get RuntimeError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=30)

    def _take_batch(self) -> list[_Job] | None:
        """The next batch: the oldest job and the waiting jobs that share its settings (None: closed)."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                for job in self._waiting:
                    job.future.set_exception(RuntimeError("the decode batcher is closed"))
                self._waiting.clear()
                return None
            deadline = time.monotonic() + self.max_wait_s
            while True:
                first = self._waiting[0]
                batch, size = [], 0
                for job in self._waiting:
                    fits = not batch or size + len(job.prompts) <= self.max_batch
                    if job.settings == first.settings and fits:
                        batch.append(job)
                        size += len(job.prompts)
                left = deadline - time.monotonic()
                if size >= self.max_batch or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            for job in batch:
                self._waiting.remove(job)
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            prompts = [p for job in batch for p in job.prompts]
            try:
                max_tokens, top_k = batch[0].settings
                gens, errors = self.backend.generate_detailed(prompts, max_tokens, top_k=top_k)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch
                for job in batch:
                    job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.prompts += len(prompts)
            self.stats.largest = max(self.stats.largest, len(prompts))
            start = 0
            for job in batch:
                end = start + len(job.prompts)
                job.future.set_result((gens[start:end], errors[start:end]))
                start = end
