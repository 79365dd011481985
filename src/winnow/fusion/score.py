"""Score fusion: CombSUM, CombMNZ and weighted sum of normalised scores.

Fox & Shaw, "Combination of Multiple Searches", TREC-2 (1994): CombSUM adds a document's
scores over the runs; CombMNZ multiplies that sum by the number of runs that retrieved it.
Lee (SIGIR 1997) showed both work best on min-max normalised scores, the default here.
A document missing from a run contributes 0 for that run.
"""

from __future__ import annotations

from collections.abc import Sequence

from winnow._runs import sort_and_cut
from winnow.errors import ConfigError
from winnow.fusion._common import check_runs, check_weights
from winnow.fusion.normalize import normalize
from winnow.types import Run

METHODS = ("combsum", "combmnz", "wsum")


def score_fusion(
    runs: Sequence[Run],
    norm: str = "minmax",
    method: str = "combsum",
    weights: Sequence[float] | None = None,
    top_k: int | None = None,
) -> Run:
    """Fuse ``runs`` by their normalised scores.

    Args:
        runs: runs to fuse.
        norm: per-query normalisation (``minmax``, ``zscore``, ``max``, ``sum``, ``none``).
        method: ``combsum`` (sum of ``w_i * s_i``), ``combmnz`` (that sum times the number of runs
            retrieving the document) or ``wsum`` (weighted sum; ``weights`` required).
        weights: one non-negative weight per run (1.0 each when omitted).
        top_k: keep this many documents per query.

    Returns a new run, each query best first with ties ordered by ``doc_id``; inputs are not
    modified.
    """
    runs = check_runs(runs)
    if method not in METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "wsum" and weights is None:
        raise ConfigError("method='wsum' needs weights, one per run")
    weights = check_weights(weights, len(runs))
    total: Run = {}
    hits: dict[str, dict[str, int]] = {}
    for run, weight in zip(runs, weights):
        for qid, docs in normalize(run, norm).items():
            acc = total.setdefault(qid, {})
            count = hits.setdefault(qid, {})
            for doc_id, score in docs.items():
                acc[doc_id] = acc.get(doc_id, 0.0) + weight * score
                count[doc_id] = count.get(doc_id, 0) + 1
    if method == "combmnz":
        total = {q: {d: s * hits[q][d] for d, s in docs.items()} for q, docs in total.items()}
    return sort_and_cut(total, top_k)
