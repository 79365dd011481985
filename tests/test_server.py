"""The reranking server over real HTTP: a real uvicorn on 127.0.0.1 with the tiny BERT cross-encoder."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from winnow import load_reranker
from winnow.rerankers.base import apply_activation
from winnow.rerankers.chunking import rank_chunked
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.testing import running_server
from winnow.testing import sample_corpus

QUERY = "supersonic flow over a wing"
DOCS = sample_corpus(40, seed=3)
LONG = " ".join(["boundary layer separation on the wing at high angle of attack"] * 40)


@pytest.fixture(scope="module")
def server(tiny_bert):
    config = ServerConfig(
        models=(ModelSpec.parse(f"tiny={tiny_bert}"),),
        max_documents=50,
        max_document_chars=5000,
        max_query_chars=300,
        max_body_bytes=200_000,
        max_chunks_per_doc=8,
    )
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def reranker(tiny_bert):
    return load_reranker(tiny_bert)


def test_v1_rerank_equals_library_rank(client, reranker):
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200
    body = r.json()
    expected = reranker.rank(QUERY, DOCS)
    assert [x["index"] for x in body["results"]] == [h.index for h in expected]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in body["results"]], [h.score for h in expected], atol=1e-4
    )
    assert [x["document"]["text"] for x in body["results"]] == [h.document for h in expected]
    assert body["model"] == "tiny"
    assert body["usage"]["search_units"] == 1
    assert body["usage"]["total_tokens"] == int(
        reranker.score_pairs_detailed([(QUERY, d) for d in DOCS]).num_tokens.sum()
    )
    assert body["meta"]["billed_units"]["search_units"] == 1
    assert body["id"]


def test_v1_rerank_top_n_objects_and_no_documents(client, reranker):
    docs = [{"text": d} for d in DOCS[:10]]
    r = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": docs, "top_n": 3, "return_documents": False},
    )
    assert r.status_code == 200
    results = r.json()["results"]
    expected = reranker.rank(QUERY, DOCS[:10], top_k=3)
    assert [x["index"] for x in results] == [h.index for h in expected]
    assert all(set(x) == {"index", "relevance_score"} for x in results)


def test_v1_rerank_sigmoid_normalisation(client, reranker):
    r = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": DOCS[:5], "normalize": "sigmoid"}
    )
    raw = reranker.score_pairs([(QUERY, d) for d in DOCS[:5]])
    expected = 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    np.testing.assert_allclose([got[i] for i in range(5)], expected, atol=1e-6)


def test_tei_rerank_shape_and_scores(client, reranker):
    texts = DOCS[:8]
    raw = reranker.score_pairs([(QUERY, t) for t in texts])
    r = client.post("/rerank", json={"query": QUERY, "texts": texts})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and len(body) == 8
    assert all(set(x) == {"index", "score"} for x in body)
    scores = [x["score"] for x in body]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, np.sort(apply_activation(raw, "sigmoid"))[::-1], atol=1e-6)
    r = client.post(
        "/rerank", json={"query": QUERY, "texts": texts, "raw_scores": True, "return_text": True}
    )
    body = r.json()
    np.testing.assert_allclose([x["score"] for x in body], np.sort(raw)[::-1], atol=1e-4)
    assert all(x["text"] == texts[x["index"]] for x in body)


def test_tei_truncate_false_refuses_over_long_input(client, reranker):
    r = client.post("/rerank", json={"query": QUERY, "texts": ["short text", LONG]})
    assert r.status_code == 413
    err = r.json()
    assert err["error_type"] == "validation"
    assert err["field"] == "texts[1]"
    assert err["limit"] == reranker.max_length
    r = client.post(
        "/rerank", json={"query": QUERY, "texts": ["short text", LONG], "truncate": True}
    )
    assert r.status_code == 200
    r = client.post(
        "/rerank", json={"query": QUERY, "texts": ["a"], "truncation_direction": "left"}
    )
    assert r.status_code == 422 and r.json()["field"] == "truncation_direction"


def test_token_info_matches_score_pairs_detailed(client, reranker):
    docs = ["short text about wings", LONG]
    detailed = reranker.score_pairs_detailed([(QUERY, d) for d in docs])
    r = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": docs, "return_token_info": True}
    )
    by_index = {x["index"]: x for x in r.json()["results"]}
    for i in range(2):
        assert by_index[i]["truncated"] == bool(detailed.truncated[i])
        assert by_index[i]["num_tokens"] == int(detailed.num_tokens[i])
    assert by_index[1]["truncated"] is True
    assert by_index[1]["num_tokens"] == reranker.max_length


@pytest.mark.parametrize("max_chunks", [1, 3])
def test_chunked_documents_equal_rank_chunked(client, reranker, max_chunks):
    docs = [LONG, "wing lift " * 3, DOCS[0] + " " + LONG]
    expected = rank_chunked(reranker, [QUERY], [docs], max_chunks_per_doc=max_chunks)[0]
    r = client.post(
        "/v1/rerank",
        json={
            "query": QUERY,
            "documents": docs,
            "max_chunks_per_doc": max_chunks,
            "return_token_info": True,
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["index"] for x in results] == [h.index for h in expected]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in results], [h.score for h in expected], atol=1e-4
    )
    assert [x["truncated"] for x in results] == [h.truncated for h in expected]
    assert [x["num_tokens"] for x in results] == [h.num_tokens for h in expected]


@pytest.mark.parametrize(
    ("payload", "field", "limit"),
    [
        ({"query": "q", "documents": ["d"] * 51}, "documents", 50),
        ({"query": "q", "documents": ["d", "x" * 5001]}, "documents[1]", 5000),
        ({"query": "q" * 301, "documents": ["d"]}, "query", 300),
        ({"query": "q", "documents": ["d"], "max_chunks_per_doc": 9}, "max_chunks_per_doc", 8),
    ],
)
def test_limits_answer_422_naming_field_and_limit(client, payload, field, limit):
    r = client.post("/v1/rerank", json=payload)
    assert r.status_code == 422
    assert r.json()["field"] == field
    assert r.json()["limit"] == limit
    assert str(limit) in r.json()["error"]


def test_tei_limits_name_texts(client):
    r = client.post("/rerank", json={"query": "q", "texts": ["d"] * 51})
    assert r.status_code == 422 and r.json()["field"] == "texts"
    assert r.json()["error_type"] == "limit_exceeded"


def test_body_too_large_is_413(client):
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["word " * 900] * 50})
    assert r.status_code == 413
    assert r.json()["field"] == "body"
    assert r.json()["limit"] == 200_000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": "", "documents": ["d"]}, "query"),
        ({"query": "   ", "documents": ["d"]}, "query"),
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": ["d", 3]}, "documents.1"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
        ({"documents": ["d"]}, "query"),
        # values of another JSON type are refused, not converted (found by schemathesis); an
        # integral number such as 2.0 is a JSON Schema integer and is accepted
        ({"query": "q", "documents": ["d"], "top_n": 2.5}, "top_n"),
        ({"query": "q", "documents": ["d"], "return_documents": "true"}, "return_documents"),
        ({"query": "q", "documents": ["d"], "top_n": True}, "top_n"),
        ({"query": "q", "documents": ["d"], "max_chunks_per_doc": "2"}, "max_chunks_per_doc"),
        ({"query": "q", "documents": ["d"], "return_documents": 0}, "return_documents"),
        ({"query": "q", "documents": [{"text": 5}]}, "documents.0"),
        ({"query": "q", "texts": ["d"], "raw_scores": 0}, "raw_scores"),
        ({"query": "q", "texts": ["d"], "return_text": 1.0}, "return_text"),
        # "" would silently pick the default model
        ({"query": "q", "documents": ["d"], "model": ""}, "model"),
        ({"query": "q", "texts": ["d"], "model": ""}, "model"),
        # blank in Unicode: no-break, ideographic, em and thin spaces, line separator
        ({"query": "\u00a0\u3000", "documents": ["d"]}, "query"),
        ({"query": " \u2003\u2009\u2028 ", "texts": ["d"]}, "query"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, payload, field):
    r = client.post("/rerank" if "texts" in payload else "/v1/rerank", json=payload)
    assert r.status_code == 422
    assert r.json()["error_type"] == "validation"
    assert r.json()["field"].startswith(field)


def test_integral_numbers_are_integers(client):
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"], "top_n": 2.0})
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_invalid_unicode_and_json_are_rejected_cleanly(client):
    r = client.post(
        "/v1/rerank",
        content=b'{"query": "q", "documents": ["ok", "bad \\ud800 text"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert "surrogate" in r.json()["error"]
    r = client.post(
        "/v1/rerank", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["field"] == "body"  # not the character offset ("10")
    assert r.json()["error"].startswith("the JSON body is truncated: it ends at line 1, column 11")
    r = client.post(
        "/v1/rerank",
        content=b'{"query": "q",\n "documents": ["a" "b"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert r.json()["error"].startswith("the body is not valid JSON at line 2, column 20")
    r = client.post(
        "/v1/rerank",
        content=b'{"query": "caf\xe9", "documents": ["d"]}',  # Latin-1, not UTF-8
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert r.json()["error"].startswith("the body is not valid UTF-8 (at byte 14)")


def test_blank_means_what_str_isspace_says():
    import sys

    from winnow.server.schemas import _BLANK

    assert set(_BLANK) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}


def test_unknown_model_names_the_available_ones(client):
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["d"], "model": "nope"})
    assert r.status_code == 404
    assert "'nope'" in r.json()["error"] and "tiny" in r.json()["error"]
    r = client.post("/v1/rerank", json={"query": "q", "documents": ["d"], "model": "tiny"})
    assert r.status_code == 200


def test_operations_endpoints(client, tiny_bert):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    info = ready.json()["models"]["tiny"]
    assert info["status"] == "ready" and info["loaded"] and info["warmed"]
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["max_length"] == 128
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["tiny"] and models[0]["default"]
    assert "/v1/rerank" in client.get("/openapi.json").json()["paths"]


def test_metrics_count_pairs_requests_and_errors(client):
    client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:7]})
    client.post("/v1/rerank", json={"query": "", "documents": ["d"]})
    text = client.get("/metrics").text
    assert 'winnow_pairs_scored_total{model="tiny"}' in text
    pairs = float(text.split('winnow_pairs_scored_total{model="tiny"} ')[1].split()[0])
    assert pairs >= 7
    assert 'winnow_errors_total{type="validation"}' in text
    assert 'winnow_request_duration_seconds_count{endpoint="/v1/rerank"' in text
    assert 'winnow_queue_depth{model="tiny"} 0.0' in text
    assert "winnow_batch_pairs_bucket" in text


def test_concurrent_requests_each_get_their_own_results(server, reranker):
    queries = [f"{w} flow" for w in ("wing", "heat", "bread", "shock", "river", "code")] * 3
    doc_sets = [sample_corpus(5 + i, seed=i) for i in range(len(queries))]

    async def go():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/rerank", json={"query": q, "documents": d})
                    for q, d in zip(queries, doc_sets)
                )
            )

    responses = asyncio.run(go())
    for q, d, r in zip(queries, doc_sets, responses):
        assert r.status_code == 200
        expected = reranker.rank(q, d)
        got = r.json()["results"]
        assert [x["index"] for x in got] == [h.index for h in expected]
        np.testing.assert_allclose(
            [x["relevance_score"] for x in got], [h.score for h in expected], atol=1e-4
        )


def test_streamed_body_over_the_limit_is_413(client):
    def chunks():
        yield b'{"query": "q", "documents": ['
        for _ in range(10_000):
            yield b'"a document streamed without a content-length header",'
        yield b'"x"]}'

    r = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["field"] == "body" and r.json()["limit"] == 200_000
