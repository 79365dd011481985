"""Documents given to ``Reranker.rank``: strings, ``{"id", "text", "title", "metadata"}`` dicts or
:class:`winnow.types.Document` objects, checked once and turned into what the model scores.

A document with a title is scored as ``"title text"`` (the way collections are scored everywhere in
winnow, ``Document.full_text``); its id and metadata ride along to the hit. Errors name the argument
the caller passed (``documents[3]``, ``documents_per_query[1][0]``) and the key at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from winnow.errors import InputError
from winnow.types import Document

#: The keys a document dict may have (``doc_id`` is accepted for ``id``, as collections call it).
DOCUMENT_KEYS = ("id", "text", "title", "metadata")


@dataclass(frozen=True)
class CheckedDocument:
    """A validated document: what the model scores, the text as given, its id and metadata."""

    scored: str
    text: str
    id: str | None = None
    metadata: Mapping[str, Any] | None = None


def _from_mapping(doc: Mapping[str, Any], where: str) -> CheckedDocument:
    unknown = [k for k in doc if k not in (*DOCUMENT_KEYS, "doc_id")]
    if unknown:
        raise InputError(
            f"{where} has unknown key {unknown[0]!r}; a document dict has "
            f"{', '.join(repr(k) for k in DOCUMENT_KEYS)} (only 'text' is required)"
        )
    if "id" in doc and "doc_id" in doc:
        raise InputError(f"{where} has both 'id' and 'doc_id'; give one")
    if "text" not in doc:
        raise InputError(f"{where} has no 'text'")
    text, title = doc["text"], doc.get("title") or ""
    doc_id = doc.get("id", doc.get("doc_id"))
    metadata = doc.get("metadata")
    if not isinstance(text, str):
        raise InputError(f"{where}['text'] is {type(text).__name__}, expected str")
    if not isinstance(title, str):
        raise InputError(f"{where}['title'] is {type(title).__name__}, expected str")
    if doc_id is not None and not isinstance(doc_id, (str, int)):
        raise InputError(f"{where}['id'] is {type(doc_id).__name__}, expected str or int")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InputError(f"{where}['metadata'] is {type(metadata).__name__}, expected a dict")
    scored = f"{title} {text}".strip() if title else text
    return CheckedDocument(scored, text, None if doc_id is None else str(doc_id), metadata)


def check_document(doc: Any, where: str) -> CheckedDocument:
    """One document (str, dict or Document) checked; ``where`` names it in errors."""
    if isinstance(doc, str):
        return CheckedDocument(doc, doc)
    if isinstance(doc, Document):
        return CheckedDocument(doc.full_text, doc.text, doc.doc_id, doc.metadata or None)
    if isinstance(doc, Mapping):
        return _from_mapping(doc, where)
    raise InputError(
        f"{where} is {type(doc).__name__}; a document is a str, a dict with 'text' (and 'id', "
        "'title', 'metadata') or a winnow Document"
    )


def check_document_list(documents: Any, where: str = "documents") -> list[CheckedDocument]:
    """A list of documents checked; ``where`` is the argument's name as the caller wrote it."""
    if isinstance(documents, (str, bytes, Mapping)) or not isinstance(documents, Iterable):
        raise InputError(
            f"{where} must be a list of documents (str, dict or Document), "
            f"got {type(documents).__name__}"
        )
    return [check_document(d, f"{where}[{i}]") for i, d in enumerate(documents)]
