"""The FastAPI application: endpoints, model slots, limits. Build it with :func:`create_app`.

Models load and warm up on their worker threads when the app starts; a failed load is retried
(``load_retries``, ``load_backoff``), then its fallback model is loaded if one was given. ``/health``
answers 200 at once. ``/ready`` answers 200 when, with ``ready_when="all"`` (the default), every
model is ready (serving its own model or its fallback), and with ``ready_when="any"``, when at least
one model is ready and none is still loading; otherwise 503. Requests score through each model's
:class:`~winnow.server.batcher.Batcher`. A request whose client disconnects is cancelled (its queued
pairs are dropped), and one still waiting when the shutdown deadline passes is answered 503
``shutting_down`` (see :mod:`winnow.server.lifecycle`). Deep health checks
(a real inference, see :mod:`winnow.server.health`) run at start with ``warmup_samples``, every
``health_interval`` seconds, and on ``GET /ready?deep=1``; a failed one makes ``/ready`` 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from winnow import __version__
from winnow.rerankers.base import Reranker, apply_activation, rank_order
from winnow.rerankers.chunking import ChunkHit, best_chunks, chunk_hits
from winnow.server import schemas as s
from winnow.server.batcher import FAILED, LOADING, READY, Batcher
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.errors import ERROR_RESPONSES, ApiError, install, limit_exceeded
from winnow.server.guards import ApiKeyMiddleware, BodyLimitMiddleware
from winnow.server.health import HealthChecks, with_deep_warmup
from winnow.server.lifecycle import ShutdownClock
from winnow.server.loading import fallback_readiness, serving_device
from winnow.server.metrics import Metrics, TimingMiddleware
from winnow.server.model_facts import ModelFacts
from winnow.server.openapi import install_openapi_limits

#: Documents per Cohere "search unit".
DOCS_PER_SEARCH_UNIT = 100


@dataclass(frozen=True)
class DocScores:
    """One score per document (a chunked document scores as its best window)."""

    scores: np.ndarray
    cut: np.ndarray  # the model truncated (a window of) the document
    dropped: np.ndarray  # max_chunks_per_doc left part of the document unscored
    num_tokens: np.ndarray  # tokens scored (of the longest window)
    pairs: int  # pairs the model scored for the request
    total_tokens: int
    #: per document, its windows in document order (chunked, or when chunks were asked for)
    chunks: list[list[ChunkHit]] | None = None


def make_factory(spec: ModelSpec, config: ServerConfig):
    """A function that loads ``spec`` through the shared model cache (run on the worker thread)."""

    def factory() -> Reranker:
        # the spec's own options (?KEY=VALUE) override the server-wide device, dtype, max_length
        device, dtype = serving_device(config)
        return spec.load(device=device, dtype=dtype, max_length=config.max_length)

    def release() -> None:
        """Drop the model's cached weights (before a fallback loads in their place)."""
        from winnow.rerankers.cache import unload

        unload(spec.model)

    factory.release = release
    return factory


class ServerState:
    """What the endpoints share: settings, metrics, and one batcher per served model."""

    def __init__(self, config: ServerConfig, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.specs = {m.alias: m for m in config.models}
        self.checks = HealthChecks(config.health_timeout)
        self.shutdown = ShutdownClock(config.graceful_timeout)
        self.batchers = {}
        for m in config.models:
            fallback = config.fallback_for(m.alias)
            self.batchers[m.alias] = Batcher(
                m.alias,
                with_deep_warmup(make_factory(m, config), m.alias, self.checks, config),
                max_batch_pairs=config.max_batch_pairs,
                max_wait=config.max_wait_ms / 1000.0,
                max_queue=config.max_queue,
                metrics=metrics,
                load_retries=config.load_retries,
                load_backoff=config.load_backoff,
                fallback=(
                    with_deep_warmup(make_factory(fallback, config), m.alias, self.checks, config)
                    if fallback
                    else None
                ),
                fallback_name=fallback.model if fallback else None,
            )
        self.facts = ModelFacts(self.batchers, {m.alias: m.model for m in config.models})

    def batcher(self, name: str | None) -> Batcher:
        if name == "":  # (the schema refuses it too; a blank name is simply not served: 404)
            raise ApiError(
                422,
                "validation",
                "model is empty; name a served model, or leave model out for the default "
                f"({self.config.default_model})",
                field="model",
            )
        name = name or self.config.default_model
        batcher = self.batchers.get(name) if name is not None else None
        if batcher is None:
            available = ", ".join(self.batchers) or "none"
            raise ApiError(
                404,
                "model_not_found",
                f"model {name!r} is not served here; available models: {available}",
                field="model",
            )
        if batcher.state == FAILED:
            usable = [n for n, b in self.batchers.items() if b.state == READY]
            raise ApiError(
                503,
                "model_failed",
                f"model {name!r} failed to load ({batcher.error}); "
                f"available models: {', '.join(usable) or 'none'}",
                field="model",
            )
        return batcher

    @property
    def ready(self) -> bool:
        """The ``/ready`` answer, by ``config.ready_when`` (see the module docstring)."""
        states = [b.state for b in self.batchers.values()]
        if not states:
            return False
        if self.config.ready_when == "all":
            return all(state == READY for state in states)
        return LOADING not in states and READY in states

    # -- operations ----------------------------------------------------------------------------
    def status(self, name: str) -> str:
        """The batcher's state, or ``unhealthy`` when the model failed its last deep check."""
        state = self.batchers[name].state
        return "unhealthy" if state == READY and self.checks.failed(name) else state

    # -- limits --------------------------------------------------------------------------------
    def check_limits(
        self, query: str, texts: list[str], docs_field: str, max_chunks: int | None
    ) -> None:
        c = self.config
        if len(query) > c.max_query_chars:
            raise limit_exceeded("query", c.max_query_chars, len(query), "characters")
        if len(texts) > c.max_documents:
            raise limit_exceeded(docs_field, c.max_documents, len(texts), "documents")
        for i, text in enumerate(texts):
            if len(text) > c.max_document_chars:
                raise limit_exceeded(
                    f"{docs_field}[{i}]", c.max_document_chars, len(text), "characters"
                )
        if max_chunks is not None and max_chunks > c.max_chunks_per_doc:
            raise ApiError(
                422,
                "limit_exceeded",
                f"max_chunks_per_doc is {max_chunks}; this server allows at most "
                f"{c.max_chunks_per_doc}",
                field="max_chunks_per_doc",
                limit=c.max_chunks_per_doc,
            )

    # -- scoring -------------------------------------------------------------------------------
    async def score(
        self,
        batcher: Batcher,
        query: str,
        texts: list[str],
        max_chunks: int | None,
        chunks: bool = False,
        request: Request | None = None,
    ) -> DocScores:
        """Score ``texts``; cancelled when the client disconnects or the shutdown deadline passes."""
        scoring = asyncio.ensure_future(self._score(batcher, query, texts, max_chunks, chunks))
        watchers = [asyncio.ensure_future(self.shutdown.expired.wait())]
        if request is not None:
            watchers.append(asyncio.ensure_future(_disconnected(request)))
        try:
            await asyncio.wait([scoring, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()
            if not scoring.done():
                scoring.cancel()  # the batcher drops the pairs not handed to the model yet
        if not scoring.cancelled() and scoring.done():
            return scoring.result()
        with contextlib.suppress(asyncio.CancelledError):
            await scoring  # let the cancellation reach the batcher before answering
        if self.shutdown.expired.is_set():
            raise ApiError(
                503,
                "shutting_down",
                f"the server is shutting down and its {self.config.graceful_timeout:g}s graceful "
                "timeout ran out before this request was scored; retry on another instance",
                headers={"Retry-After": "2"},
            )
        raise ApiError(499, "client_closed", "the client closed the connection")

    async def _score(
        self,
        batcher: Batcher,
        query: str,
        texts: list[str],
        max_chunks: int | None,
        chunks: bool = False,
    ) -> DocScores:
        if max_chunks is None:
            scored = await batcher.submit([(query, t) for t in texts])
            whole = None
            if chunks:  # not split: a document is one window, the whole text
                whole = [
                    chunk_hits(i, t, [(0, len(t))], scored.take(slice(i, i + 1)))
                    for i, t in enumerate(texts)
                ]
            return DocScores(
                scored.scores,
                scored.truncated,
                np.zeros(len(texts), dtype=bool),
                scored.num_tokens,
                len(texts),
                int(scored.num_tokens.sum()),
                whole,
            )
        return await self._score_chunked(batcher, query, texts, max_chunks)

    async def score_truncated(
        self,
        batcher: Batcher,
        query: str,
        texts: list[str],
        max_tokens: int,
        request: Request | None = None,
    ) -> DocScores:
        """Score each text cut to its first ``max_tokens`` tokens (Cohere v2's max_tokens_per_doc)."""
        from winnow.rerankers.chunking import truncate_to_tokens, window_tokenizer

        if batcher.state != READY:
            await batcher.submit([])  # raises the reason it is not ready

        def cut_all() -> list[str]:
            tokenizer = window_tokenizer(batcher.reranker)
            return [truncate_to_tokens(t, tokenizer, max_tokens)[0] for t in texts]

        cut = await asyncio.to_thread(cut_all)
        return await self.score(batcher, query, cut, None, request=request)

    async def _score_chunked(
        self, batcher: Batcher, query: str, texts: list[str], max_chunks: int
    ) -> DocScores:
        from winnow.rerankers.chunking import aggregate_scores

        if batcher.state != READY:
            await batcher.submit([])  # raises the reason it is not ready
        windows = await asyncio.to_thread(_split_all, batcher.reranker, query, texts, max_chunks)
        pairs = [(query, text[a:b]) for text, (spans, _) in zip(texts, windows) for a, b in spans]
        scored = await batcher.submit(pairs)
        n = len(texts)
        scores = np.empty(n, dtype=np.float32)
        cut = np.zeros(n, dtype=bool)
        dropped = np.array([d for _, d in windows], dtype=bool)
        num_tokens = np.zeros(n, dtype=np.int32)
        hits = []
        start = 0
        for i, (spans, _) in enumerate(windows):
            stop = start + len(spans)
            scores[i] = aggregate_scores(scored.scores[start:stop], "max")
            cut[i] = bool(scored.truncated[start:stop].any())
            num_tokens[i] = int(scored.num_tokens[start:stop].max())
            hits.append(chunk_hits(i, texts[i], spans, scored.take(slice(start, stop))))
            start = stop
        return DocScores(
            scores, cut, dropped, num_tokens, len(pairs), int(scored.num_tokens.sum()), hits
        )


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read: ``receive`` then waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _split_all(
    reranker: Reranker, query: str, texts: list[str], max_chunks: int
) -> list[tuple[list[tuple[int, int]], bool]]:
    """Window spans of each text (as ``rank_chunked`` cuts them) and whether any were left out."""
    from winnow.rerankers.chunking import default_window, window_spans, window_tokenizer

    tokenizer = window_tokenizer(reranker)
    window = default_window(reranker, [query], tokenizer)
    stride = max(1, (window * 3) // 4)
    out = []
    for text in texts:
        spans = window_spans(text, tokenizer, window, stride, max_chunks=max_chunks + 1)
        out.append((spans[:max_chunks], len(spans) > max_chunks))
    return out


def _best_windows(
    hits: list[ChunkHit], limit: int | None, sigmoid: bool
) -> list[tuple[ChunkHit, float]]:
    """A document's best ``limit`` (default 1) windows, best first, with the score to answer."""
    best = best_chunks(hits, limit or 1)
    scores = np.array([h.score for h in best], dtype=np.float32)
    if sigmoid:
        scores = apply_activation(scores, "sigmoid")
    return [(h, float(x)) for h, x in zip(best, scores)]


def _kind(spec: ModelSpec, batcher: Batcher) -> str | None:
    """The kind asked for, else the one inferred when the model was built."""
    return spec.kind or (batcher.reranker.config.kind if batcher.reranker is not None else None)


def _order(scores: np.ndarray, top_n: int | None) -> np.ndarray:
    """Best first by the raw scores: a sigmoid answered to the client can round many of them to
    the same 1.0 (or 0.0) in float32, and would then leave their order to the request's."""
    order = rank_order(scores)
    return order[:top_n] if top_n is not None else order


def create_app(config: ServerConfig) -> FastAPI:
    """Build the reranking app for ``config`` (models start loading when the app starts)."""
    metrics = Metrics()
    state = ServerState(config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in state.batchers.values():
            batcher.start()
        periodic = None
        if config.health_interval > 0:
            periodic = asyncio.create_task(
                state.checks.every(config.health_interval, state.batchers)
            )
        yield
        if periodic is not None:
            periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await periodic
        # uvicorn has stopped accepting and waited for in-flight requests; drain what is left,
        # within what remains of the shutdown deadline (all of it when uvicorn did not start one).
        remaining = state.shutdown.remaining()
        timeout = config.graceful_timeout if remaining is None else remaining
        await asyncio.gather(
            *(asyncio.to_thread(b.close, timeout) for b in state.batchers.values())
        )

    app = FastAPI(
        title="winnow reranking server",
        version=__version__,
        description="Cohere/Jina-style (`/v1/rerank`) and TEI-style (`/rerank`) reranking APIs.",
        lifespan=lifespan,
    )
    app.state.server = state
    app.state.metrics = metrics
    metrics.watch_operations(state.facts.sizes, lambda: dict(state.checks.last))
    app.state.shutdown_clock = state.shutdown
    install(app)

    @app.get("/health", response_model=s.Health, tags=["operations"])
    async def health() -> s.Health:
        """Liveness: the process answers. Open even when an API key is set."""
        return s.Health()

    @app.get(
        "/ready",
        response_model=s.Readiness,
        responses={503: {"model": s.Readiness, "description": "not ready yet"}},
        tags=["operations"],
    )
    async def ready(
        deep: bool = Query(
            False,
            description="run a deep health check (a real inference through each serving model's "
            "batcher) now, and report it",
        ),
    ) -> JSONResponse:
        """Per model: loaded, warmed, device, dtype, max length, size, last deep check; process
        memory. 503 until ready, and while a model's last deep check failed."""
        from winnow.rerankers.info import gpu_memory, process_memory

        if deep:
            await state.checks.check_all(state.batchers)
        models = {}
        for name, b in state.batchers.items():
            info = s.ModelReadiness(
                status=state.status(name),
                model=state.specs[name].model,
                kind=state.specs[name].kind,
                warmup_seconds=b.warmup_seconds,
                error=b.error or None,
                **fallback_readiness(config, b),
            )
            r = b.reranker
            if r is not None and b.state != FAILED:
                h = r.health()
                info.kind, info.loaded, info.warmed = h["kind"], h["loaded"], h["warmed"]
                info.device, info.dtype, info.max_length = h["device"], h["dtype"], h["max_length"]
            size = state.facts.size(name)
            if size is not None:
                info.parameters, info.model_bytes = size
            check = state.checks.last.get(name)
            if check is not None:
                info.last_check = s.HealthCheck(**check.as_dict())
            failed = state.checks.failed(name)
            if failed is not None and b.state == READY:
                info.error = f"deep health check failed at {failed.time}: {failed.error}"
            models[name] = info
        unhealthy = any(m.status == "unhealthy" for m in models.values())
        ok = state.ready and not unhealthy
        memory = s.ProcessMemory(**process_memory(), gpu=gpu_memory() or None)
        body = s.Readiness(
            ready=ok, default_model=config.default_model, models=models, memory=memory
        )
        return JSONResponse(
            body.model_dump(mode="json", exclude_none=True),
            status_code=200 if ok else 503,
        )

    @app.get("/v1/models", response_model=s.ModelList, tags=["operations"])
    async def list_models() -> s.ModelList:
        """The served models (the first is the default), with what each is once loaded."""
        details = await asyncio.to_thread(lambda: {n: state.facts.details(n) for n in state.specs})
        return s.ModelList(
            data=[
                s.ModelInfo(
                    id=name,
                    model=spec.model,
                    kind=_kind(spec, state.batchers[name]),
                    status=state.status(name),
                    default=name == config.default_model,
                    details=s.ModelDetails(**details[name]) if details[name] else None,
                    **fallback_readiness(config, state.batchers[name]),
                )
                for name, spec in state.specs.items()
            ]
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics of this server."""
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    @app.post(
        "/v1/rerank",
        response_model=s.RerankResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["rerank"],
    )
    async def rerank(body: s.RerankRequest, request: Request) -> s.RerankResponse:
        """Cohere/Jina-style reranking: results sorted by ``relevance_score``, best first."""
        texts = body.texts()
        state.check_limits(body.query, texts, "documents", body.max_chunks_per_doc)
        batcher = state.batcher(body.model)
        scored = await state.score(
            batcher, body.query, texts, body.max_chunks_per_doc, body.return_chunks, request
        )
        scores = scored.scores
        if body.normalize == "sigmoid":
            scores = apply_activation(scores, "sigmoid")
        results = []
        for i in _order(scored.scores, body.limit()):
            result = s.RerankResult(index=int(i), relevance_score=float(scores[i]))
            if body.return_documents:
                result.document = s.ResultDocument(text=texts[i])
            if body.return_token_info:
                result.truncated = bool(scored.cut[i] or scored.dropped[i])
                result.num_tokens = int(scored.num_tokens[i])
            if body.return_chunks:
                result.chunks = [
                    s.RerankChunk(
                        index=h.chunk, text=h.text, start=h.start, end=h.end, relevance_score=x
                    )
                    for h, x in _best_windows(
                        scored.chunks[i], body.chunks_per_doc, body.normalize == "sigmoid"
                    )
                ]
            results.append(result)
        units = max(1, math.ceil(scored.pairs / DOCS_PER_SEARCH_UNIT))
        return s.RerankResponse(
            id=str(uuid.uuid4()),
            model=batcher.name,
            results=results,
            usage=s.Usage(search_units=units, total_tokens=scored.total_tokens),
            meta=s.Meta(api_version=s.ApiVersion(), billed_units=s.BilledUnits(search_units=units)),
        )

    @app.post(
        "/rerank",
        response_model=list[s.TEIRank],
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        tags=["rerank"],
    )
    async def rerank_tei(body: s.TEIRerankRequest, request: Request) -> list[s.TEIRank]:
        """TEI-style reranking: a bare list sorted by ``score``; sigmoid scores unless ``raw_scores``."""
        state.check_limits(body.query, body.texts, "texts", body.max_chunks_per_doc)
        batcher = state.batcher(body.model)
        scored = await state.score(
            batcher, body.query, body.texts, body.max_chunks_per_doc, body.return_chunks, request
        )
        if not body.truncate and scored.cut.any():
            i = int(np.flatnonzero(scored.cut)[0])
            limit = batcher.reranker.max_length
            raise ApiError(
                413,
                "validation",
                f"texts[{i}] and the query do not fit in the model's {limit} tokens; "
                'send "truncate": true to cut over-long inputs',
                field=f"texts[{i}]",
                limit=limit,
            )
        scores = scored.scores if body.raw_scores else apply_activation(scored.scores, "sigmoid")
        out = []
        for i in _order(scored.scores, None):
            rank = s.TEIRank(index=int(i), score=float(scores[i]))
            if body.return_text:
                rank.text = body.texts[i]
            if body.return_token_info:
                rank.truncated = bool(scored.cut[i] or scored.dropped[i])
                rank.num_tokens = int(scored.num_tokens[i])
            if body.return_chunks:
                rank.chunks = [
                    s.TEIChunk(index=h.chunk, text=h.text, start=h.start, end=h.end, score=x)
                    for h, x in _best_windows(
                        scored.chunks[i], body.chunks_per_doc, not body.raw_scores
                    )
                ]
            out.append(rank)
        return out

    @app.post(
        "/v2/rerank",
        response_model=s.RerankV2Response,
        responses=ERROR_RESPONSES,
        tags=["rerank"],
    )
    async def rerank_v2(body: s.RerankV2Request, request: Request) -> s.RerankV2Response:
        """Cohere v2 reranking: documents cut to ``max_tokens_per_doc`` tokens, then scored;
        sigmoid scores unless ``"normalize": "none"``; best first."""
        texts = body.texts()
        state.check_limits(body.query, texts, "documents", None)
        batcher = state.batcher(body.model)
        scored = await state.score_truncated(
            batcher, body.query, texts, body.max_tokens_per_doc, request
        )
        scores = scored.scores
        if body.normalize == "sigmoid":
            scores = apply_activation(scores, "sigmoid")
        units = max(1, math.ceil(scored.pairs / DOCS_PER_SEARCH_UNIT))
        return s.RerankV2Response(
            id=str(uuid.uuid4()),
            results=[
                s.RerankV2Result(index=int(i), relevance_score=float(scores[i]))
                for i in _order(scored.scores, body.top_n)
            ],
            meta=s.Meta(api_version=s.ApiVersion(), billed_units=s.BilledUnits(search_units=units)),
        )

    install_openapi_limits(app, config)
    paths = frozenset(r.path for r in app.routes if hasattr(r, "path"))
    # add_middleware wraps: the last one added sees the request first.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.max_body_bytes)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(TimingMiddleware, metrics=metrics, paths=paths)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
