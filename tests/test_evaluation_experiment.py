"""``experiment()`` and the report writers, on an in-memory collection with hand-made systems."""

from __future__ import annotations

import io
import json

import pytest

from winnow.data import read_run
from winnow.errors import ConfigError
from winnow.evaluation import Evaluator, experiment
from winnow.evaluation.report import markdown_report, print_tables, safe_name, write_report
from winnow.pipeline import Context, Stage
from winnow.types import Dataset, Document

N = 30
CORPUS = {f"d{i}": Document(f"d{i}", f"text {i}") for i in range(10)}
QUERIES = {f"q{i}": f"query {i}" for i in range(N)}
QRELS = {f"q{i}": {"d0": 1} for i in range(N)}


class Fixed(Stage):
    """A first stage that puts d0 at a given rank for every query."""

    def __init__(self, rank: int, label: str):
        self.rank = rank
        self.label = label

    def transform(self, queries, run, ctx):
        with ctx.timed(self.label, "retrieve", len(queries)):
            order = [f"d{i}" for i in range(1, 10)]
            order.insert(self.rank - 1, "d0")
            return {q: {d: float(10 - k) for k, d in enumerate(order)} for q in queries}


@pytest.fixture
def dataset():
    return Dataset("mini", CORPUS, QUERIES, QRELS)


def test_experiment_evaluates_times_and_tests_every_system(dataset):
    systems = {"base": Fixed(5, "base"), "better": Fixed(1, "better"), "worse": Fixed(9, "worse")}
    result = experiment(systems, dataset, baseline="base", metrics=["MRR@10", "nDCG@10"])
    assert list(result.systems) == ["base", "better", "worse"]
    assert result.comparison.means["better"]["MRR@10"] == pytest.approx(1.0)
    assert result.comparison.means["base"]["MRR@10"] == pytest.approx(1 / 5)
    evaluator = Evaluator(QRELS, ["nDCG@10"])
    for name, res in result.systems.items():
        assert result.comparison.means[name]["nDCG@10"] == pytest.approx(
            evaluator.aggregate(res.run)["nDCG@10"]
        )
        assert res.seconds["retrieve"] >= 0 and res.seconds["total"] >= res.seconds["retrieve"]
        assert res.queries_per_second > 0 and res.pairs_per_second is None
    # every query moves the same way: zero variance, an infinite t and p = 0
    assert result.comparison.tests["better"]["MRR@10"]["significant"]
    assert result.comparison.tests["worse"]["MRR@10"]["delta"] < 0
    report = markdown_report(result)
    assert "| better | 1.0000▲ |" in report and "| worse | 0.1111▼ |" in report
    out = io.StringIO()
    print_tables(result, file=out)
    assert "base (baseline)" in out.getvalue() and "timings" in out.getvalue()


def test_write_report_is_complete_and_names_files_safely(dataset, tmp_path):
    systems = {"bm25%5>>rerank:a/b": Fixed(2, "x"), "bm25_5_rerank_a_b": Fixed(3, "y")}
    result = experiment(systems, dataset, queries=4)
    written = write_report(result, tmp_path)
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert (
        set(doc) >= {"dataset", "systems", "baseline"} and doc["baseline"] == "bm25%5>>rerank:a/b"
    )
    runs = [doc["systems"][n]["run"] for n in systems]
    assert runs == ["runs/bm25_5_rerank_a_b.trec", "runs/bm25_5_rerank_a_b-2.trec"]
    for name in systems:
        assert read_run(tmp_path / doc["systems"][name]["run"]) == result.systems[name].run
        assert set(doc["systems"][name]) >= {
            "nDCG@10",
            "R@100",
            "R@1000",
            "MAP",
            "MRR@10",
            "P@10",
            "seconds",
        }
    assert doc["queries"] == 4 and written["plot"].read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
    assert safe_name("a b/c:d") == "a_b_c_d"


def test_experiment_checks_its_arguments(dataset):
    with pytest.raises(ConfigError, match="baseline 'x' is not one of the systems"):
        experiment({"a": Fixed(1, "a")}, dataset, baseline="x")
    with pytest.raises(ConfigError, match="no relevance judgments"):
        experiment({"a": Fixed(1, "a")}, Dataset("nojudge", CORPUS, QUERIES, {}))
    with pytest.raises(ConfigError, match="positive integer"):
        experiment({"a": Fixed(1, "a")}, dataset, queries=0)
    ctx = Context(dataset)
    experiment({"a": Fixed(1, "a")}, dataset, context=ctx)
    assert [t.stage for t in ctx.timings] == ["a"]


def test_plain_tables_without_rich(dataset, monkeypatch):
    import sys

    result = experiment(
        {"base": Fixed(5, "base"), "better": Fixed(1, "better")}, dataset, metrics=["MRR@10"]
    )
    monkeypatch.setitem(sys.modules, "rich.console", None)  # import fails: plain text fallback
    out = io.StringIO()
    print_tables(result, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["system", "MRR@10"]
    assert lines[1].split() == ["base", "(baseline)", "0.2000"]
    assert lines[2].split() == ["better", "1.0000▲"]
