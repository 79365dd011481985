"""Input checks shared by the retrievers."""

from __future__ import annotations

from collections.abc import Mapping

from winnow.errors import InputError
from winnow.types import Document


def check_corpus(corpus: Mapping[str, Document]) -> None:
    """Raise :class:`InputError` unless ``corpus`` is a non-empty ``{doc_id: Document}`` mapping."""
    if not isinstance(corpus, Mapping):
        raise InputError(
            f"corpus must be a mapping doc_id -> Document, got {type(corpus).__name__}"
        )
    if not corpus:
        raise InputError("cannot index an empty corpus")
    for doc_id, doc in corpus.items():
        if not isinstance(doc, Document):
            raise InputError(
                f"corpus[{doc_id!r}] must be a winnow.types.Document, got {type(doc).__name__}"
            )


def check_queries(queries: Mapping[str, str]) -> list[str]:
    """The query ids of ``queries``, after checking every text is a string."""
    if not isinstance(queries, Mapping):
        raise InputError(
            f"queries must be a mapping query_id -> text, got {type(queries).__name__}"
        )
    for qid, text in queries.items():
        if not isinstance(text, str):
            raise InputError(f"query {qid!r} must be a string, got {type(text).__name__}")
    return list(queries)
