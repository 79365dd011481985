"""Ordering and cutting runs, written once: score descending, ties broken by ``doc_id`` ascending."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from winnow.errors import ConfigError
from winnow.types import Run


def ranked(doc_scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs best first; equal scores ordered by ``doc_id`` so output is stable."""
    return sorted(doc_scores.items(), key=lambda item: (-item[1], item[0]))


def check_top_k(top_k: int | None) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
    return top_k


def sort_and_cut(run: Mapping[str, Mapping[str, float]], top_k: int | None = None) -> Run:
    """A new run whose per-query dicts iterate best first, keeping at most ``top_k`` documents."""
    top_k = check_top_k(top_k)
    out: Run = {}
    for qid, docs in run.items():
        items = ranked(docs)
        if top_k is not None:
            items = items[:top_k]
        out[qid] = dict(items)
    return out


def tie_break_order(doc_ids: Sequence[str]) -> np.ndarray:
    """Position of each id in sorted order: a numeric tie-break key equal to ordering by ``doc_id``."""
    order = np.empty(len(doc_ids), dtype=np.int64)
    order[np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")] = np.arange(len(doc_ids))
    return order
