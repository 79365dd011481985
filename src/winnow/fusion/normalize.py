"""Per-query score normalisation, applied before score fusion.

* ``minmax``: ``(s - min) / (max - min)`` (Lee, "Analyses of multiple evidence combination",
  SIGIR 1997). When all scores of a query are equal (including a single document) every score
  becomes 1.0: each is that run's best match, and 0 would make them indistinguishable from
  documents the run did not retrieve.
* ``zscore``: ``(s - mean) / std`` (population std). When std is 0, every score becomes 0.
* ``max``: ``s / max(|s|)``; all-zero queries stay 0.
* ``sum``: ``s / sum(|s|)``; all-zero queries stay 0.
* ``none``: scores unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from winnow.errors import ConfigError
from winnow.types import Run

METHODS = ("minmax", "zscore", "max", "sum", "none")


def _normalize_query(scores: Mapping[str, float], method: str) -> dict[str, float]:
    if not scores:
        return {}
    values = [float(v) for v in scores.values()]
    if method == "none":
        return dict(zip(scores, values))
    if method == "minmax":
        lo, hi = min(values), max(values)
        if hi == lo:
            return dict.fromkeys(scores, 1.0)
        span = hi - lo
        return {d: (v - lo) / span for d, v in zip(scores, values)}
    if method == "zscore":
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        if std == 0:
            return dict.fromkeys(scores, 0.0)
        return {d: (v - mean) / std for d, v in zip(scores, values)}
    if method == "max":
        top = max(abs(v) for v in values)
        return {d: (v / top if top else 0.0) for d, v in zip(scores, values)}
    total = math.fsum(abs(v) for v in values)  # "sum"
    return {d: (v / total if total else 0.0) for d, v in zip(scores, values)}


def normalize(run: Mapping[str, Mapping[str, float]], method: str = "minmax") -> Run:
    """A new run with each query's scores normalised by ``method`` (see module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"unknown normalisation {method!r}; choose one of {', '.join(METHODS)}")
    return {qid: _normalize_query(docs, method) for qid, docs in run.items()}
