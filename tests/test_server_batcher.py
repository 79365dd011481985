"""The batcher on its own, with a recording reranker whose scores are a closed form (the length of the
document), so that splitting, merging, ordering, listwise grouping, draining and failures can be
checked exactly."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.server.batcher import READY, STOPPED, Batcher, NotAccepting, QueueFull


class Recording(Reranker):
    """score = len(document); records the pairs of every model call; can fail or block on demand."""

    kind = "recording"

    def __init__(self, score_type: str = "relevance"):
        super().__init__(
            RerankerConfig(model="rec", kind="recording", device="cpu", dtype="float32")
        )
        self.score_type = score_type
        self.calls: list[list[tuple[str, str]]] = []
        self.fail_on: str | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.seconds_per_pair = 0.0

    def _load(self) -> None:
        pass

    def _score(self, pairs):
        self.entered.set()
        self.gate.wait(30)
        self.calls.append(list(pairs))
        time.sleep(self.seconds_per_pair * len(pairs))
        if self.fail_on is not None and any(d == self.fail_on for _, d in pairs):
            raise RuntimeError("model exploded")
        n = len(pairs)
        return PairScores(
            np.array([len(d) for _, d in pairs], dtype=np.float32),
            np.zeros(n, dtype=bool),
            np.full(n, 7, dtype=np.int32),
        )


def started(reranker: Recording, **kw) -> Batcher:
    b = Batcher("rec", lambda: reranker, **kw)
    b.start()
    for _ in range(3000):
        if b.state == READY:
            break
        threading.Event().wait(0.01)
    assert b.state == READY
    reranker.calls.clear()  # forget the warm-up call
    return b


def docs(prefix: str, n: int) -> list[str]:
    return [prefix * (i + 1) for i in range(n)]


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.005)


async def hold_model(b: Batcher, rec: Recording, pairs=(("a", "1"),)) -> asyncio.Future:
    """Submit ``pairs`` and wait until the model is inside that call, held at the gate."""
    rec.gate.clear()
    rec.entered.clear()
    job = asyncio.ensure_future(b.submit(list(pairs)))
    await until(rec.entered.is_set)
    return job


def test_large_job_is_split_and_reassembled_in_order():
    rec = Recording()
    b = started(rec, max_batch_pairs=4, max_wait=0)
    pairs = [("q", d) for d in docs("x", 10)]
    out = asyncio.run(b.submit(pairs))
    np.testing.assert_array_equal(out.scores, np.arange(1, 11, dtype=np.float32))
    assert [len(c) for c in rec.calls] == [4, 4, 2]
    assert [p for c in rec.calls for p in c] == pairs
    assert b.close(10) and b.state == STOPPED


def test_waiting_jobs_share_a_call_and_each_gets_its_own_scores():
    rec = Recording()
    b = started(rec, max_batch_pairs=100, max_wait=0)

    async def go():
        first = await hold_model(b, rec)
        rest = [asyncio.ensure_future(b.submit([("q", d) for d in docs(c, 3)])) for c in "xyz"]
        await until(lambda: b.depth == 3)
        rec.gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(go())
    assert first.scores.tolist() == [1.0]
    for out in rest:
        assert out.scores.tolist() == [1.0, 2.0, 3.0]
    assert [len(c) for c in rec.calls] == [1, 9]
    b.close(10)


def test_listwise_jobs_are_never_split_or_merged_with_the_same_query():
    rec = Recording(score_type="rank")
    b = started(rec, max_batch_pairs=4, max_wait=0)

    async def go():
        blocker = await hold_model(b, rec, [("z", "1")])
        jobs = [
            asyncio.ensure_future(b.submit([("q", d) for d in docs("a", 6)])),  # > max_batch_pairs
            asyncio.ensure_future(b.submit([("q", d) for d in docs("b", 2)])),  # same query
            asyncio.ensure_future(b.submit([("r", d) for d in docs("c", 2)])),
        ]
        await until(lambda: b.depth == 3)
        rec.gate.set()
        await blocker
        return await asyncio.gather(*jobs)

    outs = asyncio.run(go())
    assert outs[0].scores.tolist() == [1, 2, 3, 4, 5, 6]
    calls = [sorted({q for q, _ in c}) for c in rec.calls[1:]]
    assert [len(c) for c in rec.calls[1:]] == [6, 4]  # whole job; then q and r together
    assert calls == [["q"], ["q", "r"]]
    b.close(10)


def test_full_queue_raises_queue_full():
    rec = Recording()
    b = started(rec, max_queue=1, max_wait=0)

    async def go():
        busy = await hold_model(b, rec)
        queued = asyncio.ensure_future(b.submit([("a", "2")]))
        await until(lambda: b.depth == 1)
        with pytest.raises(QueueFull, match="1 requests are already waiting"):
            await b.submit([("a", "3")])
        rec.gate.set()
        return await busy, await queued

    busy, queued = asyncio.run(go())
    assert busy.scores.tolist() == [1.0] and queued.scores.tolist() == [1.0]
    b.close(10)


def test_retry_after_is_the_time_to_drain_the_queue_at_the_measured_rate():
    rec = Recording()
    b = started(rec, max_queue=1, max_wait=0, max_batch_pairs=1000)
    assert b.retry_after() == 1  # nothing measured yet
    rec.seconds_per_pair = 0.01  # at most 100 pairs/s
    asyncio.run(b.submit([("q", d) for d in docs("x", 20)]))

    async def go():
        busy = await hold_model(b, rec)
        queued = asyncio.ensure_future(b.submit([("a", "x")] * 500))
        await until(lambda: b.depth == 1)
        with pytest.raises(QueueFull) as info:
            await b.submit([("a", "3")])
        rec.seconds_per_pair = 0.0
        rec.gate.set()
        await busy, await queued
        return info.value

    full = asyncio.run(go())
    # 500 pairs wait; the model was timed at <= 100 pairs/s, so >= 5 s (capped at 60)
    assert 5 <= full.retry_after <= 60
    assert f"retry after {full.retry_after}s" in str(full)
    b.close(10)


def test_a_failing_call_fails_its_jobs_and_the_next_ones_are_served():
    rec = Recording()
    rec.fail_on = "boom"
    b = started(rec, max_wait=0)

    async def go():
        with pytest.raises(RuntimeError, match="exploded"):
            await b.submit([("q", "ok"), ("q", "boom")])
        return await b.submit([("q", "fine")])

    assert asyncio.run(go()).scores.tolist() == [4.0]
    b.close(10)


def test_close_drains_queued_jobs_then_refuses_new_ones():
    rec = Recording()
    b = started(rec, max_batch_pairs=2, max_wait=0)
    rec.gate.clear()
    rec.entered.clear()

    async def go():
        jobs = [asyncio.ensure_future(b.submit([("q", d) for d in docs("x", 3)])) for _ in range(3)]
        await until(rec.entered.is_set)
        closer = asyncio.ensure_future(asyncio.to_thread(b.close, 30))
        await until(lambda: not b.accepting)  # close() has begun: new jobs are refused
        with pytest.raises(NotAccepting, match="shutting down"):
            await b.submit([("q", "late")])
        rec.gate.set()
        assert await closer
        return await asyncio.gather(*jobs)

    for out in asyncio.run(go()):
        assert out.scores.tolist() == [1.0, 2.0, 3.0]
    assert b.state == STOPPED


def test_a_model_that_fails_to_load_is_reported():
    def factory():
        raise OSError("no weights at /nowhere")

    b = Batcher("broken", factory)
    b.start()
    b._thread.join(10)
    assert b.state == "failed" and "no weights at /nowhere" in b.error
    with pytest.raises(NotAccepting, match="failed to load: OSError"):
        asyncio.run(b.submit([("q", "d")]))


def test_a_cancelled_job_split_across_calls_is_not_scored_further():
    from winnow.server.metrics import Metrics

    rec = Recording()
    metrics = Metrics()
    b = started(rec, max_batch_pairs=4, max_wait=0, metrics=metrics)
    pairs = [("q", d) for d in docs("x", 10)]

    async def go():
        rec.gate.clear()
        rec.entered.clear()
        job = asyncio.ensure_future(b.submit(pairs))
        await until(rec.entered.is_set)  # the first 4 pairs are in the model
        job.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await job
        rec.gate.set()
        return await b.submit([("q", "after")])

    assert asyncio.run(go()).scores.tolist() == [5.0]
    assert [len(c) for c in rec.calls] == [4, 1]  # the other 6 pairs never reached the model
    text = metrics.render()[0].decode()
    assert 'winnow_cancelled_requests_total{model="rec"} 1.0' in text
    assert 'winnow_cancelled_pairs_total{model="rec"} 6.0' in text
    assert b._pending_pairs == 0
    b.close(10)


def test_a_failed_load_is_retried_with_backoff_then_reported():
    tries: list[float] = []

    def flaky():
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise OSError(f"disk busy (try {len(tries)})")
        return Recording()

    b = Batcher("flaky", flaky, load_retries=2, load_backoff=0.05)
    b.start()
    for _ in range(3000):
        if b.state != "loading":
            break
        threading.Event().wait(0.01)
    assert b.state == READY and b.load_failures == 2 and b.error == ""
    b.close(10)

    def broken():
        raise OSError("no weights at /nowhere")

    b = Batcher("broken", broken, load_retries=1, load_backoff=0.01)
    b.start()
    b._thread.join(10)
    assert b.state == "failed" and b.load_failures == 2


def test_close_interrupts_the_backoff_between_load_tries():
    def broken():
        raise OSError("no weights at /nowhere")

    b = Batcher("broken", broken, load_retries=5, load_backoff=600)
    b.start()
    for _ in range(3000):
        if b.load_failures:
            break
        threading.Event().wait(0.01)
    assert b.close(30)  # returns without waiting out the 600 s backoff
    assert b.state == "failed"
