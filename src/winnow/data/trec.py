"""TREC run and qrels files, and BEIR's tab-separated qrels.

* run: ``query_id Q0 doc_id rank score tag`` (six whitespace-separated columns);
* qrels (TREC): ``query_id iteration doc_id relevance`` (four columns, iteration ignored);
* qrels (BEIR): ``query-id<TAB>corpus-id<TAB>score`` after a header line.

Readers raise :class:`~winnow.errors.DatasetError` naming file and line for any malformed line.
Writers replace the target atomically and order each query's documents by score descending, ties
broken by ``doc_id``; queries are written in natural id order (``2`` before ``10``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from winnow._fs import atomic_open
from winnow._runs import ranked
from winnow.data._lines import numbered_lines
from winnow.errors import DatasetError, InputError
from winnow.types import Qrels, Run

#: Relevance grades must fit a 32-bit signed integer (pytrec_eval fails on larger ones).
RELEVANCE_LIMIT = 2**31


def natural_key(text: str) -> tuple[int, int, str]:
    """Sort key putting numeric ids in numeric order before other ids."""
    return (0, int(text), text) if text.isdigit() else (1, 0, text)


def _int(value: str, what: str, path: Path, number: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{what} must be an integer, got {value!r}", path, number) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def iter_qrels(path: str | os.PathLike) -> Iterator[tuple[int, str, str, int]]:
    """``(line, query_id, doc_id, relevance)`` for each judgment of a TREC or BEIR qrels file.

    The format is fixed by the first non-blank line: four columns is TREC, three is BEIR (whose
    first line is a header such as ``query-id corpus-id score``). Blank lines are skipped.
    """
    path = Path(path)
    columns: int | None = None
    for number, line in numbered_lines(path):
        fields = line.split()
        if not fields:
            continue
        if columns is None:
            if len(fields) not in (3, 4):
                raise DatasetError(
                    f"expected 4 columns (TREC: query_id 0 doc_id relevance) or 3 "
                    f"(BEIR: query-id corpus-id score), got {len(fields)}",
                    path,
                    number,
                )
            columns = len(fields)
            if columns == 3 and not _is_number(fields[2]):
                continue  # BEIR header line ("query-id corpus-id score")
        if len(fields) != columns:
            raise DatasetError(f"expected {columns} columns, got {len(fields)}", path, number)
        if columns == 4:
            qid, _, doc_id, rel = fields
        else:
            qid, doc_id, rel = fields
        grade = _int(rel, "relevance", path, number)
        if not -RELEVANCE_LIMIT <= grade < RELEVANCE_LIMIT:  # trec_eval keeps grades in a C int
            raise DatasetError(
                f"relevance {grade} is out of range (-2**31 to 2**31 - 1)", path, number
            )
        yield number, qid, doc_id, grade


def read_qrels(path: str | os.PathLike) -> Qrels:
    """``{query_id: {doc_id: relevance}}`` from a TREC or BEIR qrels file.

    Raises:
        DatasetError: wrong number of columns, non-integer relevance, or the same
            (query, document) judged twice with different relevance.
    """
    path = Path(path)
    qrels: Qrels = {}
    for number, qid, doc_id, rel in iter_qrels(path):
        docs = qrels.setdefault(qid, {})
        if doc_id in docs and docs[doc_id] != rel:
            raise DatasetError(
                f"conflicting judgment for ({qid!r}, {doc_id!r}): {rel} here, {docs[doc_id]} earlier",
                path,
                number,
            )
        docs[doc_id] = rel
    return qrels


def _check_token(value: str, what: str) -> str:
    text = str(value)
    if text.split() != [text]:  # empty, or holds whitespace (str.split splits on str.isspace)
        raise InputError(
            f"{what} {text!r} is empty or contains whitespace; TREC files cannot hold it"
        )
    return text


def write_qrels(
    qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike, *, format: str = "trec"
) -> None:
    """Write qrels atomically, as TREC (``qid 0 docid rel``) or BEIR tsv (``format="beir"``)."""
    if format not in ("trec", "beir"):
        raise InputError(f"format must be 'trec' or 'beir', got {format!r}")
    with atomic_open(path) as f:
        if format == "beir":
            f.write("query-id\tcorpus-id\tscore\n")
        for qid in sorted(qrels, key=natural_key):
            q = _check_token(qid, "query id")
            for doc_id in sorted(qrels[qid], key=natural_key):
                rel = qrels[qid][doc_id]
                if isinstance(rel, bool) or int(rel) != rel:
                    raise InputError(
                        f"relevance of ({qid!r}, {doc_id!r}) must be an integer, got {rel!r}"
                    )
                d = _check_token(doc_id, "document id")
                f.write(
                    f"{q}\t{d}\t{int(rel)}\n" if format == "beir" else f"{q} 0 {d} {int(rel)}\n"
                )


def iter_run(path: str | os.PathLike) -> Iterator[tuple[int, str, str, float]]:
    """``(line, query_id, doc_id, score)`` for each line of a TREC run file, checked as
    :func:`read_run` checks them (blank lines are skipped)."""
    path = Path(path)
    first_line: dict[tuple[str, str], int] = {}
    for number, line in numbered_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DatasetError(
                f"expected 6 columns (query_id Q0 doc_id rank score tag), got {len(fields)}",
                path,
                number,
            )
        qid, _, doc_id, rank, score_text, _ = fields
        _int(rank, "rank", path, number)
        try:
            score = float(score_text)
        except ValueError:
            raise DatasetError(
                f"score must be a number, got {score_text!r}", path, number
            ) from None
        if math.isnan(score):
            raise DatasetError("score is NaN", path, number)
        key = (qid, doc_id)
        if key in first_line:
            raise DatasetError(
                f"document {doc_id!r} appears twice for query {qid!r} (first on line {first_line[key]})",
                path,
                number,
            )
        first_line[key] = number
        yield number, qid, doc_id, score


def read_run(path: str | os.PathLike) -> Run:
    """``{query_id: {doc_id: score}}`` from a TREC run file (six columns per line).

    The rank column must be an integer but is otherwise ignored (scores define the order, as in
    trec_eval). Raises :class:`DatasetError` on a malformed line, a non-numeric or NaN score, or a
    document listed twice for the same query. An empty file gives an empty run.
    """
    run: Run = {}
    for _, qid, doc_id, score in iter_run(path):
        run.setdefault(qid, {})[doc_id] = score
    return run


def run_line(path: str | os.PathLike, query_id: str, doc_id: str | None = None) -> int | None:
    """The first line of a run file naming ``query_id`` (and ``doc_id`` when given), for errors."""
    for number, qid, d, _ in iter_run(path):
        if qid == query_id and (doc_id is None or d == doc_id):
            return number
    return None


def write_run(
    run: Mapping[str, Mapping[str, float]], path: str | os.PathLike, tag: str = "winnow"
) -> None:
    """Write ``run`` atomically as a TREC run file.

    Each query's documents get ranks 1..n by descending score, equal scores ordered by ``doc_id``.
    Scores are written with ``repr`` so :func:`read_run` gives back exactly the same floats.
    """
    tag = _check_token(tag, "run tag")
    checked: set[str] = set()  # document ids recur across queries: check each one once
    with atomic_open(path) as f:
        for qid in sorted(run, key=natural_key):
            q = _check_token(qid, "query id")
            lines = []
            for rank, (doc_id, score) in enumerate(ranked(run[qid]), start=1):
                value = float(score)
                if math.isnan(value):
                    raise InputError(f"score of ({qid!r}, {doc_id!r}) is NaN")
                if doc_id not in checked:
                    checked.add(_check_token(doc_id, "document id"))
                lines.append(f"{q} Q0 {doc_id} {rank} {value!r} {tag}\n")
            f.write("".join(lines))
