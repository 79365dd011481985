"""Compare systems against a baseline: paired t-tests per metric, Holm correction over systems.

As in PyTerrier's ``Experiment``: for each metric, every system's per-query values are compared
with the baseline's by a two-sided paired t-test (``scipy.stats.ttest_rel``), and the p-values of
the systems are adjusted together with Holm's step-down method (Holm, "A Simple Sequentially
Rejective Multiple Test Procedure", Scand. J. Statistics 1979), which controls the family-wise
error rate without assuming independence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from winnow.errors import ConfigError
from winnow.evaluation.metrics import DEFAULT_METRICS, Evaluator
from winnow.types import Run


def paired_ttest(values: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """(t statistic, two-sided p-value) of ``values`` against ``baseline``, paired by position.

    Identical samples (all differences zero) give (0.0, 1.0) where scipy would return NaN.
    """
    from scipy import stats

    if len(values) != len(baseline):
        raise ConfigError(f"paired samples differ in length: {len(values)} vs {len(baseline)}")
    if len(values) < 2:
        return 0.0, 1.0
    diffs = [a - b for a, b in zip(values, baseline)]
    if all(d == diffs[0] for d in diffs):
        # zero variance: no evidence either way when every difference is 0; scipy gives NaN / inf
        return (0.0, 1.0) if diffs[0] == 0 else (math.copysign(math.inf, diffs[0]), 0.0)
    result = stats.ttest_rel(values, baseline)
    return float(result.statistic), float(result.pvalue)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values: sorted ascending, p_(i) * (m - i + 1), made monotone, capped at 1."""
    order = sorted(pvalues, key=lambda name: (pvalues[name], name))
    m = len(order)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


@dataclass
class Comparison:
    """Metrics of several systems and their tests against the baseline.

    ``means[system][metric]``, ``per_query[system][metric][query_id]``, and
    ``tests[system][metric] = {"delta", "t", "p", "p_holm", "significant"}`` for every system other
    than the baseline.
    """

    baseline: str
    metrics: list[str]
    alpha: float
    means: dict[str, dict[str, float]] = field(default_factory=dict)
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    tests: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def significant(self, system: str, metric: str) -> bool:
        return bool(self.tests.get(system, {}).get(metric, {}).get("significant", False))


def compare(
    systems: Mapping[str, Run],
    qrels: Mapping[str, Mapping[str, int]],
    baseline: str | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    alpha: float = 0.05,
    evaluator: Evaluator | None = None,
) -> Comparison:
    """Evaluate ``systems`` and test each against ``baseline`` (default: the first system).

    A difference is marked significant when its Holm-adjusted p-value is below ``alpha``.
    """
    if not systems:
        raise ConfigError("compare() needs at least one system")
    baseline = baseline if baseline is not None else next(iter(systems))
    if baseline not in systems:
        raise ConfigError(f"baseline {baseline!r} is not one of the systems: {', '.join(systems)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    evaluator = evaluator or Evaluator(qrels, metrics)
    result = Comparison(baseline=baseline, metrics=list(evaluator.metrics), alpha=alpha)
    for name, run in systems.items():
        result.per_query[name] = evaluator.per_query(run)
        result.means[name] = evaluator.aggregate(run, result.per_query[name])
    qids = evaluator.query_ids
    others = [name for name in systems if name != baseline]
    base = result.per_query[baseline]
    for metric in result.metrics:
        raw: dict[str, tuple[float, float]] = {}
        for name in others:
            values = [result.per_query[name][metric][q] for q in qids]
            raw[name] = paired_ttest(values, [base[metric][q] for q in qids])
        adjusted = holm({name: p for name, (_, p) in raw.items()})
        for name in others:
            t, p = raw[name]
            result.tests.setdefault(name, {})[metric] = {
                "delta": result.means[name][metric] - result.means[baseline][metric],
                "t": t,
                "p": p,
                "p_holm": adjusted[name],
                "significant": adjusted[name] < alpha,
            }
    return result
