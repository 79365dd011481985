"""Evaluation: metrics (ir_measures), significance against a baseline, experiments and reports."""

from winnow.evaluation.experiment import ExperimentResult, SystemResult, experiment, select_queries
from winnow.evaluation.metrics import DEFAULT_METRICS, Evaluator, evaluate, parse_metrics
from winnow.evaluation.significance import (
    CORRECTIONS,
    TESTS,
    Comparison,
    bonferroni,
    compare,
    holm,
    paired_ttest,
    randomization_test,
    wilcoxon_test,
)

__all__ = [
    "CORRECTIONS",
    "DEFAULT_METRICS",
    "TESTS",
    "Comparison",
    "Evaluator",
    "ExperimentResult",
    "SystemResult",
    "bonferroni",
    "compare",
    "evaluate",
    "experiment",
    "holm",
    "paired_ttest",
    "parse_metrics",
    "randomization_test",
    "select_queries",
    "wilcoxon_test",
]
