"""Prometheus metrics of one server app, in its own registry (several apps can live in one process).

Every label takes values from a fixed set, so no client can grow the registry: the request histogram
is labelled by the app's own route paths (any other path is ``other``), the standard HTTP methods
(any other method is ``other``) and the status; model labels are the served model names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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

    def watch_operations(
        self,
        sizes: Callable[[], Mapping[str, tuple[int, int]]],
        checks: Callable[[], Mapping[str, Any]],
    ) -> None:
        """Export memory and deep-check figures, read at each scrape (see :class:`OpsCollector`),
        and prometheus-client's process collector (``process_resident_memory_bytes``, CPU, fds;
        on Linux)."""
        ProcessCollector(registry=self.registry)
        self.registry.register(OpsCollector(sizes, checks))

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


class OpsCollector(Collector):
    """Figures computed when Prometheus scrapes, not counted as they happen.

    * ``winnow_model_parameters{model}`` / ``winnow_model_bytes{model}``: each loaded model's
      parameter count and the bytes they take (parameters x bytes per parameter);
    * ``winnow_process_peak_resident_memory_bytes``: the process's peak resident memory
      (``getrusage``; prometheus-client's process collector has the current one);
    * ``winnow_gpu_memory_allocated_bytes{device}``, ``..._reserved_bytes``,
      ``..._peak_allocated_bytes``: torch's CUDA allocator, per device (absent without CUDA);
    * ``winnow_health_check_ok{model}`` (1 or 0), ``winnow_health_check_duration_seconds{model}``
      and ``winnow_health_check_timestamp_seconds{model}`` (Unix time): the last deep check.

    A custom collector because the values are labelled and computed on demand, which
    ``Gauge.set_function`` (unlabelled only) cannot do.
    """

    def __init__(
        self,
        sizes: Callable[[], Mapping[str, tuple[int, int]]],
        checks: Callable[[], Mapping[str, Any]],
    ):
        self.sizes = sizes
        self.checks = checks

    def collect(self):
        from winnow.rerankers.info import gpu_memory, process_memory

        params = GaugeMetricFamily(
            "winnow_model_parameters", "Parameters of the loaded model", labels=["model"]
        )
        size = GaugeMetricFamily(
            "winnow_model_bytes",
            "Bytes of the loaded model's parameters (parameters x bytes per parameter)",
            labels=["model"],
        )
        for name, (count, nbytes) in self.sizes().items():
            params.add_metric([name], count)
            size.add_metric([name], nbytes)
        yield params
        yield size
        peak = process_memory()["peak_resident_bytes"]
        if peak is not None:
            yield GaugeMetricFamily(
                "winnow_process_peak_resident_memory_bytes",
                "Peak resident memory of the server process (getrusage)",
                value=peak,
            )
        gpus = gpu_memory()
        if gpus:
            for key, what in (
                ("allocated_bytes", "allocated by torch"),
                ("reserved_bytes", "reserved by torch's caching allocator"),
                ("peak_allocated_bytes", "peak allocated by torch since start"),
            ):
                family = GaugeMetricFamily(
                    f"winnow_gpu_memory_{key}", f"GPU memory {what}", labels=["device"]
                )
                for device, figures in gpus.items():
                    family.add_metric([device], figures[key])
                yield family
        ok = GaugeMetricFamily(
            "winnow_health_check_ok", "1 if the last deep health check passed", labels=["model"]
        )
        seconds = GaugeMetricFamily(
            "winnow_health_check_duration_seconds",
            "Duration of the last deep health check",
            labels=["model"],
        )
        stamp = GaugeMetricFamily(
            "winnow_health_check_timestamp_seconds",
            "When the last deep health check started (Unix time)",
            labels=["model"],
        )
        for name, result in self.checks().items():
            ok.add_metric([name], 1.0 if result.ok else 0.0)
            seconds.add_metric([name], result.seconds)
            stamp.add_metric([name], datetime.fromisoformat(result.time).timestamp())
        yield ok
        yield seconds
        yield stamp
