"""Bound pipelines: ``stage.bind(collection)``, called on queries or ``.search(query)``."""

from __future__ import annotations

import pytest

import winnow
from winnow.errors import InputError
from winnow.pipeline import BM25, Context, Rerank
from winnow.types import Dataset, Document

CORPUS = {
    "d1": "the wing of the aircraft makes lift",
    "d2": "heat transfer in a laminar boundary layer",
    "d3": "supersonic flow over a cone at mach three",
    "d4": "lift and drag of a thin wing in subsonic flow",
    "d5": "buckling of a thin shell under load",
}


def test_search_returns_hits_with_ids_scores_and_text():
    pipe = BM25().bind(CORPUS)
    hits = pipe.search("lift of a wing", top_k=2)
    dataset = Dataset("c", {k: Document(k, v) for k, v in CORPUS.items()}, {})
    expected = BM25().transform({"q": "lift of a wing"}, None, Context(dataset))["q"]
    best = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    assert [(h.doc_id, h.score, h.rank) for h in hits] == [
        (doc_id, score, rank) for rank, (doc_id, score) in enumerate(best, start=1)
    ]
    assert {h.doc_id for h in hits} == {"d1", "d4"}
    assert hits[0].text == CORPUS[hits[0].doc_id]
    assert hits[0].as_dict()["doc_id"] == hits[0].doc_id


def test_called_on_queries_returns_a_run_and_indexes_once():
    pipe = BM25().bind(list(CORPUS.values()))
    run = pipe({"a": "lift wing", "b": "heat transfer"})
    assert set(run) == {"a", "b"}
    assert max(run["b"], key=run["b"].get) == "1"  # list items get ids "0", "1", ...
    assert [t.phase for t in pipe.last_timings] == ["index", "retrieve"]
    pipe(["shell buckling"])
    assert [t.phase for t in pipe.last_timings] == ["retrieve"]  # the index was kept


def test_repeated_searches_do_not_grow_the_context():
    pipe = BM25().bind(CORPUS).index()
    size = len(pipe.context.memo)
    for i in range(20):
        pipe.search(f"wing lift {i}")
    assert len(pipe.context.memo) == size
    assert pipe.context.timings == []


def test_bound_pipeline_with_a_reranker_matches_the_reranker(tiny_bert):
    reranker = winnow.load_reranker(tiny_bert)
    pipe = (BM25() % 3 >> Rerank(reranker)).bind(CORPUS)
    hits = pipe.search("lift of a wing", top_k=3)
    candidates = [h.doc_id for h in BM25().bind(CORPUS).search("lift of a wing", top_k=3)]
    ranked = reranker.rank("lift of a wing", [CORPUS[d] for d in candidates])
    assert [h.doc_id for h in hits] == [candidates[r.index] for r in ranked]
    assert [h.score for h in hits] == pytest.approx([r.score for r in ranked])


def test_bound_pipeline_errors_name_the_argument():
    with pytest.raises(InputError, match=r"collection\['d1'\] is int"):
        BM25().bind({"d1": 3})
    with pytest.raises(InputError, match="collection must be a Dataset"):
        BM25().bind(42)
    pipe = BM25().bind(CORPUS)
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        pipe.search("wing", top_k=0)
    with pytest.raises(InputError, match=r"queries\['x'\] is int"):
        pipe({"x": 1})
    with pytest.raises(InputError, match="use search"):
        pipe("wing")


def test_bind_a_dataset_by_name(shared_datasets, monkeypatch):
    monkeypatch.setenv("WINNOW_DATA", str(shared_datasets))
    pipe = BM25().bind("adi")
    hits = pipe.search("information retrieval systems", top_k=3)
    assert len(hits) == 3 and all(h.doc_id in pipe.dataset.corpus for h in hits)
