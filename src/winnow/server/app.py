"""The FastAPI application: endpoints, model slots, limits. Build it with :func:`create_app`.

Models load and warm up on their worker threads when the app starts; a failed load is retried
(``load_retries``, ``load_backoff``), then its fallback model is loaded if one was given. ``/health``
answers 200 at once. ``/ready`` answers 200 when, with ``ready_when="all"`` (the default), every
model is ready (serving its own model or its fallback), and with ``ready_when="any"``, when at least
one model is ready and none is still loading; otherwise 503. Requests score through each model's
:class:`~winnow.server.batcher.Batcher`. A request whose client disconnects is cancelled (its queued
pairs are dropped), and one still waiting when the shutdown deadline passes is answered 503
``shutting_down`` (see :mod:`winnow.server.lifecycle`).
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
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from winnow import __version__
from winnow.rerankers.base import Reranker, apply_activation, rank_order
from winnow.server import schemas as s
from winnow.server.batcher import FAILED, LOADING, READY, Batcher
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.errors import ERROR_RESPONSES, ApiError, install, limit_exceeded
from winnow.server.guards import ApiKeyMiddleware, BodyLimitMiddleware
from winnow.server.lifecycle import ShutdownClock
from winnow.server.loading import fallback_readiness, serving_device
from winnow.server.metrics import Metrics, TimingMiddleware

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


def make_factory(spec: ModelSpec, config: ServerConfig):
    """A function that loads ``spec`` through the shared model cache (run on the worker thread)."""

    def factory() -> Reranker:
        from winnow.rerankers.loading import load_reranker

        device, dtype = serving_device(config)
        return load_reranker(
            spec.model,
            spec.kind,
            device=device,
            dtype=dtype,
            max_length=config.max_length,
        )

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
        self.shutdown = ShutdownClock(config.graceful_timeout)
        self.batchers = {}
        for m in config.models:
            fallback = config.fallback_for(m.alias)
            self.batchers[m.alias] = Batcher(
                m.alias,
                make_factory(m, config),
                max_batch_pairs=config.max_batch_pairs,
                max_wait=config.max_wait_ms / 1000.0,
                max_queue=config.max_queue,
                metrics=metrics,
                load_retries=config.load_retries,
                load_backoff=config.load_backoff,
                fallback=make_factory(fallback, config) if fallback else None,
                fallback_name=fallback.model if fallback else None,
            )

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
        request: Request | None = None,
    ) -> DocScores:
        """Score ``texts``; cancelled when the client disconnects or the shutdown deadline passes."""
        scoring = asyncio.ensure_future(self._score(batcher, query, texts, max_chunks))
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
        self, batcher: Batcher, query: str, texts: list[str], max_chunks: int | None
    ) -> DocScores:
        if max_chunks is None:
            scored = await batcher.submit([(query, t) for t in texts])
            return DocScores(
                scored.scores,
                scored.truncated,
                np.zeros(len(texts), dtype=bool),
                scored.num_tokens,
                len(texts),
                int(scored.num_tokens.sum()),
            )
        return await self._score_chunked(batcher, query, texts, max_chunks)

    async def _score_chunked(
        self, batcher: Batcher, query: str, texts: list[str], max_chunks: int
    ) -> DocScores:
        from winnow.rerankers.chunking import aggregate_scores

        if batcher.state != READY:
            await batcher.submit([])  # raises the reason it is not ready
        windows = await asyncio.to_thread(_split_all, batcher.reranker, query, texts, max_chunks)
        pairs = [(query, w) for chunks, _ in windows for w in chunks]
        scored = await batcher.submit(pairs)
        n = len(texts)
        scores = np.empty(n, dtype=np.float32)
        cut = np.zeros(n, dtype=bool)
        dropped = np.array([d for _, d in windows], dtype=bool)
        num_tokens = np.zeros(n, dtype=np.int32)
        start = 0
        for i, (chunks, _) in enumerate(windows):
            stop = start + len(chunks)
            scores[i] = aggregate_scores(scored.scores[start:stop], "max")
            cut[i] = bool(scored.truncated[start:stop].any())
            num_tokens[i] = int(scored.num_tokens[start:stop].max())
            start = stop
        return DocScores(scores, cut, dropped, num_tokens, len(pairs), int(scored.num_tokens.sum()))


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read: ``receive`` then waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _split_all(
    reranker: Reranker, query: str, texts: list[str], max_chunks: int
) -> list[tuple[list[str], bool]]:
    """Windows of each text (as ``rank_chunked`` cuts them) and whether any were left out."""
    from winnow.rerankers.chunking import default_window, split_windows, window_tokenizer

    tokenizer = window_tokenizer(reranker)
    window = default_window(reranker, [query], tokenizer)
    stride = max(1, (window * 3) // 4)
    out = []
    for text in texts:
        chunks = split_windows(text, tokenizer, window, stride, max_chunks=max_chunks + 1)
        out.append((chunks[:max_chunks], len(chunks) > max_chunks))
    return out


def _kind(spec: ModelSpec, batcher: Batcher) -> str | None:
    """The kind asked for, else the one inferred when the model was built."""
    return spec.kind or (batcher.reranker.config.kind if batcher.reranker is not None else None)


def _order(scores: np.ndarray, top_n: int | None) -> np.ndarray:
    order = rank_order(scores)
    return order[:top_n] if top_n is not None else order


def install_openapi_limits(app: FastAPI, config: ServerConfig) -> None:
    """Publish the configured limits in the OpenAPI schema (maxItems, maxLength, maximum).

    The limits are only known at start-up, so the app enforces them (422 naming field and limit)
    and the schema it serves states them, so generated clients and schema-driven tests know them.
    """
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            models = schema.get("components", {}).get("schemas", {})
            text_limit = {"maxLength": config.max_document_chars}
            for name, docs_field in (("RerankRequest", "documents"), ("TEIRerankRequest", "texts")):
                props = models.get(name, {}).get("properties", {})
                if not props:
                    continue
                props["query"]["maxLength"] = config.max_query_chars
                props[docs_field]["maxItems"] = config.max_documents
                items = props[docs_field].get("items", {})
                for option in items.get("anyOf", [items]):
                    if option.get("type") == "string":
                        option.update(text_limit)
                chunks = props.get("max_chunks_per_doc", {})
                for option in chunks.get("anyOf", [chunks]):
                    if option.get("type") == "integer":
                        option["maximum"] = config.max_chunks_per_doc
            doc_object = models.get("DocumentObject", {}).get("properties", {})
            if "text" in doc_object:
                doc_object["text"].update(text_limit)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def create_app(config: ServerConfig) -> FastAPI:
    """Build the reranking app for ``config`` (models start loading when the app starts)."""
    metrics = Metrics()
    state = ServerState(config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in state.batchers.values():
            batcher.start()
        yield
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
    async def ready() -> JSONResponse:
        """Per model: loaded, warmed, device, dtype, max length. 503 until ready."""
        models = {}
        for name, b in state.batchers.items():
            info = s.ModelReadiness(
                status=b.state,
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
            models[name] = info
        body = s.Readiness(ready=state.ready, default_model=config.default_model, models=models)
        return JSONResponse(
            body.model_dump(mode="json", exclude_none=True),
            status_code=200 if state.ready else 503,
        )

    @app.get("/v1/models", response_model=s.ModelList, tags=["operations"])
    async def list_models() -> s.ModelList:
        """The served models; the first is the default."""
        return s.ModelList(
            data=[
                s.ModelInfo(
                    id=name,
                    model=spec.model,
                    kind=_kind(spec, state.batchers[name]),
                    status=state.batchers[name].state,
                    default=name == config.default_model,
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
        scored = await state.score(batcher, body.query, texts, body.max_chunks_per_doc, request)
        scores = scored.scores
        if body.normalize == "sigmoid":
            scores = apply_activation(scores, "sigmoid")
        results = []
        for i in _order(scores, body.top_n):
            result = s.RerankResult(index=int(i), relevance_score=float(scores[i]))
            if body.return_documents:
                result.document = s.ResultDocument(text=texts[i])
            if body.return_token_info:
                result.truncated = bool(scored.cut[i] or scored.dropped[i])
                result.num_tokens = int(scored.num_tokens[i])
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
            batcher, body.query, body.texts, body.max_chunks_per_doc, request
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
        for i in _order(scores, None):
            rank = s.TEIRank(index=int(i), score=float(scores[i]))
            if body.return_text:
                rank.text = body.texts[i]
            if body.return_token_info:
                rank.truncated = bool(scored.cut[i] or scored.dropped[i])
                rank.num_tokens = int(scored.num_tokens[i])
            out.append(rank)
        return out

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
