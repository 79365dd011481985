"""Rerankers: one contract (``Reranker.score_pairs``), many backends, loaded once per process."""

from winnow.rerankers.base import PairScores, RankedDocument, Reranker, RerankerConfig
from winnow.rerankers.cache import clear_cache, model_loads, unload
from winnow.rerankers.loading import load_reranker
from winnow.rerankers.registry import available_kinds, register_kind

__all__ = [
    "PairScores",
    "RankedDocument",
    "Reranker",
    "RerankerConfig",
    "available_kinds",
    "clear_cache",
    "load_reranker",
    "model_loads",
    "register_kind",
    "unload",
]
