"""``experiment``: run named pipelines on a collection, evaluate them and compare with a baseline.

In the spirit of PyTerrier's ``pt.Experiment``: every system runs on the same queries within one
:class:`~winnow.pipeline.Context` (so an index built for one system serves the others), its stage
timings are kept, and the runs are compared with :func:`~winnow.evaluation.significance.compare`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError
from winnow.evaluation.metrics import DEFAULT_METRICS, Evaluator
from winnow.evaluation.significance import Comparison, compare, describe_test
from winnow.pipeline.base import PHASES, Context, Stage, StageTiming
from winnow.types import Dataset, Run


@dataclass
class SystemResult:
    """One system's run, stage timings and wall time."""

    name: str
    pipeline: Stage
    run: Run
    timings: list[StageTiming]
    wall_seconds: float
    num_queries: int

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per phase (index, retrieve, fuse, rerank, ...), ``encode`` and ``total``.

        ``encode`` is the part of index and retrieve time the retrievers report as encoding
        (dense embeddings); it is included in those phases, not added to them. ``total`` is the
        system's wall time.
        """
        out: dict[str, float] = {}
        for t in self.timings:
            out[t.phase] = out.get(t.phase, 0.0) + t.seconds
            for part, value in t.parts.items():
                if "encode" in part:
                    out["encode"] = out.get("encode", 0.0) + value
        ordered = {p: round(out[p], 6) for p in PHASES if p in out}
        ordered["total"] = round(self.wall_seconds, 6)
        return ordered

    @property
    def pairs(self) -> int:
        return sum(t.pairs for t in self.timings if t.phase == "rerank")

    @property
    def queries_per_second(self) -> float | None:
        return self.num_queries / self.wall_seconds if self.wall_seconds > 0 else None

    @property
    def pairs_per_second(self) -> float | None:
        """Reranked (query, document) pairs per second of rerank time (None without a rerank
        stage, or when every rerank stage was answered from the cache)."""
        scored = [t for t in self.timings if t.phase == "rerank" and not t.cached]
        seconds = sum(t.seconds for t in scored)
        pairs = sum(t.pairs for t in scored)
        return pairs / seconds if pairs and seconds > 0 else None

    @property
    def cached(self) -> bool:
        """Every index, search and rerank of this system was served from a cache (the disk cache
        or, within one run, a system before it)."""
        heavy = [t for t in self.timings if t.phase in ("index", "retrieve", "rerank")]
        return bool(heavy) and all(t.cached for t in heavy)


@dataclass
class ExperimentResult:
    """Runs, timings and the comparison of an experiment."""

    dataset: str
    queries: dict[str, str]
    systems: dict[str, SystemResult]
    comparison: Comparison
    specs: dict[str, str] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.comparison.baseline

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` document: ``{"dataset", "systems": {name: {metric: x, ...,
        "seconds": {...}}}, "baseline"}`` plus per-system significance, throughput and stages."""
        systems: dict[str, Any] = {}
        for name, res in self.systems.items():
            entry: dict[str, Any] = dict(self.comparison.means[name])
            entry["seconds"] = res.seconds
            entry["queries_per_second"] = res.queries_per_second
            entry["pairs"] = res.pairs
            entry["pairs_per_second"] = res.pairs_per_second
            entry["pipeline"] = self.specs.get(name, res.pipeline.label)
            entry["stages"] = [t.as_dict() for t in res.timings]
            if name in self.comparison.tests:
                entry["significance"] = self.comparison.tests[name]
            systems[name] = entry
        return {
            "dataset": self.dataset,
            "systems": systems,
            "baseline": self.baseline,
            "metrics": self.comparison.metrics,
            "queries": len(self.queries),
            "alpha": self.comparison.alpha,
            "significance_test": describe_test(self.comparison.test, self.comparison.correction),
            "test": self.comparison.test,
            "correction": self.comparison.correction,
        }


def select_queries(dataset: Dataset, limit: int | None = None) -> dict[str, str]:
    """The dataset's queries that have judgments (all of them when there are no qrels), in file
    order, the first ``limit`` of them when given."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"the number of queries must be a positive integer, got {limit!r}")
    items = [(q, t) for q, t in dataset.queries.items() if not dataset.qrels or q in dataset.qrels]
    if not items:
        raise ConfigError(f"dataset {dataset.name!r} has no judged queries to evaluate")
    return dict(items[:limit] if limit else items)


def experiment(
    pipelines: Mapping[str, Stage],
    dataset: Dataset,
    *,
    baseline: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    alpha: float = 0.05,
    queries: Mapping[str, str] | int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    context: Context | None = None,
    specs: Mapping[str, str] | None = None,
    test: str = "t-test",
    correction: str = "holm",
) -> ExperimentResult:
    """Run each named pipeline on ``dataset``, evaluate against its qrels, compare with ``baseline``.

    Args:
        pipelines: name -> stage (``{"bm25": BM25(), "hybrid": (BM25() | Dense()) >> RRF()}``).
        baseline: the system the others are tested against (default: the first).
        metrics: metric names (:data:`~winnow.evaluation.metrics.DEFAULT_METRICS`).
        alpha: significance level for the adjusted p-values.
        test: ``t-test`` (default), ``wilcoxon`` or ``randomization`` (Fisher; ``permutation``).
        correction: ``holm`` (default), ``bonferroni`` or ``none`` (over the systems).
        queries: the queries to run (a mapping), or how many of the judged ones (an int; all
            judged queries when omitted).
        cache_dir: where indexes, embeddings and rerank scores are kept between runs.
        progress: show progress bars.
        context: a context to reuse (its memo keeps indexes across calls); built when omitted.
        specs: the spec text of each system, recorded in the results.
    """
    if not pipelines:
        raise ConfigError("experiment() needs at least one pipeline")
    from winnow.evaluation.significance import check_correction, check_test

    test, correction = check_test(test), check_correction(correction)  # before any work
    if baseline is not None and baseline not in pipelines:
        raise ConfigError(
            f"baseline {baseline!r} is not one of the systems: {', '.join(pipelines)}"
        )
    if not dataset.qrels:
        raise ConfigError(f"dataset {dataset.name!r} has no relevance judgments to evaluate with")
    if queries is None or isinstance(queries, int):
        chosen = select_queries(dataset, queries)
    else:
        chosen = dict(queries)
    qrels = {q: dict(dataset.qrels[q]) for q in chosen if q in dataset.qrels}
    if not qrels:
        raise ConfigError(f"none of the {len(chosen)} queries has judgments in {dataset.name!r}")
    evaluator = Evaluator(qrels, metrics)
    ctx = context or Context(dataset, cache_dir=cache_dir, progress=progress)
    results: dict[str, SystemResult] = {}
    for name, stage in pipelines.items():
        mark = len(ctx.timings)
        started = time.perf_counter()
        run = stage.transform(chosen, None, ctx)
        wall = time.perf_counter() - started
        results[name] = SystemResult(name, stage, run, ctx.timings[mark:], wall, len(chosen))
    comparison = compare(
        {n: r.run for n, r in results.items()},
        qrels,
        baseline=baseline,
        alpha=alpha,
        evaluator=evaluator,
        test=test,
        correction=correction,
    )
    return ExperimentResult(dataset.name, chosen, results, comparison, dict(specs or {}))
