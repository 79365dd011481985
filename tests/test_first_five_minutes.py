"""The README's "first five minutes", each snippet run as written (with the tiny test models where
the README names a hub model, and the shared Cranfield collection): a reranker, a pipeline on a
collection with search, an evaluation, the server, one integration. Keep the README in step."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def data(shared_datasets, monkeypatch):
    monkeypatch.setenv("WINNOW_DATA", str(shared_datasets))  # as `export WINNOW_DATA=...` does
    return shared_datasets


def test_1_a_reranker():
    import winnow

    reranker = winnow.load_reranker("sentence-transformers/all-MiniLM-L6-v2")
    hits = reranker.rank(
        "how do wings make lift?",
        [
            {"id": "a", "text": "Heat transfer in a laminar boundary layer."},
            {
                "id": "b",
                "text": "The wing turns the flow down and gains lift.",
                "metadata": {"p": 3},
            },
        ],
        top_k=1,
    )
    print(hits[0].id, round(hits[0].score, 3), hits[0].metadata)  # b 0.738 {'p': 3}
    assert hits[0].id == "b" and hits[0].metadata == {"p": 3}


def test_2_a_pipeline_on_a_collection(data):
    import winnow
    from winnow.pipeline import BM25, Rerank

    reranker = winnow.load_reranker("sentence-transformers/all-MiniLM-L6-v2")
    pipe = (BM25() % 50 >> Rerank(reranker) % 10).bind("cranfield")
    for hit in pipe.search("boundary layer on a flat plate", top_k=3):
        print(hit.rank, hit.doc_id, round(hit.score, 3), hit.title[:60])
    run = pipe(
        {"1": "what is lift?", "2": "heat transfer at mach 3"}
    )  # {query_id: {doc_id: score}}
    assert set(run) == {"1", "2"} and all(len(r) == 10 for r in run.values())


def test_3_an_evaluation(data):
    from winnow.data import load_dataset
    from winnow.evaluation import experiment
    from winnow.pipeline import BM25, parse_system

    cranfield = load_dataset("cranfield", data_dir=data)
    result = experiment(
        {"bm25": BM25(), "bm25+bo1": parse_system("bm25 >> bo1")},
        cranfield,
        metrics=["nDCG@10", "R@100"],
        test="randomization",
        correction="holm",
    )
    print(result.comparison.means)
    print(result.comparison.tests["bm25+bo1"]["nDCG@10"])  # delta, statistic, p, p_adjusted...
    assert set(result.comparison.means) == {"bm25", "bm25+bo1"}


def test_4_the_server():
    from winnow.server.config import ServerConfig
    from winnow.server.testing import running_server

    # on the command line: winnow serve --model sentence-transformers/all-MiniLM-L6-v2
    config = ServerConfig.from_env({}, models=["sentence-transformers/all-MiniLM-L6-v2"])
    with running_server(config) as server:
        reply = httpx.post(
            server.url + "/v1/rerank",
            json={"query": "how do wings make lift?", "documents": ["heat", "wing lift"]},
            timeout=60,
        )
        print(reply.json()["results"])  # [{"index": 1, "relevance_score": ...}, ...]
        assert reply.status_code == 200 and reply.json()["results"][0]["index"] == 1


def test_5_an_integration():
    from langchain_core.documents import Document

    from winnow.integrations.langchain import WinnowRerank

    compressor = WinnowRerank(reranker="sentence-transformers/all-MiniLM-L6-v2", top_k=1)
    docs = [Document("Heat transfer in a plate."), Document("Wings make lift.", metadata={"n": 2})]
    best = compressor.compress_documents(docs, "how do wings make lift?")
    print(
        best[0].page_content, best[0].metadata
    )  # Wings make lift. {'n': 2, 'relevance_score': ...}
    assert best[0].metadata["n"] == 2
