"""``oml serve``'s micro-batching: concurrent requests share one decode, each gets its own answer."""

from __future__ import annotations

import threading
import time

import pytest

from omlkit.verification.batching import DecodeBatcher


class RecordingBackend:
    """Answers prompt p with [sum(p) + max_tokens]; the first call blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []  # (prompts, max_tokens, top_k)
        self.release = threading.Event()
        self.entered = threading.Event()

    def generate_detailed(self, prompts, max_tokens, top_k=0):
        self.calls.append((len(prompts), max_tokens, top_k))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return [[sum(p) + max_tokens] for p in prompts], [None] * len(prompts)


def _submit_all(batcher, jobs):
    """Run each (prompts, max_tokens, top_k) job in its own thread; results in job order."""
    results: list = [None] * len(jobs)

    def one(i, job):
        results[i] = batcher.generate(*job)

    threads = [threading.Thread(target=one, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    return threads, results


def _wait_queued(batcher, n):
    deadline = time.monotonic() + 10
    while len(batcher._waiting) < n:
        assert time.monotonic() < deadline, "jobs never queued"
        time.sleep(0.001)


def test_requests_waiting_during_a_decode_share_the_next_batch():
    backend = RecordingBackend()
    batcher = DecodeBatcher(backend, max_batch=64, max_wait_s=0.0)
    first, first_result = _submit_all(batcher, [([[1]], 4, 0)])
    assert backend.entered.wait(10)
    jobs = [([[i], [i, 1]], 4, 0) for i in range(10)]
    threads, results = _submit_all(batcher, jobs)
    _wait_queued(batcher, len(jobs))
    backend.release.set()
    for t in first + threads:
        t.join(10)
    assert first_result[0] == ([[5]], [None])
    for (prompts, mt, _), (gens, errors) in zip(jobs, results, strict=True):
        assert gens == [[sum(p) + mt] for p in prompts] and errors == [None, None]
    assert backend.calls == [(1, 4, 0), (20, 4, 0)]
    assert batcher.stats.batches == 2 and batcher.stats.requests == 11 and batcher.stats.largest == 20
    batcher.close()


def test_batches_respect_max_batch_and_never_mix_settings():
    backend = RecordingBackend()
    batcher = DecodeBatcher(backend, max_batch=4, max_wait_s=0.0)
    first, _ = _submit_all(batcher, [([[0]], 1, 0)])
    assert backend.entered.wait(10)
    jobs = [([[i]], 3 if i % 2 else 5, 0) for i in range(10)] + [([[7]], 3, 2), ([[1]] * 6, 5, 0)]
    threads, results = _submit_all(batcher, jobs)
    _wait_queued(batcher, len(jobs))
    backend.release.set()
    for t in first + threads:
        t.join(10)
    for (prompts, mt, _), (gens, _) in zip(jobs, results, strict=True):
        assert gens == [[sum(p) + mt] for p in prompts]
    later = backend.calls[1:]
    assert sum(n for n, _, _ in later) == sum(len(j[0]) for j in jobs)
    # a batch is one setting; only a single request larger than max_batch may exceed it
    assert all(n <= 4 or (n, mt) == (6, 5) for n, mt, _ in later)
    assert sorted(later) == sorted([(4, 3, 0), (1, 3, 0), (4, 5, 0), (1, 5, 0), (1, 3, 2), (6, 5, 0)])
    batcher.close()


def test_a_backend_error_reaches_every_caller_of_that_batch_and_the_worker_survives():
    class Failing:
        fail = True

        def generate_detailed(self, prompts, max_tokens, top_k=0):
            if self.fail:
                raise RuntimeError("out of memory")
            return [["ok"]] * len(prompts), [None] * len(prompts)

    backend = Failing()
    batcher = DecodeBatcher(backend)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.generate([[1]], 2)
    backend.fail = False
    assert batcher.generate([[1]], 2) == ([["ok"]], [None])
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.generate([[1]], 2)


def test_concurrent_requests_on_a_real_model_get_their_solo_answers(micro_model):
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(micro_model), batch_size=32)
    prompts = [backend.encode(t) for t in ("The", "A function that", "Return the value of", "If the")]
    solo = {tuple(p): backend.generate_detailed([p], 6, top_k=2)[0][0] for p in prompts}
    batcher = DecodeBatcher(backend, max_batch=32, max_wait_s=0.05)
    jobs = [([p], 6, 2) for p in prompts * 4]
    threads, results = _submit_all(batcher, jobs)
    for t in threads:
        t.join(60)
    for (ps, _, _), (gens, errors) in zip(jobs, results, strict=True):
        expect = solo[tuple(ps[0])]
        assert errors == [None] and gens[0].ids == expect.ids and gens[0].finished == expect.finished
        assert [t for t, _ in gens[0].top[0]] == [t for t, _ in expect.top[0]]
    assert batcher.stats.batches < len(jobs)  # at least two requests shared a decode
    batcher.close()
