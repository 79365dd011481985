"""Pipeline stages whose heavy work runs as Daft jobs, with the local stages' results and cache.

:class:`DaftRerank` is :class:`~winnow.pipeline.Rerank` with its pairs scored by
:func:`~winnow.distributed.jobs.score_pairs_job`; :class:`DaftDense` is the ``dense`` retriever
with the corpus encoded by :func:`~winnow.distributed.jobs.encode_job` (queries are few: they
are encoded in-process, and search is the same matrix product). Both file their cache entries
under their local twin's name (``cache_name``) with the same key, so a Daft run fills the cache a
local run reads, and the other way round.

:func:`on_engine` rebuilds a parsed system with these stages in place of the local ones; stages
that have no Daft form (BM25, fusion, feedback, listwise and chunked rerankers) run in-process
as before.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from winnow.distributed.engine import EngineOptions
from winnow.pipeline.base import Context, Fused, Parallel, Pipeline, Stage
from winnow.pipeline.rerank import Rerank
from winnow.pipeline.retrieval import Dense
from winnow.retrieval.dense import DenseIndex
from winnow.types import Document

logger = logging.getLogger(__name__)


class DaftRerank(Rerank):
    """:class:`~winnow.pipeline.Rerank` whose pairs are scored on Daft workers.

    Each query's top ``depth`` becomes rows of a pair table; one job scores them all (the
    workers batch pairs across queries), and the scores come back by row.
    """

    cache_name = "Rerank"

    def __init__(
        self,
        reranker,
        depth: int | None = 100,
        batch_queries: int | None = None,
        *,
        name: str | None = None,
        engine: EngineOptions | None = None,
    ):
        super().__init__(reranker, depth, batch_queries, name=name)
        self.engine = engine or EngineOptions()

    def score(
        self,
        texts: list[str],
        docs: list[list[Document]],
        ctx: Context,
        reranker=None,
    ) -> list[list[float]]:
        from winnow.distributed.engine import require_daft
        from winnow.distributed.jobs import collect, score_pairs_job

        daft = require_daft()
        query_ids, doc_ids, queries, bodies = [], [], [], []
        for qi, (text, ds) in enumerate(zip(texts, docs)):
            for di, d in enumerate(ds):
                query_ids.append(str(qi))
                doc_ids.append(str(di))
                queries.append(text)
                bodies.append(d.full_text)
        if not queries:
            return [[] for _ in texts]
        table = daft.from_pydict(
            {"query_id": query_ids, "doc_id": doc_ids, "query": queries, "text": bodies}
        )
        result = collect(score_pairs_job(table, reranker or self.reranker, self.engine))
        scores = {
            (q, d): float(s)
            for q, d, s in zip(result["query_id"], result["doc_id"], result["score"])
        }
        if len(scores) != len(queries):
            from winnow.distributed.engine import DistributedError

            raise DistributedError(
                f"the Daft job returned {len(scores)} scores for {len(queries)} pairs"
            )
        return [[scores[(str(qi), str(di))] for di in range(len(ds))] for qi, ds in enumerate(docs)]


class DaftDenseIndex(DenseIndex):
    """:class:`winnow.retrieval.DenseIndex` whose corpus chunks are encoded on Daft workers."""

    def __init__(self, *args: Any, engine: EngineOptions | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.engine = engine or EngineOptions()

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        from winnow.distributed.engine import require_daft
        from winnow.distributed.jobs import collect, encode_job

        daft = require_daft()
        if not texts:
            return super().encode_documents(texts)
        table = daft.from_pydict({"doc_id": [str(i) for i in range(len(texts))], "text": texts})
        result = collect(encode_job(table, self.encoder, self.engine))
        out = np.empty((len(texts), self.encoder.dimension), dtype=np.float32)
        for doc_id, row in zip(result["doc_id"], result["embedding"]):
            out[int(doc_id)] = row
        return out


class DaftDense(Dense):
    """The ``dense`` retriever with the corpus encoded on Daft workers (same cache entries)."""

    cache_name = "Dense"

    def __init__(self, *args: Any, engine: EngineOptions | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.engine = engine or EngineOptions()

    def _build(self, ctx: Context) -> Any:
        return DaftDenseIndex(self.model, engine=self.engine, **self._index_kwargs(ctx))


def on_engine(stage: Stage, engine: EngineOptions) -> Stage:
    """``stage`` rebuilt with its rerank and dense stages running on Daft (a new object; the
    given stage is not changed)."""
    if isinstance(stage, Pipeline):
        return Pipeline([on_engine(s, engine) for s in stage.stages])
    if isinstance(stage, Parallel):
        return Parallel([on_engine(s, engine) for s in stage.stages])
    if isinstance(stage, Fused):
        return Fused(on_engine(stage.parallel, engine), stage.fusion)  # type: ignore[arg-type]
    if type(stage) is Rerank:
        if stage.reranker.score_type != "relevance":
            logger.info("%s scores whole lists: it runs in-process", stage.label)
            return stage
        out = DaftRerank(stage.reranker, stage.depth, stage.batch_queries, engine=engine)
        out.label = stage.label
        return out
    if type(stage) is Dense:
        # every setting of the stage: its backend options and passages too (a stage on onnx must
        # not become a torch one on the engine)
        p = stage.passages
        out = DaftDense(
            stage.model,
            stage.top_k,
            device=stage.device,
            dtype=stage.dtype,
            passages=p is not None,
            window=None if p is None else p.window,
            stride=None if p is None else p.stride,
            engine=engine,
            **stage.options,
        )
        out.label = stage.label
        return out
    return stage
