"""Fusion stages: merge the runs of a parallel stage ``(a | b) >> RRF()``.

The fusion methods themselves (with their papers) live in :mod:`winnow.fusion`.
"""

from __future__ import annotations

from collections.abc import Sequence

from winnow.errors import ConfigError
from winnow.pipeline.base import Context, FusionStage
from winnow.types import Run

SCORE_METHODS = ("combsum", "combmnz")


class RRF(FusionStage):
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): sum of 1 / (k + rank)."""

    def __init__(
        self, k: int = 60, weights: Sequence[float] | None = None, top_k: int | None = None
    ):
        if k < 0:
            raise ConfigError(f"RRF k must be >= 0, got {k}")
        self.k = k
        self.weights = list(weights) if weights is not None else None
        self.top_k = top_k
        self.label = "rrf" if k == 60 else f"rrf(k={k})"

    def fuse(self, runs: Sequence[Run], ctx: Context, queries: int) -> Run:
        from winnow.fusion import rrf

        with ctx.timed(self.label, "fuse", queries):
            return rrf(list(runs), k=self.k, weights=self.weights, top_k=self.top_k)


class ScoreFusion(FusionStage):
    """Score fusion after per-query normalisation: CombSUM or CombMNZ (Fox & Shaw, TREC-2 1994)."""

    def __init__(
        self,
        method: str = "combsum",
        norm: str = "minmax",
        weights: Sequence[float] | None = None,
        top_k: int | None = None,
    ):
        if method not in SCORE_METHODS:
            raise ConfigError(
                f"score fusion method {method!r} is not one of {', '.join(SCORE_METHODS)}"
            )
        self.method = method
        self.norm = norm
        self.weights = list(weights) if weights is not None else None
        self.top_k = top_k
        self.label = method if norm == "minmax" else f"{method}({norm})"

    def fuse(self, runs: Sequence[Run], ctx: Context, queries: int) -> Run:
        from winnow.fusion import score_fusion

        with ctx.timed(self.label, "fuse", queries):
            return score_fusion(
                list(runs),
                norm=self.norm,
                method=self.method,
                weights=self.weights,
                top_k=self.top_k,
            )
