"""First-stage retrieval indexes: BM25 (bm25s), dense bi-encoder and ColBERT search. Each
indexes a corpus (``index(corpus)``) and returns runs (``search(queries, top_k)``).

These are the indexes; the pipeline stages of the same families (:class:`winnow.pipeline.BM25`,
:class:`winnow.pipeline.Dense`, :class:`winnow.pipeline.ColBERT`) build one per collection and
search it inside a pipeline. The indexes were called ``BM25``, ``Dense`` and ``ColBERT`` here too;
those names still import, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from winnow.retrieval.bm25 import BM25Index
from winnow.retrieval.dense import DenseIndex

__all__ = ["BM25Index", "ColBERTIndex", "DenseIndex"]

_LAZY = {"ColBERTIndex": "winnow.retrieval.colbert"}  # pulls the late-interaction scorer


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    from winnow._deprecation import renamed

    return renamed(__name__, name, {"BM25": BM25Index, "Dense": DenseIndex})
