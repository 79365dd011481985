"""Retrieval pipelines over plain runs, composed with operators like PyTerrier's.

``(BM25() % 100 | Dense() % 100) >> RRF() >> Rerank(reranker) % 10`` or, equivalently,
``Pipeline([Parallel([BM25() % 100, Dense() % 100]), RRF(), Rerank(reranker), Cutoff(10)])``.
``a | b`` runs both on the same input and the fusion stage after it merges their runs (it is not
PyTerrier's set union); the two become one :class:`Fused` stage as the expression is composed.
Run any stage with ``stage.bind(collection)`` (``.search(query)``, or call it on queries),
``stage.transform(queries, None, Context(dataset))`` or :func:`winnow.evaluation.experiment`. System specs (``"bm25%100>>rerank:MODEL"``) are parsed by
:func:`parse_system`.
"""

from winnow.pipeline.base import (
    Context,
    Cutoff,
    Fused,
    FusionStage,
    Parallel,
    Pipeline,
    Stage,
    StageTiming,
    run_stage,
    then,
    top_docs,
)
from winnow.pipeline.bound import BoundPipeline, SearchHit
from winnow.pipeline.feedback import QueryExpansion, Rocchio
from winnow.pipeline.fusion import RRF, ScoreFusion
from winnow.pipeline.rerank import ChunkedRerank, Rerank
from winnow.pipeline.retrieval import BM25, Dense, Retriever
from winnow.pipeline.spec import SYSTEMS, SpecOptions, parse_system, split_systems

__all__ = [
    "BM25",
    "RRF",
    "SYSTEMS",
    "BoundPipeline",
    "ChunkedRerank",
    "Context",
    "Cutoff",
    "Dense",
    "Fused",
    "FusionStage",
    "Parallel",
    "Pipeline",
    "QueryExpansion",
    "Rerank",
    "Retriever",
    "Rocchio",
    "ScoreFusion",
    "SearchHit",
    "SpecOptions",
    "Stage",
    "StageTiming",
    "parse_system",
    "run_stage",
    "split_systems",
    "then",
    "top_docs",
]
