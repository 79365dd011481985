"""Reading BEIR-format collections: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Everything is validated before a :class:`~winnow.types.Dataset` is returned; any malformed line
raises :class:`~winnow.errors.DatasetError` naming the file and line, so nothing is half-loaded.

Queries without judgments in the split are kept in ``Dataset.queries`` (BEIR's own loader keeps
them too); evaluation decides what to do with them (``winnow eval`` scores only judged queries).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from winnow.data._lines import numbered_lines
from winnow.data.trec import iter_qrels
from winnow.errors import ConfigError, DatasetError
from winnow.types import Dataset, Document, Qrels, Queries

logger = logging.getLogger(__name__)

#: A lone UTF-16 surrogate: only a JSON ``\uD800``-style escape can put one in a string (the
#: file itself is checked to be UTF-8). Tokenizers and every UTF-8 writer fail on it later.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_surrogates(value: str, key: str, path: Path, number: int) -> str:
    found = _SURROGATE.search(value)
    if found is not None:
        raise DatasetError(
            f'"{key}" holds a lone surrogate \\u{ord(found.group()):04x} at character '
            f"{found.start()} (an invalid \\u escape: not a Unicode character)",
            path,
            number,
        )
    return value


def _json_records(path: Path):
    """``(line, object, escaped)`` for each non-blank line of a JSON-lines file; ``escaped`` is
    true when the line holds a ``\\u`` escape (the only way to a lone surrogate in a string)."""
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"invalid JSON ({exc.msg} at column {exc.colno})", path, number
            ) from None
        except RecursionError:
            raise DatasetError("invalid JSON (nested too deeply)", path, number) from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            reason = str(exc).split(";")[0]
            raise DatasetError(f"invalid JSON ({reason})", path, number) from None
        if not isinstance(obj, dict):
            raise DatasetError(f"expected a JSON object, got {type(obj).__name__}", path, number)
        yield number, obj, "\\u" in line


def _record_id(obj: dict[str, Any], path: Path, number: int, escaped: bool = False) -> str:
    if "_id" not in obj:
        raise DatasetError('missing "_id" field', path, number)
    value = obj["_id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f'"_id" must be a string, got {type(value).__name__}', path, number)
    text = str(value)
    if escaped:
        _check_surrogates(text, "_id", path, number)
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise DatasetError(f'"_id" {text!r} is empty or contains whitespace', path, number)
    return text


def _text_field(
    obj: dict[str, Any], key: str, path: Path, number: int, required: bool, escaped: bool = False
) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise DatasetError(f'missing "{key}" field', path, number)
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise DatasetError(f'"{key}" must be a string, got {type(value).__name__}', path, number)
    return _check_surrogates(value, key, path, number) if escaped else value


def read_corpus(path: str | os.PathLike) -> dict[str, Document]:
    """``{doc_id: Document}`` from a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``)."""
    path = Path(path)
    corpus: dict[str, Document] = {}
    first_line: dict[str, int] = {}
    for number, obj, escaped in _json_records(path):
        doc_id = _record_id(obj, path, number, escaped)
        if doc_id in corpus:
            raise DatasetError(
                f"duplicate document id {doc_id!r} (first on line {first_line[doc_id]})",
                path,
                number,
            )
        text = _text_field(obj, "text", path, number, True, escaped)
        title = _text_field(obj, "title", path, number, False, escaped)
        corpus[doc_id] = Document(doc_id=doc_id, text=text, title=title)
        first_line[doc_id] = number
    if not corpus:
        raise DatasetError("the corpus has no documents", path)
    return corpus


def read_queries(path: str | os.PathLike) -> Queries:
    """``{query_id: text}`` from a BEIR ``queries.jsonl`` (``_id``, ``text``)."""
    path = Path(path)
    queries: Queries = {}
    first_line: dict[str, int] = {}
    for number, obj, escaped in _json_records(path):
        qid = _record_id(obj, path, number, escaped)
        if qid in queries:
            raise DatasetError(
                f"duplicate query id {qid!r} (first on line {first_line[qid]})", path, number
            )
        queries[qid] = _text_field(obj, "text", path, number, True, escaped)
        first_line[qid] = number
    if not queries:
        raise DatasetError("the file has no queries", path)
    return queries


UNKNOWN_IDS = ("error", "drop")


def _check_qrels(
    path: Path, corpus: dict[str, Document], queries: Queries, unknown_ids: str = "error"
) -> Qrels:
    qrels: Qrels = {}
    seen: dict[tuple[str, str], int] = {}
    dropped: list[int] = []
    for number, qid, doc_id, rel in iter_qrels(path):
        problem = None
        if qid not in queries:
            problem = f"query id {qid!r} is not in queries.jsonl"
        elif doc_id not in corpus:
            problem = f"document id {doc_id!r} is not in corpus.jsonl"
        if problem is not None:
            if unknown_ids == "error":
                raise DatasetError(problem, path, number)
            dropped.append(number)
            continue
        previous = seen.get((qid, doc_id))
        if previous is not None:
            if qrels[qid][doc_id] != rel:
                raise DatasetError(
                    f"conflicting judgment for ({qid!r}, {doc_id!r}): {rel} here, "
                    f"{qrels[qid][doc_id]} on line {previous}",
                    path,
                    number,
                )
            logger.warning(
                "%s:%d: repeated judgment for (%r, %r) ignored", path, number, qid, doc_id
            )
            continue
        seen[(qid, doc_id)] = number
        qrels.setdefault(qid, {})[doc_id] = rel
    if dropped:
        lines = ", ".join(map(str, dropped[:10])) + (", ..." if len(dropped) > 10 else "")
        logger.warning(
            "%s: dropped %d judgment(s) naming unknown queries or documents (lines %s)",
            path,
            len(dropped),
            lines,
        )
    if not qrels:
        why = (
            f"all {len(dropped)} judgment(s) name unknown queries or documents"
            if dropped
            else "it is empty or holds only a header line"
        )
        raise DatasetError(f"the qrels file has no judgments: {why}", path)
    return qrels


def load_beir(
    folder: str | os.PathLike,
    split: str = "test",
    *,
    name: str | None = None,
    unknown_ids: str = "error",
) -> Dataset:
    """Load a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

    Args:
        folder: the dataset folder.
        split: which qrels file to read (``test``, ``dev``, ``train``).
        name: dataset name (the folder's name when omitted).
        unknown_ids: what to do with a judgment naming a query or document that does not exist:
            ``"error"`` (the default: :class:`DatasetError` with its line) or ``"drop"`` (skip
            it, logging a warning with the count and the first lines).

    Raises:
        DatasetError: a file is missing or malformed (naming file and line), the corpus is empty,
            ids repeat, or a judgment names a query or document that does not exist.

    Queries without judgments are kept in ``Dataset.queries``; the evaluation decides about them.
    """
    if unknown_ids not in UNKNOWN_IDS:
        raise ConfigError(
            f"unknown_ids must be one of {', '.join(UNKNOWN_IDS)}, got {unknown_ids!r}"
        )
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError("dataset folder not found", root)
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (root / required).is_file():
            raise DatasetError(f"not a BEIR folder: {required} is missing", root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DatasetError(
            f"no qrels for split {split!r}; available splits: {', '.join(available) or 'none'}",
            qrels_path,
        )
    corpus = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root / "queries.jsonl")
    qrels = _check_qrels(qrels_path, corpus, queries, unknown_ids)
    dataset = Dataset(
        name=name or root.resolve().name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        source=str(root),
    )
    unjudged = sum(1 for q in queries if q not in qrels)
    logger.info("loaded %r (%d queries without judgments in %s)", dataset, unjudged, split)
    return dataset
