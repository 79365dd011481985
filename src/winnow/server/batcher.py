"""Dynamic batching: pairs from concurrent requests share model calls, on one worker thread per model.

Requests put a job (their (query, document) pairs) on a bounded queue and await an asyncio future.
The model's worker thread takes pairs from the front of the queue, across jobs, until it has
``max_batch_pairs`` of them or the oldest waiting job has waited ``max_wait`` seconds, and scores them
with one ``reranker.score_pairs_detailed`` call (the engine length-sorts them and cuts token-budget
batches). A job larger than one call is split across calls (except for listwise rerankers, whose
jobs go whole); its future is resolved, through
``loop.call_soon_threadsafe``, when its last pair is scored. Inference never runs on the event loop.

The same thread first loads and warms the model, so a server answers ``/health`` at once and
``/ready`` tells when each model is usable. A load that fails is retried ``load_retries`` times,
``load_backoff`` seconds apart, doubling (an out-of-memory error is not retried); when the last try
fails and a ``fallback`` factory was given, the fallback model loads and serves under the same name,
with the primary's error kept in ``primary_error``.

A request whose client went away cancels its ``submit``: its job leaves the queue at once (or, when
part of it is already in a model call, the rest is never handed to the model), and the pairs left
unscored are counted in ``winnow_cancelled_pairs``. Hand-written rather than taken from a library because the
batching has to follow the reranker contract (one ``score_pairs_detailed`` per call, token budgets in
the engine); infinity's and TEI's batchers live inside their own servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from winnow.errors import ConfigError, WinnowError
from winnow.rerankers.base import PairScores, Reranker

if TYPE_CHECKING:
    from winnow.server.metrics import Metrics

logger = logging.getLogger(__name__)

LOADING, READY, FAILED, STOPPED = "loading", "ready", "failed", "stopped"


class QueueFull(WinnowError):
    """The model's queue holds ``max_queue`` requests already; the client should retry later."""

    def __init__(self, model: str, max_queue: int, retry_after: int = 1):
        self.model = model
        self.max_queue = max_queue
        self.retry_after = retry_after
        super().__init__(
            f"model {model!r} is overloaded: {max_queue} requests are already waiting; "
            f"retry after {retry_after}s"
        )


class ModelCallFailed(WinnowError, RuntimeError):
    """A model call raised; the server answers a plain 500 (the cause is in the log, not the answer)."""


class NotAccepting(WinnowError):
    """The model is not loaded yet, failed to load, or the server is shutting down."""

    def __init__(self, model: str, state: str, reason: str = ""):
        self.model = model
        self.state = state
        why = {
            LOADING: "is still loading",
            FAILED: "failed to load",
            STOPPED: "is shutting down",
        }.get(state, state)
        super().__init__(f"model {model!r} {why}" + (f": {reason}" if reason else ""))


@dataclass(eq=False)
class _Job:
    pairs: list[tuple[str, str]]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float
    scores: np.ndarray = field(init=False)
    truncated: np.ndarray = field(init=False)
    num_tokens: np.ndarray = field(init=False)
    taken: int = 0  # pairs handed to the model so far
    done: int = 0  # pairs scored so far
    abandoned: bool = False  # the caller went away or an earlier part failed

    def __post_init__(self) -> None:
        n = len(self.pairs)
        self.scores = np.empty(n, dtype=np.float32)
        self.truncated = np.zeros(n, dtype=bool)
        self.num_tokens = np.zeros(n, dtype=np.int32)

    def resolve(self, value: PairScores | None = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if not self.future.done():
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(settle)


class Batcher:
    """Queue and worker thread for one model.

    Args:
        name: the name clients use for the model (for errors and metrics).
        factory: builds the reranker (``winnow.load_reranker``); called on the worker thread.
        max_batch_pairs: most pairs per ``score_pairs_detailed`` call.
        max_wait: seconds the oldest queued job may wait for company before its batch runs.
        max_queue: most jobs waiting (not yet fully handed to the model); more get :class:`QueueFull`.
        load_retries: how many more times a failed load is tried (0: once only).
        load_backoff: seconds before the first retry; each further retry waits twice as long.
        fallback: builds the model to serve instead when ``factory`` still fails after its retries
            (or runs out of device memory; then ``factory.release()``, if it has one, frees the
            primary's memory first); ``fallback_name`` is what it is called in ``/ready``.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[], Reranker],
        *,
        max_batch_pairs: int = 512,
        max_wait: float = 0.003,
        max_queue: int = 256,
        metrics: Metrics | None = None,
        load_retries: int = 0,
        load_backoff: float = 1.0,
        fallback: Callable[[], Reranker] | None = None,
        fallback_name: str | None = None,
    ):
        self.name = name
        self.factory = factory
        self.max_batch_pairs = max_batch_pairs
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.metrics = metrics
        self.load_retries = load_retries
        self.load_backoff = load_backoff
        self.fallback = fallback
        self.fallback_name = fallback_name
        self.reranker: Reranker | None = None
        self.state = LOADING
        self.error = ""
        #: tries of the model's load that failed so far (the fallback's included)
        self.load_failures = 0
        #: the fallback model is serving under this name (``primary_error`` says why)
        self.serving_fallback = False
        self.primary_error = ""
        self._primary_oom = False
        self.warmup_seconds: float | None = None
        self._queue: deque[_Job] = deque()
        self._pending_pairs = 0
        self._pairs_per_second: float | None = None  # moving average of the model's throughput
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(
            target=self._main, name=f"winnow-batcher-{name}", daemon=True
        )

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting jobs, finish the queued ones, stop the worker. True if it stopped in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.ident is not None and self._thread.is_alive():
            self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped and self.state == READY:
            self.state = STOPPED
        return stopped

    @property
    def accepting(self) -> bool:
        """New jobs are taken: the model is ready and :meth:`close` has not been called."""
        return self.state == READY and not self._closing

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (not yet fully handed to it)."""
        return len(self._queue)

    def retry_after(self) -> int:
        """Whole seconds until the queue has drained, at the throughput measured so far (1 to 60).

        The pairs waiting divided by an exponential moving average of the pairs per second of recent
        model calls; 1 before any call was timed.
        """
        rate = self._pairs_per_second
        if not rate:
            return 1
        return int(min(60, max(1, math.ceil(self._pending_pairs / rate))))

    # -- the asyncio side ----------------------------------------------------------------------
    async def submit(self, pairs: list[tuple[str, str]]) -> PairScores:
        """Score ``pairs`` (already validated); raises QueueFull or NotAccepting."""
        if self.state != READY or self._closing:
            state = STOPPED if self._closing else self.state
            raise NotAccepting(self.name, state, self.error if state == FAILED else "")
        if not pairs:
            return PairScores.empty()
        loop = asyncio.get_running_loop()
        job = _Job(pairs, loop.create_future(), loop, time.monotonic())
        with self._cond:
            if self._closing:
                raise NotAccepting(self.name, STOPPED)
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self.name, self.max_queue, self.retry_after())
            self._queue.append(job)
            self._pending_pairs += len(pairs)
            self._report_depth()
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            self.cancel(job)
            raise

    async def probe(self, pairs: list[tuple[str, str]], timeout: float) -> PairScores:
        """Score ``pairs`` in the model's next call, ahead of waiting requests (a health check).

        It goes through the worker thread like a request, so it never runs at the same time as a
        batch, but it skips the line and the ``max_queue`` limit. Raises NotAccepting when the
        model is not serving, TimeoutError when no answer came within ``timeout`` seconds.
        """
        if self.state != READY or self._closing:
            state = STOPPED if self._closing else self.state
            raise NotAccepting(self.name, state, self.error if state == FAILED else "")
        if not pairs:
            return PairScores.empty()
        loop = asyncio.get_running_loop()
        job = _Job(list(pairs), loop.create_future(), loop, time.monotonic())
        with self._cond:
            self._queue.appendleft(job)
            self._pending_pairs += len(job.pairs)
            self._cond.notify()
        try:
            return await asyncio.wait_for(job.future, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            job.abandoned = True  # the worker skips it if it has not started it
            raise

    def cancel(self, job: _Job) -> None:
        """Forget ``job``: out of the queue now, and its pairs not yet handed out are never scored."""
        with self._cond:
            if job.abandoned:
                return
            job.abandoned = True
            unscored = len(job.pairs) - job.taken
            if job.taken == 0:
                with contextlib.suppress(ValueError):
                    self._queue.remove(job)
                job.taken = len(job.pairs)
                self._pending_pairs -= unscored
                self._report_depth()
            # else: it is at the front of the queue, and _next_batch drops the rest of it
        if self.metrics is not None:
            self.metrics.cancelled_requests.labels(model=self.name).inc()
            self.metrics.cancelled_pairs.labels(model=self.name).inc(unscored)

    # -- the worker thread ---------------------------------------------------------------------
    def _main(self) -> None:
        if not self._load(self.factory, self.name):
            if self.fallback is None or self._closing:
                self.state = FAILED
                return
            self.primary_error = self.error
            release = getattr(self.factory, "release", None)
            if release is not None and self._primary_oom:
                try:
                    release()  # give the device memory back before the fallback loads
                except Exception:
                    logger.exception("could not release the memory of model %r", self.name)
            logger.warning(
                "model %r failed to load; loading its fallback %s", self.name, self.fallback_name
            )
            if not self._load(self.fallback, f"{self.name} (fallback {self.fallback_name})"):
                self.error = f"{self.primary_error}; fallback {self.fallback_name}: {self.error}"
                self.state = FAILED
                return
            self.serving_fallback = True
        self.state = READY
        logger.info("model %r ready (warm-up %.2fs)", self.name, self.warmup_seconds)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _load(self, factory: Callable[[], Reranker], what: str) -> bool:
        """Build and warm up a model, retrying with backoff; True when it is ready to serve."""
        for attempt in range(self.load_retries + 1):
            try:
                reranker = factory()
                self.warmup_seconds = reranker.warmup()
            except Exception as exc:
                self.load_failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                # bad settings (ConfigError) or a full device will not pass on a second try
                self._primary_oom = _is_oom(exc)
                if (
                    attempt == self.load_retries
                    or isinstance(exc, ConfigError)
                    or self._primary_oom
                ):
                    logger.error("model %r failed to load", what, exc_info=exc)
                    return False
                wait = self.load_backoff * 2**attempt
                logger.warning(
                    "model %r failed to load (try %d of %d); retrying in %.1fs",
                    what,
                    attempt + 1,
                    self.load_retries + 1,
                    wait,
                    exc_info=exc,
                )
                with self._cond:
                    if self._cond.wait_for(lambda: self._closing, wait):
                        return False
                continue
            self.reranker = reranker
            self.error = ""
            return True
        return False

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for work and take up to ``max_batch_pairs`` pairs; None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].enqueued + self.max_wait
            while self._pending_pairs < self.max_batch_pairs and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[tuple[_Job, int, int]] = []
            room = self.max_batch_pairs
            # Listwise rerankers rank a query's documents as one list: their jobs are never split,
            # and two jobs with the same query never share a call (the lists would merge).
            whole = self.reranker.score_type == "rank"
            batch_queries: set[str] = set()
            while self._queue and room > 0:
                job = self._queue[0]
                if job.abandoned:
                    self._drop_front(job)
                    continue
                if whole:
                    queries = {q for q, _ in job.pairs}
                    if batch and (len(job.pairs) > room or queries & batch_queries):
                        break
                    batch_queries |= queries
                    room = max(room, len(job.pairs))
                take = min(room, len(job.pairs) - job.taken)
                batch.append((job, job.taken, job.taken + take))
                job.taken += take
                room -= take
                self._pending_pairs -= take
                if job.taken == len(job.pairs):
                    self._queue.popleft()
            self._report_depth()
            return batch

    def _drop_front(self, job: _Job) -> None:
        self._queue.popleft()
        self._pending_pairs -= len(job.pairs) - job.taken
        job.taken = len(job.pairs)

    def _run(self, batch: list[tuple[_Job, int, int]]) -> None:
        pairs = [p for job, a, b in batch for p in job.pairs[a:b]]
        started = time.perf_counter()
        try:
            scored = self.reranker.score_pairs_detailed(pairs)
        except Exception as exc:
            logger.exception("model %r failed on a batch of %d pairs", self.name, len(pairs))
            error = ModelCallFailed(f"model {self.name!r} failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            with self._cond:
                for job, _, _ in batch:
                    if not job.abandoned:
                        job.abandoned = True
                        job.resolve(error=error)
            return
        seconds = time.perf_counter() - started
        if seconds > 0:
            rate = len(pairs) / seconds
            old = self._pairs_per_second
            self._pairs_per_second = rate if old is None else 0.8 * old + 0.2 * rate
        if self.metrics is not None:
            self.metrics.observe_batch(self.name, len(pairs), int(scored.truncated.sum()), seconds)
        offset = 0
        for job, a, b in batch:
            n = b - a
            job.scores[a:b] = scored.scores[offset : offset + n]
            job.truncated[a:b] = scored.truncated[offset : offset + n]
            job.num_tokens[a:b] = scored.num_tokens[offset : offset + n]
            offset += n
            job.done += n
            if job.done == len(job.pairs) and not job.abandoned:
                job.resolve(PairScores(job.scores, job.truncated, job.num_tokens))

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(model=self.name).set(len(self._queue))


def _is_oom(exc: BaseException) -> bool:
    """An out-of-memory error (not worth retrying: the fallback, if any, is tried instead).

    The load path wraps what went wrong (``ModelLoadError`` naming the model, a failed deep
    warm-up), so the causes it was raised from are looked at too.
    """
    try:
        from winnow.rerankers.devices import is_oom
    except ImportError:  # no torch: no device memory to run out of
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        if is_oom(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
