"""winnow runs and qrels as ranx ``Run`` / ``Qrels``, and back (``pip install 'winnow[ranx]'``).

winnow and ranx share the TREC shape (``{query_id: {doc_id: score}}``), so the conversion is a copy
that checks types on the way: hand winnow's runs to ranx's fusion (``ranx.fuse``), comparison
(``ranx.compare``) and statistical tests, and bring fused runs back to winnow's evaluation::

    from ranx import fuse
    from winnow.integrations.ranx import from_ranx_run, to_ranx_run

    fused = fuse([to_ranx_run(bm25, "bm25"), to_ranx_run(dense, "dense")], method="rrf")
    run = from_ranx_run(fused)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from winnow.errors import InputError, require
from winnow.types import Qrels, Run

ranx = require("ranx", "ranx")


def _checked(mapping: Any, what: str, value_type: type) -> dict[str, dict[str, Any]]:
    if not isinstance(mapping, Mapping):
        raise InputError(
            f"{what} must be a {{query_id: {{doc_id: value}}}} mapping, got {mapping!r}"
        )
    out: dict[str, dict[str, Any]] = {}
    for qid, ranking in mapping.items():
        if not isinstance(ranking, Mapping):
            raise InputError(f"{what}[{qid!r}] must be a {{doc_id: value}} mapping")
        row = {}
        for doc_id, value in ranking.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{what}[{qid!r}][{doc_id!r}] is {value!r}, expected a number")
            row[str(doc_id)] = value_type(value)
        out[str(qid)] = row
    return out


def to_ranx_run(run: Mapping[str, Mapping[str, float]], name: str | None = None) -> Any:
    """A ``ranx.Run`` holding ``run`` (named ``name`` in ranx's reports and comparisons)."""
    return ranx.Run(_checked(run, "run", float), name=name)


def to_ranx_qrels(qrels: Mapping[str, Mapping[str, int]], name: str | None = None) -> Any:
    """A ``ranx.Qrels`` holding ``qrels`` (relevance grades as integers)."""
    checked = _checked(qrels, "qrels", float)
    for qid, row in checked.items():
        for doc_id, grade in row.items():
            if grade != int(grade):
                raise InputError(f"qrels[{qid!r}][{doc_id!r}] is {grade!r}, expected an integer")
            row[doc_id] = int(grade)
    return ranx.Qrels(checked, name=name)


def from_ranx_run(run: Any) -> Run:
    """A winnow run (plain dicts, float scores) from a ``ranx.Run``."""
    if not isinstance(run, ranx.Run):
        raise InputError(f"expected a ranx.Run, got {type(run).__name__}")
    return _checked(run.to_dict(), "run", float)


def from_ranx_qrels(qrels: Any) -> Qrels:
    """Winnow qrels (plain dicts, integer grades) from a ``ranx.Qrels``."""
    if not isinstance(qrels, ranx.Qrels):
        raise InputError(f"expected a ranx.Qrels, got {type(qrels).__name__}")
    return _checked(qrels.to_dict(), "qrels", int)
