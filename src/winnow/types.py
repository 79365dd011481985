"""The shared vocabulary of retrieval: documents, collections and runs.

A run is ``{query_id: {doc_id: score}}`` exactly as TREC tools and ir_measures use it; qrels are
``{query_id: {doc_id: relevance}}``. Stages take and return these plain mappings and never mutate
their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
Queries = dict[str, str]


@dataclass(frozen=True)
class Document:
    """One document of a collection (or given to ``Reranker.rank``): id, text, title, metadata.

    ``metadata`` is carried along untouched (rerankers return it on their hits); it takes no part
    in scoring, hashing or equality.
    """

    doc_id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def full_text(self) -> str:
        """Title and text joined the way retrieval and rerankers see them."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class Dataset:
    """A BEIR-style collection: corpus, queries and (optionally) relevance judgments."""

    name: str
    corpus: Mapping[str, Document]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    source: str | None = None  # folder or file it was read from

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, {len(self.corpus)} documents, {len(self.queries)} queries, "
            f"{sum(len(v) for v in self.qrels.values())} judgments)"
        )
