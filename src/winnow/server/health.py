"""Deep health checks: a real inference, at start-up, every ``health_interval`` seconds, on demand.

A check scores a small batch of real-looking pairs and checks each score is a finite number. At
start-up (``warmup_samples`` > 0) it runs on the model's worker thread before the model serves, at
the largest batch shape the server will hand the model: ``min(warmup_samples, max_batch_pairs)``
pairs, each filling ``max_length`` tokens. Later checks (periodic, or ``GET /ready?deep=1``) go
through the model's batcher (:meth:`Batcher.probe`), so they never run at the same time as a
request batch, and give up after ``health_timeout`` seconds.

Every text carries the check's number, so no memo or cache can answer for the model (the
bi-encoder remembers embeddings). Concurrent requests for a check of one model share the one running.
The last result of each model is what ``/ready`` reports; a failed one makes ``/ready`` 503.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from winnow.rerankers.base import Reranker
    from winnow.server.batcher import Batcher
    from winnow.server.config import ServerConfig

logger = logging.getLogger(__name__)

#: Pairs, and words per document, of a periodic or on-demand check (small: it shares the model).
PROBE_PAIRS = 2
PROBE_WORDS = 48

# Common English words: a document of N words is at least N tokens in any tokenizer.
_WORDS = [
    "the",
    "of",
    "and",
    "a",
    "in",
    "to",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "by",
    "as",
    "from",
    "at",
    "which",
    "are",
    "this",
    "be",
    "an",
    "or",
    "were",
    "it",
    "flow",
    "wing",
    "lift",
    "drag",
    "pressure",
    "heat",
    "layer",
    "surface",
    "boundary",
    "velocity",
    "water",
    "river",
    "bridge",
    "book",
    "library",
    "search",
    "index",
    "query",
    "document",
    "system",
    "model",
    "data",
    "method",
    "study",
    "result",
    "test",
    "number",
    "rate",
    "high",
    "low",
    "small",
    "large",
    "time",
    "year",
    "city",
    "school",
    "music",
    "family",
    "history",
    "power",
    "light",
    "energy",
]


def probe_pairs(count: int, words: int, nonce: int) -> list[tuple[str, str]]:
    """One query and ``count`` distinct documents of English words, as a request brings them;
    each document has ``words`` words after a four-word label.

    One query, so that a listwise model ranks the documents as a list (a query with a single
    document would need no model call at all). ``nonce`` goes into every text, so the pairs of
    different checks differ (nothing answers from a cache) while one check's are the same each run.
    """
    rng = random.Random(nonce)
    query = f"health check {nonce} question " + " ".join(rng.choices(_WORDS, k=6))
    return [
        (query, f"check {nonce} passage {i} " + " ".join(rng.choices(_WORDS, k=max(1, words))))
        for i in range(count)
    ]


def check_scores(scores: np.ndarray, count: int) -> None:
    """Raise RuntimeError unless ``scores`` holds ``count`` finite numbers."""
    scores = np.asarray(scores)
    if scores.shape != (count,):
        raise RuntimeError(f"expected {count} scores, got an array of shape {scores.shape}")
    bad = np.flatnonzero(~np.isfinite(scores.astype(np.float64)))
    if bad.size:
        raise RuntimeError(
            f"{bad.size} of {count} probe pairs scored a non-finite number "
            f"(pair {int(bad[0])}: {float(scores[bad[0]])})"
        )


@dataclass(frozen=True)
class CheckResult:
    """One deep check: when it started (ISO-8601 UTC), how long it took, and what came of it."""

    time: str
    seconds: float
    ok: bool
    trigger: str  # "warmup", "interval" or "probe"
    pairs: int
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def deep_warmup(reranker: Reranker, samples: int, max_batch_pairs: int) -> CheckResult:
    """Score ``min(samples, max_batch_pairs)`` full-length pairs in one call; raise if any score is
    not finite (the caller then fails the model's start). Runs on the model's worker thread."""
    reranker.load()
    count = max(1, min(samples, max_batch_pairs))
    length = reranker.max_length or 512
    pairs = probe_pairs(count, length, nonce=0)  # more words than tokens fit: cut to max_length
    started, clock = _now(), time.perf_counter()
    check_scores(reranker.score_pairs(pairs), count)
    return CheckResult(started, time.perf_counter() - clock, True, "warmup", count)


def with_deep_warmup(factory, name: str, checks: HealthChecks, config: ServerConfig):
    """``factory`` (it builds the model on its worker thread), then, when ``config.warmup_samples``
    is set, a :func:`deep_warmup` recorded as the model's first check; a failure fails the model's
    start, with the reason."""
    samples = config.warmup_samples
    if not samples:
        return factory

    def build() -> Reranker:
        reranker = factory()
        try:
            result = deep_warmup(reranker, samples, config.max_batch_pairs)
        except Exception as exc:
            raise RuntimeError(f"deep warm-up ({samples} samples) failed: {exc}") from exc
        checks.record(name, result)
        return reranker

    if hasattr(factory, "release"):  # the batcher frees an out-of-memory model before a fallback
        build.release = factory.release
    return build


class HealthChecks:
    """The last deep check of each model, and the checks that are running."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.last: dict[str, CheckResult] = {}
        self._running: dict[str, asyncio.Future] = {}
        self._numbers = itertools.count(1)

    def record(self, name: str, result: CheckResult) -> None:
        before = self.last.get(name)
        self.last[name] = result
        if not result.ok:
            logger.warning("model %r failed its deep health check: %s", name, result.error)
        elif before is not None and not before.ok:
            logger.info("model %r passes its deep health check again", name)

    def failed(self, name: str) -> CheckResult | None:
        """The last check of ``name`` when it failed, else None."""
        result = self.last.get(name)
        return result if result is not None and not result.ok else None

    async def check(self, name: str, batcher: Batcher, trigger: str = "probe") -> CheckResult:
        """Check ``name`` now through its batcher (or wait for the check already running)."""
        running = self._running.get(name)
        if running is None or running.done():
            running = asyncio.ensure_future(self._check(name, batcher, trigger))
            self._running[name] = running
        return await asyncio.shield(running)  # a caller going away does not stop the check

    async def check_all(self, batchers: Mapping[str, Batcher], trigger: str = "probe") -> None:
        """Check every model that is serving, all at once."""
        from winnow.server.batcher import READY

        serving = {n: b for n, b in batchers.items() if b.state == READY}
        await asyncio.gather(*(self.check(n, b, trigger) for n, b in serving.items()))

    async def every(self, interval: float, batchers: Mapping[str, Batcher]) -> None:
        """Check every serving model each ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check_all(batchers, "interval")
            except Exception:  # pragma: no cover - _check records its own failures
                logger.exception("periodic health check failed")

    async def _check(self, name: str, batcher: Batcher, trigger: str) -> CheckResult:
        pairs = probe_pairs(PROBE_PAIRS, PROBE_WORDS, nonce=next(self._numbers))
        started, clock = _now(), time.perf_counter()
        error = None
        try:
            scored = await batcher.probe(pairs, self.timeout)
            check_scores(scored.scores, len(pairs))
        except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11
            error = (
                f"no answer within {self.timeout:g} s (health_timeout); "
                f"{batcher.depth} requests were waiting"
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - clock
        result = CheckResult(started, seconds, error is None, trigger, len(pairs), error)
        self.record(name, result)
        return result
