"""Mined negatives as the tables sentence-transformers trainers read, written as JSONL or Parquet.

Column names and row layout are exactly those of ``sentence_transformers.util.mine_hard_negatives``
(with the anchor column called ``anchor`` and the positive column ``positive``):

- ``triplet``: ``anchor, positive, negative`` — one row per (positive, negative);
- ``n-tuple``: ``anchor, positive, negative_1 .. negative_N`` — one row per positive, only for
  queries that kept all N negatives;
- ``n-tuple-scores``: ``n-tuple`` plus ``scores`` = ``[positive, negative_1, .., negative_N]``
  judge scores (MarginMSE / KL distillation targets);
- ``labeled-pair``: ``anchor, positive, label`` — each positive once with label 1, then each
  negative once with label 0 (the ``positive`` column holds either, as in sentence-transformers);
- ``labeled-list``: ``anchor, positive, labels`` — one row per positive: ``[positive, negatives..]``
  with labels ``[1, 0, ..]``.

With ``output_scores`` the judge's scores are added as sentence-transformers does: a ``scores``
column ``[positive, negative]`` for triplets, and ``score`` / ``scores`` instead of ``label`` /
``labels`` for the labeled formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow._fs import atomic_open
from winnow.errors import ConfigError, require

FORMATS = ("triplet", "n-tuple", "n-tuple-scores", "labeled-pair", "labeled-list")
SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Mined:
    """One query's texts: its positives and its chosen negatives, each with the judge's score."""

    query: str
    positives: Sequence[tuple[str, float]]
    negatives: Sequence[tuple[str, float]]  # best first


def check_format(output_format: str, output_scores: bool) -> tuple[str, bool]:
    """``(format, output_scores)`` with ``n-tuple-scores`` read as ``n-tuple`` plus scores."""
    if output_format not in FORMATS:
        raise ConfigError(f"output format {output_format!r} is not one of {', '.join(FORMATS)}")
    if output_format == "n-tuple-scores":
        return "n-tuple", True
    return output_format, bool(output_scores)


def output_kind(path: str | os.PathLike, option: str = "output") -> str:
    """``json`` or ``parquet`` from the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{option} {os.fspath(path)!r}: the suffix must be one of {', '.join(SUFFIXES)} "
            f"(JSON lines or Parquet), got {suffix or 'none'!r}"
        )
    return SUFFIXES[suffix]


def build_columns(
    items: Sequence[Mined], output_format: str, num_negatives: int, output_scores: bool = False
) -> dict[str, list[Any]]:
    """The output table as ``{column: values}`` (see the module docstring for each format)."""
    fmt, scores = check_format(output_format, output_scores)
    cols: dict[str, list[Any]]
    if fmt == "triplet":
        cols = {"anchor": [], "positive": [], "negative": [], **({"scores": []} if scores else {})}
        for m in items:
            for pos, pos_score in m.positives:
                for neg, neg_score in m.negatives:
                    cols["anchor"].append(m.query)
                    cols["positive"].append(pos)
                    cols["negative"].append(neg)
                    if scores:
                        cols["scores"].append([pos_score, neg_score])
    elif fmt == "n-tuple":
        names = [f"negative_{i}" for i in range(1, num_negatives + 1)]
        cols = {"anchor": [], "positive": [], **{n: [] for n in names}}
        if scores:
            cols["scores"] = []
        for m in items:
            if len(m.negatives) < num_negatives:
                continue
            for pos, pos_score in m.positives:
                cols["anchor"].append(m.query)
                cols["positive"].append(pos)
                for name, (neg, _) in zip(names, m.negatives):
                    cols[name].append(neg)
                if scores:
                    cols["scores"].append([pos_score, *(s for _, s in m.negatives)])
    elif fmt == "labeled-pair":
        target = "score" if scores else "label"
        cols = {"anchor": [], "positive": [], target: []}
        for m in items:
            for text, score, label in [
                *((t, s, 1) for t, s in m.positives),
                *((t, s, 0) for t, s in m.negatives),
            ]:
                cols["anchor"].append(m.query)
                cols["positive"].append(text)
                cols[target].append(score if scores else label)
    else:  # labeled-list
        target = "scores" if scores else "labels"
        cols = {"anchor": [], "positive": [], target: []}
        for m in items:
            if not m.negatives:
                continue
            for pos, pos_score in m.positives:
                cols["anchor"].append(m.query)
                cols["positive"].append([pos, *(t for t, _ in m.negatives)])
                cols[target].append(
                    [pos_score, *(s for _, s in m.negatives)]
                    if scores
                    else [1] + [0] * len(m.negatives)
                )
    return cols


def row_count(columns: dict[str, list[Any]]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def write_columns(columns: dict[str, list[Any]], path: str | os.PathLike) -> None:
    """Write the table atomically: JSON lines (one object per row) or Parquet, by suffix."""
    kind = output_kind(path)
    if kind == "json":
        names = list(columns)
        with atomic_open(path) as f:
            for values in zip(*(columns[n] for n in names)):
                f.write(json.dumps(dict(zip(names, values)), ensure_ascii=False) + "\n")
        return
    pa = require("pyarrow", "training")
    pq = require("pyarrow.parquet", "training")
    table = pa.table(columns)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
