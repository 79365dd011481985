"""Prometheus metrics of one server app, in its own registry (several apps can live in one process).

Every label takes values from a fixed set, so no client can grow the registry: the request histogram
is labelled by the app's own route paths (any other path is ``other``), the standard HTTP methods
(any other method is ``other``) and the status; model labels are the served model names.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
#: The methods of RFC 9110 (and PATCH); any other method is counted as "other".
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class Metrics:
    """Request latency, pairs scored, batch sizes, queue depth, truncations and errors by type."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "winnow_request_duration_seconds",
            "Time from request received to response sent",
            ["endpoint", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pairs_scored = Counter(
            "winnow_pairs_scored",
            "(query, document) pairs scored by the model",
            ["model"],
            registry=r,
        )
        self.batch_pairs = Histogram(
            "winnow_batch_pairs",
            "Pairs per model call (after merging concurrent requests)",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "winnow_batch_duration_seconds",
            "Time of one model call",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "winnow_queue_depth", "Requests waiting for the model", ["model"], registry=r
        )
        self.truncated = Counter(
            "winnow_truncated_pairs",
            "Pairs cut to the model's max length",
            ["model"],
            registry=r,
        )
        self.errors = Counter("winnow_errors", "Error responses by type", ["type"], registry=r)
        self.cancelled_requests = Counter(
            "winnow_cancelled_requests",
            "Requests whose client went away (or that shutdown cut off) before they were scored",
            ["model"],
            registry=r,
        )
        self.cancelled_pairs = Counter(
            "winnow_cancelled_pairs",
            "Pairs of cancelled requests that were never handed to the model",
            ["model"],
            registry=r,
        )

    def observe_batch(self, model: str, pairs: int, truncated: int, seconds: float) -> None:
        self.pairs_scored.labels(model=model).inc(pairs)
        self.batch_pairs.labels(model=model).observe(pairs)
        self.batch_seconds.labels(model=model).observe(seconds)
        if truncated:
            self.truncated.labels(model=model).inc(truncated)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TimingMiddleware:
    """Observes every HTTP request's latency and status in ``request_seconds`` (pure ASGI)."""

    def __init__(self, app, metrics: Metrics, paths: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            self.metrics.request_seconds.labels(
                endpoint=path, method=method, status=str(status)
            ).observe(time.perf_counter() - started)
