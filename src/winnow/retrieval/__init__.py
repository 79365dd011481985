"""First-stage retrieval: BM25 (bm25s) and dense bi-encoder search. Both return runs."""

from __future__ import annotations

from winnow.retrieval.bm25 import BM25
from winnow.retrieval.dense import Dense

__all__ = ["BM25", "Dense"]
