"""Evaluation: metrics (ir_measures), significance against a baseline, experiments and reports."""

from winnow.evaluation.experiment import ExperimentResult, SystemResult, experiment, select_queries
from winnow.evaluation.metrics import DEFAULT_METRICS, Evaluator, evaluate, parse_metrics
from winnow.evaluation.significance import Comparison, compare, holm, paired_ttest

__all__ = [
    "DEFAULT_METRICS",
    "Comparison",
    "Evaluator",
    "ExperimentResult",
    "SystemResult",
    "compare",
    "evaluate",
    "experiment",
    "holm",
    "paired_ttest",
    "parse_metrics",
    "select_queries",
]
