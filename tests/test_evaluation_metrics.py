"""Metrics against closed forms and ir_measures; significance and Holm against hand computation."""

from __future__ import annotations

import math
import random
import statistics

import ir_measures
import pytest

from winnow.errors import ConfigError
from winnow.evaluation import Evaluator, compare, evaluate, holm, paired_ttest, parse_metrics

QRELS = {"q1": {"d1": 3, "d2": 1, "d5": 2}, "q2": {"d9": 1}}
# q1 ranking: d2, d4, d1, d3, d5 (q2 has no results at all)
RUN = {"q1": {"d2": 5.0, "d4": 4.0, "d1": 3.0, "d3": 2.0, "d5": 1.0}}


def test_closed_form_values_of_a_hand_made_ranking():
    per_query = Evaluator(QRELS).per_query(RUN)
    # trec_eval nDCG: linear gains, discount log2(rank + 1)
    dcg = 1 / math.log2(2) + 3 / math.log2(4) + 2 / math.log2(6)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert per_query["nDCG@10"]["q1"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert per_query["P@10"]["q1"] == pytest.approx(3 / 10)
    assert per_query["R@100"]["q1"] == pytest.approx(1.0)
    assert per_query["MAP"]["q1"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3, abs=1e-6)
    assert per_query["MRR@10"]["q1"] == pytest.approx(1.0)
    # a query without results counts as 0 in the mean (trec_eval -c)
    assert all(per_query[m]["q2"] == 0.0 for m in per_query)
    means = evaluate(RUN, QRELS)
    assert means["nDCG@10"] == pytest.approx(dcg / idcg / 2, abs=1e-6)
    assert means["MAP"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3 / 2, abs=1e-6)


def test_matches_ir_measures_when_every_query_is_answered():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{q}": {d: rng.randint(0, 3) for d in rng.sample(docs, 12)} for q in range(20)}
    run = {q: {d: rng.random() for d in rng.sample(docs, 40)} for q in qrels}
    names = ["nDCG@10", "R@100", "R@1000", "MAP", "MRR@10", "P@10", "nDCG@5"]
    ours = Evaluator(qrels, names).aggregate(run)
    measures = [
        ir_measures.parse_measure(n)
        for n in ["nDCG@10", "R@100", "R@1000", "AP", "RR@10", "P@10", "nDCG@5"]
    ]
    ref = ir_measures.calc_aggregate(measures, qrels, run)
    for name, measure in zip(names, measures):
        assert ours[name] == pytest.approx(ref[measure], abs=1e-9), name


def test_one_evaluator_serves_many_runs_without_changing_them():
    evaluator = Evaluator(QRELS, ["nDCG@10"])
    other = {"q1": {"d1": 1.0}, "q2": {"d9": 1.0}}
    before = {q: dict(d) for q, d in other.items()}
    assert evaluator.aggregate(other)["nDCG@10"] == pytest.approx(
        (3 / (3 + 2 / math.log2(3) + 1 / 2) + 1.0) / 2
    )
    assert evaluator.aggregate(RUN)["nDCG@10"] < 1
    assert other == before


def test_metric_names_are_checked():
    assert parse_metrics("nDCG@10, MAP,MAP") == ["nDCG@10", "MAP"]
    with pytest.raises(ConfigError, match="unknown metric 'nDCG@@3'"):
        parse_metrics("nDCG@@3")
    with pytest.raises(ConfigError, match="empty metric"):
        parse_metrics("nDCG@10,,MAP")
    with pytest.raises(ConfigError, match="qrels are empty"):
        Evaluator({})


def test_paired_ttest_matches_the_hand_formula():
    a = [0.5, 0.7, 0.2, 0.9, 0.4, 0.6]
    b = [0.4, 0.5, 0.3, 0.6, 0.4, 0.3]
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    t_hand = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(n))
    # two-sided p from the t distribution with n - 1 degrees of freedom: integrate its density
    # (the Student t density in closed form) by Simpson's rule from |t| to a far tail
    nu = n - 1
    c = math.gamma((nu + 1) / 2) / (math.sqrt(nu * math.pi) * math.gamma(nu / 2))

    def density(x):
        return c * (1 + x * x / nu) ** (-(nu + 1) / 2)

    lo, hi, steps = abs(t_hand), 2000.0, 400_000
    h = (hi - lo) / steps
    area = density(lo) + density(hi)
    area += sum((4 if i % 2 else 2) * density(lo + i * h) for i in range(1, steps))
    p_hand = 2 * area * h / 3
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(t_hand, rel=1e-9)
    assert p == pytest.approx(p_hand, rel=1e-4)
    assert paired_ttest(a, a) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="differ in length"):
        paired_ttest(a, b[:-1])


def test_holm_step_down_by_hand():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted a (x3) = 0.03, c (x2) = 0.06, b (x1) = 0.04 -> kept monotone at 0.06
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"x": 0.7, "y": 0.9}) == pytest.approx({"x": 1.0, "y": 1.0})
    assert holm({}) == {}


def test_compare_tests_each_system_against_the_baseline_with_holm():
    rng = random.Random(3)
    qrels = {f"q{i}": {"rel": 1} for i in range(30)}
    docs = [f"n{j}" for j in range(9)]

    def run_with_rel_at(ranks):
        run = {}
        for i, r in enumerate(ranks):
            order = list(docs)
            order.insert(r - 1, "rel")
            run[f"q{i}"] = {d: float(10 - k) for k, d in enumerate(order)}
        return run

    base = run_with_rel_at([rng.randint(3, 10) for _ in range(30)])
    good = run_with_rel_at([1] * 30)
    same = {q: dict(d) for q, d in base.items()}
    result = compare(
        {"base": base, "good": good, "same": same},
        qrels,
        baseline="base",
        metrics=["MRR@10", "P@10"],
    )
    assert result.baseline == "base" and set(result.tests) == {"good", "same"}
    t = result.tests["good"]["MRR@10"]
    values = result.per_query["good"]["MRR@10"]
    base_values = result.per_query["base"]["MRR@10"]
    qids = sorted(qrels)
    _, p_good = paired_ttest([values[q] for q in qids], [base_values[q] for q in qids])
    assert t["p"] == pytest.approx(p_good)
    assert t["p_holm"] == pytest.approx(min(1.0, 2 * p_good))  # smallest of two p-values
    assert t["significant"] and t["delta"] > 0
    assert result.significant("good", "MRR@10")
    # P@10 is identical for everyone (the relevant doc is always in the top 10)
    assert not result.tests["good"]["P@10"]["significant"]
    assert result.tests["same"]["MRR@10"] == {
        "delta": 0.0,
        "statistic": 0.0,
        "t": 0.0,
        "p": 1.0,
        "p_adjusted": 1.0,
        "p_holm": 1.0,
        "significant": False,
    }
    with pytest.raises(ConfigError, match="baseline 'nope' is not one of the systems"):
        compare({"base": base}, qrels, baseline="nope")
