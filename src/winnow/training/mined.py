"""Reading mined training files: sentence-transformers' ``mine_hard_negatives`` formats, JSONL or Parquet.

Formats, told apart by their columns (the names ``mine_hard_negatives`` and ``winnow mine`` write):

==================  ==================================================================
pair                anchor, positive
triplet             anchor, positive, negative
n-tuple             anchor, positive, negative_1 .. negative_N
n-tuple-scores      anchor, positive, negative_1 .. negative_N, scores (list: positive first)
labeled-pair        anchor, positive (the document), label (0/1) or score
labeled-list        anchor, positive (list of documents), labels (0/1 list) or scores
==================  ==================================================================

``query`` is accepted for ``anchor``. Every row must have the same columns; text columns hold
non-empty strings. Errors name the file and the line (JSONL) or row (Parquet).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.data._lines import numbered_lines
from winnow.errors import DatasetError

FORMATS = ("pair", "triplet", "n-tuple", "n-tuple-scores", "labeled-pair", "labeled-list")
_NEGATIVE_N = re.compile(r"^negative_(\d+)$")


@dataclass(frozen=True)
class Mined:
    """A mined file's rows, with the format its columns say it is in."""

    path: str
    format: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]

    @property
    def negatives(self) -> tuple[str, ...]:
        """The negative text columns, in order."""
        return tuple(c for c in self.columns if c == "negative" or _NEGATIVE_N.match(c))

    def tuples(self) -> dict[str, list[str]]:
        """(anchor, positive, negatives...) columns for in-batch losses (pair / triplet / n-tuple)."""
        if self.format not in ("pair", "triplet", "n-tuple", "n-tuple-scores"):
            raise DatasetError(
                f"is in the {self.format} format, which has no (anchor, positive, negative...) "
                "tuples; mine it as triplet or n-tuple for this loss",
                self.path,
            )
        names = ("anchor", "positive", *self.negatives)
        return {name: [row[name] for row in self.rows] for name in names}

    def labeled_pairs(self) -> dict[str, list]:
        """(query, document, label) rows for pointwise losses: positives 1, negatives 0."""
        q, d, y = [], [], []
        if self.format == "labeled-pair":
            if "label" not in self.columns:
                raise DatasetError(
                    "has scores but no 0/1 'label' column; a BCE loss needs labels", self.path
                )
            for row in self.rows:
                q.append(row["anchor"])
                d.append(row["positive"])
                y.append(float(row["label"]))
        else:
            for query, docs, labels in self._lists():
                q += [query] * len(docs)
                d += docs
                y += labels
        return {"query": q, "document": d, "label": y}

    def labeled_lists(self) -> dict[str, list]:
        """(query, documents, labels) rows for listwise losses."""
        rows = list(self._lists())
        return {
            "query": [r[0] for r in rows],
            "docs": [r[1] for r in rows],
            "labels": [r[2] for r in rows],
        }

    def _lists(self):
        if self.format == "labeled-list":
            if "labels" not in self.columns:
                raise DatasetError(
                    "has scores but no 0/1 'labels' column; this loss needs labels", self.path
                )
            for row in self.rows:
                yield row["anchor"], list(row["positive"]), [float(x) for x in row["labels"]]
        elif self.format == "labeled-pair":
            grouped: dict[str, tuple[list[str], list[float]]] = {}
            for pair_query, doc, label in zip(*self.labeled_pairs().values()):
                docs, labels = grouped.setdefault(pair_query, ([], []))
                docs.append(doc)
                labels.append(label)
            for query, (docs, labels) in grouped.items():
                yield query, docs, labels
        else:
            negatives = self.negatives
            for row in self.rows:
                docs = [row["positive"], *(row[n] for n in negatives)]
                yield row["anchor"], docs, [1.0] + [0.0] * len(negatives)


def _rows_jsonl(path: Path) -> list[tuple[str, Any]]:
    rows = []
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"not valid JSON ({exc.msg})", path, number) from None
        rows.append((f"line {number}", value))
    return rows


def _rows_parquet(path: Path) -> list[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow ships with datasets
        from winnow.errors import MissingExtraError

        raise MissingExtraError("training", "pyarrow") from exc
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except Exception as exc:
        raise DatasetError(f"not a readable Parquet file ({exc})", path) from None
    return [(f"row {i + 1}", row) for i, row in enumerate(table.to_pylist())]


def _format(columns: tuple[str, ...], first: dict[str, Any]) -> str:
    has = set(columns)
    numbered = sorted(int(m.group(1)) for c in columns if (m := _NEGATIVE_N.match(c)))
    if "negative" in has and numbered:
        raise DatasetError("has both 'negative' and 'negative_N' columns")
    if numbered and numbered != list(range(1, len(numbered) + 1)):
        raise DatasetError(f"negative_N columns must be negative_1..negative_{len(numbered)}")
    if has & {"labels", "scores"} and isinstance(first.get("positive"), list):
        return "labeled-list"
    if has & {"label", "score"}:
        return "labeled-pair"
    if numbered:
        return "n-tuple-scores" if "scores" in has else "n-tuple"
    if "negative" in has:
        return "triplet"
    return "pair"


def read_mined(path: str | os.PathLike) -> Mined:
    """Read and validate a mined file (``.jsonl`` / ``.json`` lines, or ``.parquet``).

    Raises:
        DatasetError: missing, empty or malformed file; a row that is not an object, lacks a column
            or has an empty or non-string text (the message names the line or row and column).
    """
    p = Path(path)
    if p.is_dir():
        raise DatasetError("is a folder; expected a mined .jsonl or .parquet file", p)
    reader = _rows_parquet if p.suffix.lower() in (".parquet", ".pq") else _rows_jsonl
    records = reader(p)
    if not records:
        raise DatasetError("is empty: no training rows", p)
    where0, first = records[0]
    if not isinstance(first, dict):
        raise DatasetError(f"{where0}: expected a JSON object, got {type(first).__name__}", p)
    if "query" in first and "anchor" not in first:  # mine_hard_negatives keeps the column names
        records = [(w, _rename(r)) for w, r in records]
        first = records[0][1]
    columns = tuple(first)
    missing = [c for c in ("anchor", "positive") if c not in columns]
    if missing:
        raise DatasetError(
            f"{where0}: missing column(s) {', '.join(map(repr, missing))}; found {list(columns)}",
            p,
        )
    try:
        fmt = _format(columns, first)
    except DatasetError as exc:
        raise DatasetError(exc.reason, p) from None
    mined = Mined(str(p), fmt, columns, [])
    texts = ("anchor", *mined.negatives) + (() if fmt == "labeled-list" else ("positive",))
    rows = []
    for where, row in records:
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}", p)
        if "query" in row and "anchor" not in row:
            row = _rename(row)
        absent = [c for c in columns if c not in row]
        if absent:
            raise DatasetError(f"{where}: missing column(s) {', '.join(map(repr, absent))}", p)
        extra = [c for c in row if c not in columns]
        if extra:
            raise DatasetError(
                f"{where}: column(s) {', '.join(map(repr, extra))} not in the first row", p
            )
        for column in texts:
            _check_text(row[column], p, where, column)
        _check_labels(row, fmt, p, where)
        rows.append(row)
    return Mined(str(p), fmt, columns, rows)


def _rename(row: dict[str, Any]) -> dict[str, Any]:
    return {("anchor" if k == "query" else k): v for k, v in row.items()}


def _check_text(value: Any, path: Path, where: str, column: str) -> None:
    if not isinstance(value, str):
        raise DatasetError(
            f"{where}: column {column!r} must be a string, got {type(value).__name__}", path
        )
    if not value.strip():
        raise DatasetError(f"{where}: column {column!r} is empty", path)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_labels(row: dict[str, Any], fmt: str, path: Path, where: str) -> None:
    if fmt == "labeled-pair":
        column = "label" if "label" in row else "score"
        if not _number(row[column]):
            raise DatasetError(f"{where}: column {column!r} must be a number", path)
        if column == "label" and row[column] not in (0, 1):
            raise DatasetError(f"{where}: column 'label' must be 0 or 1, got {row[column]!r}", path)
    elif fmt == "labeled-list":
        docs = row["positive"]
        if not isinstance(docs, list) or not docs:
            raise DatasetError(f"{where}: column 'positive' must be a non-empty list", path)
        for doc in docs:
            _check_text(doc, path, where, "positive")
        column = "labels" if "labels" in row else "scores"
        values = row[column]
        if not isinstance(values, list) or len(values) != len(docs):
            raise DatasetError(
                f"{where}: column {column!r} must be a list as long as 'positive' ({len(docs)})",
                path,
            )
        if not all(_number(v) for v in values):
            raise DatasetError(f"{where}: column {column!r} must hold numbers", path)
    elif fmt == "n-tuple-scores":
        values = row["scores"]
        n = 1 + sum(1 for c in row if _NEGATIVE_N.match(c))
        if not isinstance(values, list) or len(values) != n or not all(map(_number, values)):
            raise DatasetError(f"{where}: column 'scores' must be a list of {n} numbers", path)
