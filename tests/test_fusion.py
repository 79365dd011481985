"""Fusion: closed-form values on hand-made runs, degenerate cases, determinism, no mutation."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winnow.errors import ConfigError, InputError
from winnow.fusion import normalize, rrf, score_fusion

A = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"x": 5.0}}
B = {"q1": {"d3": 10.0, "d4": 5.0}, "q3": {"y": 1.0}}


def test_rrf_closed_form():
    fused = rrf([A, B])
    assert fused["q1"] == pytest.approx(
        {"d3": 1 / 63 + 1 / 61, "d1": 1 / 61, "d2": 1 / 62, "d4": 1 / 62}
    )
    # d2 and d4 tie at 1/62: doc_id breaks the tie
    assert list(fused["q1"]) == ["d3", "d1", "d2", "d4"]
    assert fused["q2"] == {"x": 1 / 61} and fused["q3"] == {"y": 1 / 61}


def test_rrf_k_weights_and_top_k():
    fused = rrf([A, B], k=0, weights=[1.0, 0.5])
    assert fused["q1"] == pytest.approx({"d1": 1.0, "d2": 0.5, "d3": 1 / 3 + 0.5, "d4": 0.25})
    assert list(fused["q1"]) == ["d1", "d3", "d2", "d4"]
    assert list(rrf([A, B], top_k=2)["q1"]) == ["d3", "d1"]


def test_rrf_ranks_ties_in_a_run_by_doc_id():
    fused = rrf([{"q": {"b": 1.0, "a": 1.0}}], k=1)
    assert fused["q"] == {"a": 1 / 2, "b": 1 / 3}


def test_rrf_bad_arguments():
    with pytest.raises(ConfigError, match="weights"):
        rrf([A, B], weights=[1.0])
    with pytest.raises(ConfigError, match="k must be"):
        rrf([A], k=-1)
    with pytest.raises(InputError, match="at least one run"):
        rrf([])
    with pytest.raises(InputError, match="sequence of runs"):
        rrf(A)


def test_minmax_and_degenerate():
    run = {
        "q": {"a": 2.0, "b": 4.0, "c": 3.0},
        "one": {"z": -7.0},
        "tie": {"u": 2.0, "v": 2.0},
        "e": {},
    }
    out = normalize(run, "minmax")
    assert out["q"] == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert out["one"] == {"z": 1.0} and out["tie"] == {"u": 1.0, "v": 1.0} and out["e"] == {}


def test_zscore_max_sum_none():
    run = {"q": {"a": 1.0, "b": 2.0, "c": 3.0}, "tie": {"u": 5.0, "v": 5.0}}
    std = math.sqrt(2 / 3)
    z = normalize(run, "zscore")
    assert z["q"] == pytest.approx({"a": -1 / std, "b": 0.0, "c": 1 / std})
    assert z["tie"] == {"u": 0.0, "v": 0.0}
    assert normalize(run, "max")["q"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1.0})
    assert normalize(run, "sum")["q"] == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6})
    assert normalize({"q": {"a": 0.0}}, "max") == {"q": {"a": 0.0}}
    assert normalize({"q": {"a": -2.0, "b": 1.0}}, "max")["q"] == {"a": -1.0, "b": 0.5}
    assert normalize(run, "none") == run
    with pytest.raises(ConfigError, match="unknown normalisation"):
        normalize(run, "softmax")


def test_combsum_and_combmnz_minmax():
    # min-max: A q1 -> d1 1, d2 .5, d3 0 ; B q1 -> d3 1, d4 0
    s = score_fusion([A, B], norm="minmax", method="combsum")
    assert s["q1"] == {"d1": 1.0, "d2": 0.5, "d3": 1.0, "d4": 0.0}
    assert list(s["q1"]) == ["d1", "d3", "d2", "d4"]  # d1/d3 tie -> doc_id
    m = score_fusion([A, B], norm="minmax", method="combmnz")
    assert m["q1"] == {"d1": 1.0, "d2": 0.5, "d3": 2.0, "d4": 0.0}
    assert m["q2"] == {"x": 1.0}  # a lone document scores 1.0 under min-max


def test_combsum_zscore_and_weights():
    s = score_fusion([A, B], norm="zscore", method="combsum")
    za = 1 / math.sqrt(2 / 3)
    assert s["q1"] == pytest.approx({"d1": za, "d2": 0.0, "d3": -za + 1.0, "d4": -1.0})
    assert s["q2"] == {"x": 0.0}
    w = score_fusion([A, B], norm="minmax", method="wsum", weights=[0.25, 2.0])
    assert w["q1"] == pytest.approx({"d1": 0.25, "d2": 0.125, "d3": 2.0, "d4": 0.0})
    assert list(score_fusion([A, B], top_k=1)["q1"]) == ["d1"]


def test_score_fusion_bad_arguments():
    with pytest.raises(ConfigError, match="needs weights"):
        score_fusion([A, B], method="wsum")
    with pytest.raises(ConfigError, match="unknown fusion method"):
        score_fusion([A, B], method="borda")
    with pytest.raises(ConfigError, match=">= 0"):
        score_fusion([A, B], weights=[1.0, -1.0])
    with pytest.raises(ConfigError, match="unknown normalisation"):
        score_fusion([A, B], norm="rank")


def test_inputs_never_mutated():
    a, b = copy.deepcopy(A), copy.deepcopy(B)
    rrf([a, b], weights=[1, 2], top_k=1)
    for norm in ("minmax", "zscore", "max", "sum", "none"):
        normalize(a, norm)
        for method in ("combsum", "combmnz"):
            score_fusion([a, b], norm=norm, method=method, top_k=1)
    assert a == A and b == B


runs = st.dictionaries(
    st.sampled_from(["q1", "q2"]),
    st.dictionaries(st.sampled_from(list("abcdef")), st.floats(-5, 5, allow_nan=False), min_size=1),
)


@settings(deadline=None, max_examples=60)
@given(runs, runs)
def test_fusion_is_symmetric_and_deterministic(r1, r2):
    assert rrf([r1, r2]) == rrf([r2, r1])
    for fused in (rrf([r1, r2]), score_fusion([r1, r2], method="combmnz")):
        for docs in fused.values():
            keys = [(-s, d) for d, s in docs.items()]
            assert keys == sorted(keys)
    assert list(score_fusion([r1, r2])) == list(score_fusion([r1, r2]))
