"""Reciprocal rank fusion.

Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual Rank
Learning Methods", SIGIR 2009: ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks and
k = 60. A document absent from a run contributes nothing for that run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from winnow._runs import ranked, sort_and_cut
from winnow.errors import ConfigError
from winnow.fusion._common import check_runs, check_weights
from winnow.types import Run


def rrf(
    runs: Sequence[Run],
    k: float = 60,
    weights: Sequence[float] | None = None,
    top_k: int | None = None,
) -> Run:
    """Fuse ``runs`` by reciprocal rank; each run's ranks come from its scores.

    Within a run, documents are ranked by score descending, equal scores by ``doc_id`` (the same
    order ``write_run`` writes). The result holds every query of any run, each ranking best first
    (ties by ``doc_id``), cut to ``top_k`` when given. Inputs are not modified.
    """
    runs = check_runs(runs)
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise ConfigError(f"RRF k must be a finite number >= 0, got {k!r}")
    weights = check_weights(weights, len(runs))
    fused: Run = {}
    for run, weight in zip(runs, weights):
        for qid, docs in run.items():
            acc = fused.setdefault(qid, {})
            for rank, (doc_id, _) in enumerate(ranked(docs), start=1):
                acc[doc_id] = acc.get(doc_id, 0.0) + weight / (k + rank)
    return sort_and_cut(fused, top_k)
