"""winnow as an MCP server: a ``rerank`` tool, and ``search`` over a collection when one is given
(``pip install 'winnow[mcp]'``; ``winnow mcp`` on the command line).

Built on the ``mcp`` SDK's ``MCPServer``; the tools' JSON schemas (input and output) come from their
type hints. ``rerank`` takes a query and a list of documents and returns them best first with their
positions in the list, scores and ranks; ``search`` runs a bound pipeline (``bm25`` by default, any
system spec) over the collection and returns doc ids, scores, ranks, titles and texts. Models are
loaded (and warmed) and the collection indexed by :func:`build_server`, before any client connects,
as the HTTP server does. Model calls run one at a time on a worker thread, off the event loop.

    from winnow.integrations.mcp import build_server, run_http

    server = build_server({"minilm": winnow.load_reranker(...)}, pipeline=BM25().bind("cranfield"))
    server.run("stdio")                                   # or:
    run_http(server, host="127.0.0.1", port=8765)         # streamable HTTP at /mcp
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from winnow.errors import ConfigError, WinnowError, require

require("mcp", "mcp")

import anyio  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from winnow.integrations import as_reranker  # noqa: E402

#: The most documents one ``rerank`` call may send (as the HTTP server's default limit).
MAX_DOCUMENTS = 1000


class RerankHit(BaseModel):
    index: int = Field(description="position of the document in the list that was sent")
    score: float = Field(description="the reranker's score, higher is more relevant")
    rank: int = Field(description="1 for the best document")
    document: str = Field(description="the document's text")


class RerankResult(BaseModel):
    model: str = Field(description="the name of the model that scored the documents")
    results: list[RerankHit]


class SearchHitModel(BaseModel):
    doc_id: str
    score: float
    rank: int
    title: str
    text: str


class SearchResult(BaseModel):
    collection: str = Field(description="the collection that was searched")
    system: str = Field(description="the pipeline that ranked it")
    results: list[SearchHitModel]


def build_server(
    rerankers: Mapping[str, Any] | Any,
    *,
    pipeline: Any = None,
    name: str = "winnow",
    max_documents: int = MAX_DOCUMENTS,
    preload: bool = True,
) -> MCPServer:
    """An MCP server with a ``rerank`` tool over ``rerankers`` and, with ``pipeline`` (a
    :class:`~winnow.pipeline.bound.BoundPipeline`), a ``search`` tool.

    ``rerankers`` is ``{name: Reranker or model spec}`` (the first is the default) or one reranker.
    With ``preload`` the models load and warm up and the collection is indexed here.
    """
    if not isinstance(rerankers, Mapping):
        single = as_reranker(rerankers)
        rerankers = {str(single.config.model): single}
    models = {str(k): as_reranker(v) for k, v in rerankers.items()}
    if not models and pipeline is None:
        raise ConfigError("an MCP server needs a reranker or a pipeline to search with")
    lock = threading.Lock()  # one model call at a time: they use every core already
    if preload:
        for reranker in models.values():
            reranker.warmup()
        if pipeline is not None:
            pipeline.index()
    default = next(iter(models), None)
    server = MCPServer(name, instructions=_instructions(models, pipeline), log_level="WARNING")

    async def call(fn, *args):
        def locked():
            with lock:
                return fn(*args)

        try:
            return await anyio.to_thread.run_sync(locked)
        except WinnowError as exc:  # bad input: the message says what and where
            raise ToolError(str(exc)) from exc

    if models:

        async def rerank(
            query: str,
            documents: list[str],
            top_k: int | None = None,
            model: str | None = None,
        ) -> RerankResult:
            """Rerank documents for a query with a cross-encoder or other reranker: the documents
            come back best first, with their positions in the list sent, scores and ranks."""
            chosen = model or default
            if chosen not in models:
                raise ToolError(f"unknown model {chosen!r}; served models: {', '.join(models)}")
            if len(documents) > max_documents:
                raise ToolError(
                    f"documents has {len(documents)} items; at most {max_documents} per call"
                )
            hits = await call(models[chosen].rank, query, documents, top_k)
            return RerankResult(
                model=chosen,
                results=[
                    RerankHit(index=h.index, score=h.score, rank=h.rank, document=h.document)
                    for h in hits
                ],
            )

        server.add_tool(rerank, name="rerank")

    if pipeline is not None:
        collection = pipeline.dataset.name

        async def search(query: str, top_k: int = 10) -> SearchResult:
            """Search the collection for a query; the best documents come back with their ids,
            scores, ranks, titles and texts."""
            if top_k > 100:
                raise ToolError(f"top_k is {top_k}; at most 100 per call")
            hits = await call(pipeline.search, query, top_k)
            return SearchResult(
                collection=collection,
                system=pipeline.stage.label,
                results=[SearchHitModel(**h.as_dict()) for h in hits],
            )

        server.add_tool(search, name="search")
    return server


def _instructions(models: Mapping[str, Any], pipeline: Any) -> str:
    parts = []
    if models:
        parts.append(f"rerank: rerank documents for a query (models: {', '.join(models)})")
    if pipeline is not None:
        parts.append(f"search: search the {pipeline.dataset.name} collection")
    return "; ".join(parts)


def http_app(server: MCPServer, path: str = "/mcp", host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP Starlette app of ``server`` (for any ASGI server)."""
    return server.streamable_http_app(streamable_http_path=path, host=host)


def run_http(
    server: MCPServer,
    host: str = "127.0.0.1",
    port: int = 8765,
    path: str = "/mcp",
    *,
    log_level: str = "warning",
) -> None:
    """Serve ``server`` over streamable HTTP at ``http://HOST:PORT/PATH`` with uvicorn until
    interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(
        http_app(server, path, host), host=host, port=port, log_level=log_level, lifespan="on"
    )
