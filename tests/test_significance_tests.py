"""Significance tests (paired t-test, Wilcoxon, Fisher randomisation) and corrections (Holm,
Bonferroni, none), with closed-form expectations; ir_measures measure objects and "did you mean"
for metric names."""

from __future__ import annotations

import pytest
from ir_measures import AP, nDCG

from winnow.errors import ConfigError
from winnow.evaluation.metrics import Evaluator, evaluate, parse_metrics
from winnow.evaluation.significance import (
    bonferroni,
    check_test,
    compare,
    holm,
    randomization_test,
    wilcoxon_test,
)

# five queries where the system beats the baseline on every one, by 0.1 .. 0.5
BASE = [0.1, 0.2, 0.3, 0.2, 0.1]
BETTER = [b + d for b, d in zip(BASE, [0.1, 0.2, 0.3, 0.4, 0.5])]


def test_wilcoxon_all_positive_differences_exact_p():
    # n = 5, every rank positive: W = 0, exact two-sided p = 2 / 2**5
    w, p = wilcoxon_test(BETTER, BASE)
    assert w == 0.0
    assert p == pytest.approx(2 / 32)


def test_randomization_is_exact_for_small_n_and_repeatable():
    # only the all-plus and all-minus sign assignments reach |mean diff| = 0.3: p = 2 / 32
    diff, p = randomization_test(BETTER, BASE, permutations=10_000)
    assert diff == pytest.approx(0.3)
    assert p == pytest.approx(2 / 32)
    many = [0.1 * (i % 7) for i in range(40)]
    shifted = [v + (0.05 if i % 3 else -0.02) for i, v in enumerate(many)]
    first = randomization_test(shifted, many, permutations=2000, seed=3)
    assert randomization_test(shifted, many, permutations=2000, seed=3) == first
    assert 0.0 < first[1] < 0.05


def test_identical_samples_are_not_significant():
    assert wilcoxon_test(BASE, BASE) == (0.0, 1.0)
    assert randomization_test(BASE, BASE) == (0.0, 1.0)


def test_corrections_closed_forms():
    ps = {"a": 0.01, "b": 0.04, "c": 0.03}
    assert bonferroni(ps) == pytest.approx({"a": 0.03, "b": 0.12, "c": 0.09})
    # Holm: sorted 0.01, 0.03, 0.04 times 3, 2, 1, made monotone
    assert holm(ps) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert bonferroni({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


RUNS = {
    "base": {"q1": {"d1": 1.0, "d2": 0.5}, "q2": {"d3": 1.0, "d4": 0.5}, "q3": {"d5": 1.0}},
    "good": {"q1": {"d2": 1.0, "d1": 0.5}, "q2": {"d4": 1.0, "d3": 0.5}, "q3": {"d6": 1.0}},
    "same": {"q1": {"d1": 1.0, "d2": 0.5}, "q2": {"d3": 1.0, "d4": 0.5}, "q3": {"d5": 1.0}},
}
QRELS = {"q1": {"d2": 1}, "q2": {"d4": 1}, "q3": {"d6": 1}}


@pytest.mark.parametrize("test", ["t-test", "wilcoxon", "randomization", "fisher", "permutation"])
@pytest.mark.parametrize("correction", ["holm", "bonferroni", "none"])
def test_compare_with_each_test_and_correction(test, correction):
    result = compare(RUNS, QRELS, baseline="base", metrics=["RR"], test=test, correction=correction)
    assert result.test == check_test(test) and result.correction == correction
    good, same = result.tests["good"]["RR"], result.tests["same"]["RR"]
    assert good["delta"] == pytest.approx(1 - (0.5 + 0.5 + 0) / 3)  # RR 1, 1, 1 vs 1/2, 1/2, 0
    assert same["p"] == 1.0 and same["p_adjusted"] == 1.0
    raw = {"good": good["p"], "same": same["p"]}
    expected = {"holm": holm, "bonferroni": bonferroni, "none": dict}[correction](raw)
    assert good["p_adjusted"] == pytest.approx(expected["good"])
    assert ("p_holm" in good) == (correction == "holm")


def test_unknown_test_and_correction_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid tests: t-test, wilcoxon, randomization"):
        compare(RUNS, QRELS, test="mann-whitney")
    with pytest.raises(ConfigError, match="valid corrections: holm, bonferroni, none"):
        compare(RUNS, QRELS, correction="fdr")


def test_ir_measures_objects_are_accepted():
    # before: AttributeError ('_nDCG' object has no attribute 'partition')
    assert parse_metrics([nDCG @ 10, AP, "R@100"]) == ["nDCG@10", "AP", "R@100"]
    ours = evaluate(RUNS["good"], QRELS, [nDCG @ 10])
    assert ours == evaluate(RUNS["good"], QRELS, ["nDCG@10"])
    assert Evaluator(QRELS, [nDCG @ 10, AP]).metrics == ["nDCG@10", "AP"]


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("ndcg@10", "nDCG@10"), ("Recal@100", "Recall@100"), ("mrr@10", "MRR@10")],
)
def test_misspelled_metric_suggests_the_right_spelling(typo, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean {suggestion}"):
        parse_metrics([typo])


def test_a_metric_of_the_wrong_type_is_named():
    with pytest.raises(ConfigError, match="a metric is a name"):
        parse_metrics([10])


def _tiny_dataset():
    from winnow.types import Dataset, Document

    corpus = {
        "d1": Document("d1", "wing lift"),
        "d2": Document("d2", "heat transfer plate"),
        "d3": Document("d3", "shock wave cone"),
    }
    queries = {"q1": "wing", "q2": "heat", "q3": "shock"}
    return Dataset("tiny", corpus, queries, {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}})


def test_experiment_checks_the_test_before_any_work_and_reports_the_choice():
    import io

    from winnow.evaluation.experiment import experiment
    from winnow.evaluation.report import print_tables
    from winnow.pipeline import BM25

    class Counting(BM25):
        calls = 0

        def transform(self, queries, run, ctx):
            Counting.calls += 1
            return super().transform(queries, run, ctx)

    with pytest.raises(ConfigError, match="unknown significance test 'z-test'"):
        experiment({"a": Counting(), "b": Counting(top_k=1)}, _tiny_dataset(), test="z-test")
    assert Counting.calls == 0
    result = experiment(
        {"a": BM25(), "b": BM25(top_k=1)},
        _tiny_dataset(),
        metrics=["nDCG@10"],
        test="wilcoxon",
        correction="bonferroni",
    )
    doc = result.to_dict()
    assert doc["test"] == "wilcoxon" and doc["correction"] == "bonferroni"
    assert (
        doc["significance_test"]
        == "Wilcoxon signed-rank test vs baseline, Bonferroni-corrected over systems"
    )
    out = io.StringIO()
    print_tables(result, file=out)
    printed = " ".join(out.getvalue().split())  # rich wraps long lines
    assert "two-sided Wilcoxon signed-rank test per metric, Bonferroni-corrected" in printed
