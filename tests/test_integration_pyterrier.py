"""PyTerrier transformers around winnow rerankers and pipelines, with PyTerrier's own operators
and pt.Experiment, and no Java VM started."""

from __future__ import annotations

import pandas as pd
import pyterrier as pt
import pytest

import winnow
from winnow.errors import InputError
from winnow.evaluation.metrics import evaluate
from winnow.integrations.pyterrier import WinnowReranker, WinnowRetriever
from winnow.pipeline import BM25

CORPUS = {
    "d1": "the wing of the aircraft makes lift",
    "d2": "heat transfer in a laminar boundary layer",
    "d3": "supersonic flow over a cone at mach three",
    "d4": "lift and drag of a thin wing in subsonic flow",
}
TOPICS = pd.DataFrame({"qid": ["1", "2"], "query": ["lift of a wing", "heat transfer"]})
QRELS = {"1": {"d1": 1, "d4": 2}, "2": {"d2": 1}}


def test_retriever_returns_pyterrier_results_without_java():
    retrieve = WinnowRetriever(BM25().bind(CORPUS), add_text=True)
    res = retrieve(TOPICS)
    assert list(res.columns) == ["qid", "query", "docno", "score", "rank", "text"]
    run = BM25().bind(CORPUS)({"1": "lift of a wing", "2": "heat transfer"})
    for qid, group in res.groupby("qid"):
        assert dict(zip(group["docno"], group["score"])) == run[qid]
        assert list(group["rank"]) == list(range(len(group)))
    assert not pt.java.started()


def test_reranker_in_a_pyterrier_pipeline_matches_winnow(tiny_bert):
    reranker = winnow.load_reranker(tiny_bert)
    retrieve = WinnowRetriever(BM25().bind(CORPUS), add_text=True)
    res = (retrieve % 3 >> WinnowReranker(reranker))(TOPICS)
    for qid, group in res.groupby("qid", sort=False):
        query = TOPICS.set_index("qid").loc[qid, "query"]
        hits = reranker.rank(query, list(group["text"]))
        assert list(group["rank"]) == list(range(len(group)))
        # scored in one batch with the other query's pairs here: equal up to padding round-off
        assert list(group["score"]) == pytest.approx([h.score for h in hits], abs=1e-5)
        assert list(group["docno"]) == [list(group["docno"])[h.index] for h in hits]
        assert len(group) <= 3


def test_pt_experiment_agrees_with_winnow_evaluation():
    qrels = pd.DataFrame(
        [(q, d, r) for q, docs in QRELS.items() for d, r in docs.items()],
        columns=["qid", "docno", "label"],
    )
    retrieve = WinnowRetriever(BM25().bind(CORPUS))
    table = pt.Experiment([retrieve], TOPICS, qrels, eval_metrics=["ndcg_cut_10"], names=["bm25"])
    run = BM25().bind(CORPUS)({"1": "lift of a wing", "2": "heat transfer"})
    assert table["ndcg_cut_10"].iloc[0] == pytest.approx(
        evaluate(run, QRELS, ["nDCG@10"])["nDCG@10"]
    )


def test_missing_columns_are_named(tiny_bert):
    with pytest.raises(InputError, match="the frame has no docno, text"):
        WinnowReranker(tiny_bert)(TOPICS)
    with pytest.raises(InputError, match="needs a bound pipeline"):
        WinnowRetriever(BM25())
