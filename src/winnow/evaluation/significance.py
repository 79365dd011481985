"""Compare systems against a baseline: a paired test per metric, a correction over systems.

As in PyTerrier's ``Experiment`` and ranx's ``compare``: for each metric, every system's per-query
values are compared with the baseline's by a two-sided paired test, and the p-values of the
systems are adjusted together. The tests (:data:`TESTS`), all from scipy:

- ``t-test`` (default): Student's paired t-test (``scipy.stats.ttest_rel``);
- ``wilcoxon``: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``; zero differences dropped);
- ``randomization``: Fisher's randomisation (permutation) test on the mean difference, flipping
  the sign of each query's difference at random (``scipy.stats.permutation_test``, exact when
  ``2**n <= permutations``), as recommended for IR by Smucker, Allan and Carterette, "A Comparison
  of Statistical Significance Tests for Information Retrieval Evaluation", CIKM 2007.

The corrections (:data:`CORRECTIONS`): ``holm`` (default; Holm, "A Simple Sequentially Rejective
Multiple Test Procedure", Scand. J. Statistics 1979: controls the family-wise error rate without
assuming independence), ``bonferroni`` (p times the number of systems) and ``none``.
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


def wilcoxon_test(values: Sequence[float], baseline: Sequence[float]) -> tuple[float, float]:
    """(W statistic, two-sided p-value) of the Wilcoxon signed-rank test, paired by position.

    All differences zero gives (0.0, 1.0) (scipy raises or returns NaN there).
    """
    from scipy import stats

    if len(values) != len(baseline):
        raise ConfigError(f"paired samples differ in length: {len(values)} vs {len(baseline)}")
    if all(a == b for a, b in zip(values, baseline)):
        return 0.0, 1.0
    result = stats.wilcoxon(values, baseline)
    return float(result.statistic), float(result.pvalue)


def randomization_test(
    values: Sequence[float],
    baseline: Sequence[float],
    permutations: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean difference, two-sided p-value) of Fisher's paired randomisation test.

    Each query's pair is swapped (its difference's sign flipped) at random ``permutations`` times
    with a fixed ``seed``, so results repeat; with ``2**n <= permutations`` every assignment is
    enumerated and the p-value is exact.
    """
    import numpy as np
    from scipy import stats

    if len(values) != len(baseline):
        raise ConfigError(f"paired samples differ in length: {len(values)} vs {len(baseline)}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ConfigError(f"permutations must be a positive integer, got {permutations!r}")
    x, y = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    observed = float(np.mean(x - y)) if len(x) else 0.0
    if len(x) < 2 or np.all(x == y):
        return observed, 1.0
    result = stats.permutation_test(
        (x, y),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=permutations,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return observed, float(min(1.0, result.pvalue))


#: Paired tests by name: (values, baseline) -> (statistic, two-sided p-value).
TESTS = {"t-test": paired_ttest, "wilcoxon": wilcoxon_test, "randomization": randomization_test}
#: Accepted spellings of the test names (ranx's and PyTerrier's words).
TEST_ALIASES = {
    "t": "t-test",
    "ttest": "t-test",
    "student": "t-test",
    "paired-t": "t-test",
    "fisher": "randomization",
    "permutation": "randomization",
    "randomisation": "randomization",
}
#: The statistic each test reports, for tables.
STATISTIC = {"t-test": "t", "wilcoxon": "W", "randomization": "mean diff"}


def check_test(name: str) -> str:
    """The canonical test name for ``name`` (or an alias); ConfigError listing them otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"test must be a string, got {type(name).__name__}")
    canonical = TEST_ALIASES.get(name.lower(), name.lower())
    if canonical not in TESTS:
        raise ConfigError(
            f"unknown significance test {name!r}; valid tests: {', '.join(TESTS)} "
            f"(also {', '.join(TEST_ALIASES)})"
        )
    return canonical


def bonferroni(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Bonferroni-adjusted p-values: each times the number of tests, capped at 1."""
    m = len(pvalues)
    return {name: min(1.0, m * p) for name, p in pvalues.items()}


def no_correction(pvalues: Mapping[str, float]) -> dict[str, float]:
    return dict(pvalues)


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


#: Multiple-comparison corrections by name: {system: p} -> {system: adjusted p}.
CORRECTIONS = {"holm": holm, "bonferroni": bonferroni, "none": no_correction}


def check_correction(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in CORRECTIONS:
        raise ConfigError(
            f"unknown correction {name!r}; valid corrections: {', '.join(CORRECTIONS)}"
        )
    return name.lower()


def describe_test(test: str = "t-test", correction: str = "holm") -> str:
    """``"paired t-test vs baseline, Holm-corrected over systems"`` and the like, for reports."""
    words = {
        "t-test": "paired t-test",
        "wilcoxon": "Wilcoxon signed-rank test",
        "randomization": "Fisher randomisation test",
    }
    fixes = {
        "holm": "Holm-corrected over systems",
        "bonferroni": "Bonferroni-corrected over systems",
        "none": "no correction",
    }
    return f"{words[test]} vs baseline, {fixes[correction]}"


@dataclass
class Comparison:
    """Metrics of several systems and their tests against the baseline.

    ``means[system][metric]``, ``per_query[system][metric][query_id]``, and
    ``tests[system][metric] = {"delta", "statistic", "p", "p_adjusted", "significant"}`` for every
    system other than the baseline (also ``"t"`` = the statistic and, with the Holm correction,
    ``"p_holm"`` = the adjusted p, the names of earlier versions).
    """

    baseline: str
    metrics: list[str]
    alpha: float
    test: str = "t-test"
    correction: str = "holm"
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
    *,
    test: str = "t-test",
    correction: str = "holm",
    permutations: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Evaluate ``systems`` and test each against ``baseline`` (default: the first system).

    ``test`` is ``t-test``, ``wilcoxon`` or ``randomization`` (``fisher``, ``permutation``);
    ``correction`` is ``holm``, ``bonferroni`` or ``none``; ``permutations`` and ``seed`` drive
    the randomisation test. A difference is marked significant when its adjusted p-value is below
    ``alpha``.
    """
    test = check_test(test)
    correction = check_correction(correction)
    if not systems:
        raise ConfigError("compare() needs at least one system")
    baseline = baseline if baseline is not None else next(iter(systems))
    if baseline not in systems:
        raise ConfigError(f"baseline {baseline!r} is not one of the systems: {', '.join(systems)}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    evaluator = evaluator or Evaluator(qrels, metrics)
    result = Comparison(
        baseline=baseline,
        metrics=list(evaluator.metrics),
        alpha=alpha,
        test=test,
        correction=correction,
    )
    if test == "randomization":

        def run_test(a, b):
            return randomization_test(a, b, permutations, seed)
    else:
        run_test = TESTS[test]
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
            raw[name] = run_test(values, [base[metric][q] for q in qids])
        adjusted = CORRECTIONS[correction]({name: p for name, (_, p) in raw.items()})
        for name in others:
            statistic, p = raw[name]
            entry = {
                "delta": result.means[name][metric] - result.means[baseline][metric],
                "statistic": statistic,
                "t": statistic,
                "p": p,
                "p_adjusted": adjusted[name],
                "significant": adjusted[name] < alpha,
            }
            if correction == "holm":
                entry["p_holm"] = adjusted[name]
            result.tests.setdefault(name, {})[metric] = entry
    return result
