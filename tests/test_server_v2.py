"""Cohere v2 (`/v2/rerank`), Voyage's top_k and returned chunks, over real HTTP (uvicorn, tiny BERT)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")

from winnow import load_reranker
from winnow.rerankers.base import apply_activation
from winnow.rerankers.chunking import rank_chunked, window_tokenizer
from winnow.server.config import ModelSpec, ServerConfig
from winnow.server.testing import running_server
from winnow.testing import sample_corpus

QUERY = "supersonic flow over a wing"
DOCS = sample_corpus(12, seed=5)
LONG = " ".join(
    f"section {i}: boundary-layer separation, at high angle of attack; heat transfer!"
    for i in range(30)
)


@pytest.fixture(scope="module")
def server(tiny_bert):
    config = ServerConfig(
        models=(ModelSpec.parse(f"tiny={tiny_bert}"),),
        max_documents=20,
        max_document_chars=5000,
        max_query_chars=300,
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


def sigmoid(x):
    return apply_activation(np.asarray(x, dtype=np.float32), "sigmoid")


def test_v2_rerank_has_cohere_v2_shape_and_sigmoid_scores(client, reranker):
    r = client.post("/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "results", "meta"} and body["id"]
    assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert all(set(x) == {"index", "relevance_score"} for x in body["results"])
    expected = reranker.rank(QUERY, DOCS)
    assert [x["index"] for x in body["results"]] == [h.index for h in expected]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in body["results"]],
        sigmoid([h.score for h in expected]),
        atol=1e-6,
    )
    assert all(0.0 <= x["relevance_score"] <= 1.0 for x in body["results"])


def test_v2_top_n_raw_scores_default_model_and_objects(client, reranker):
    docs = [DOCS[0], {"text": DOCS[1]}, DOCS[2], DOCS[3]]
    r = client.post(
        "/v2/rerank", json={"query": QUERY, "documents": docs, "top_n": 2, "normalize": "none"}
    )
    assert r.status_code == 200
    expected = reranker.rank(QUERY, DOCS[:4], top_k=2)
    results = r.json()["results"]
    assert [x["index"] for x in results] == [h.index for h in expected]
    np.testing.assert_allclose(
        [x["relevance_score"] for x in results], [h.score for h in expected], atol=1e-4
    )


def test_v2_max_tokens_per_doc_scores_the_truncated_text(client, reranker):
    enc = window_tokenizer(reranker)(LONG, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["input_ids"]) > 40
    truncated = LONG[: enc["offset_mapping"][19][1]]  # the first 20 tokens of the document

    def score(doc, **extra):
        body = {"query": QUERY, "documents": [doc], "normalize": "none", **extra}
        r = client.post("/v2/rerank", json=body)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["relevance_score"]

    cut = score(LONG, max_tokens_per_doc=20)
    assert cut == pytest.approx(score(truncated), abs=1e-5)
    assert cut == pytest.approx(float(reranker.score_pairs([(QUERY, truncated)])[0]), abs=1e-4)
    assert abs(cut - score(LONG)) > 1e-4  # the cut changed what the model saw
    # the default (4096 tokens) leaves the model's own truncation at its 128 tokens
    assert score(LONG) == pytest.approx(float(reranker.score_pairs([(QUERY, LONG)])[0]), abs=1e-4)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": "q", "documents": ["d"] * 21}, "documents"),
        ({"query": "q", "documents": ["d"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
        ({"query": "q", "documents": ["d"], "max_tokens_per_doc": 2.5}, "max_tokens_per_doc"),
        ({"query": " ", "documents": ["d"]}, "query"),
        ({"query": "q", "documents": ["d"], "normalize": "softmax"}, "normalize"),
        # "" would pick the default model; the schema says so too (schemathesis, 3000 examples,
        # found v2 refusing "" while its schema allowed it)
        ({"query": "q", "documents": ["d"], "model": ""}, "model"),
    ],
)
def test_v2_bad_input_is_422_naming_the_field(client, payload, field):
    r = client.post("/v2/rerank", json=payload)
    assert r.status_code == 422
    assert r.json()["field"].startswith(field)


def test_v2_unknown_model_and_published_limits(client):
    r = client.post("/v2/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
    assert r.status_code == 404 and "tiny" in r.json()["error"]
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["RerankV2Request"]["properties"]
    assert props["documents"]["maxItems"] == 20
    assert props["query"]["maxLength"] == 300
    assert {"minLength": 1, "type": "string"} in props["model"]["anyOf"]
    assert "/v2/rerank" in schema["paths"]


def test_voyage_top_k_is_honoured_on_v1(client, reranker):
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_k": 3})
    assert r.status_code == 200
    expected = reranker.rank(QUERY, DOCS, top_k=3)
    assert [x["index"] for x in r.json()["results"]] == [h.index for h in expected]
    both = {"query": QUERY, "documents": DOCS, "top_k": 5, "top_n": 2}
    assert len(client.post("/v1/rerank", json=both).json()["results"]) == 2
    both = {"query": QUERY, "documents": DOCS, "top_k": 2, "top_n": 5}
    assert len(client.post("/v1/rerank", json=both).json()["results"]) == 2
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_k": 0})
    assert r.status_code == 422 and r.json()["field"] == "top_k"


def test_v1_return_chunks_gives_each_document_its_best_windows(client, reranker):
    docs = [LONG, "wing lift " * 3, DOCS[0] + " " + LONG]
    r = client.post(
        "/v1/rerank",
        json={
            "query": QUERY,
            "documents": docs,
            "max_chunks_per_doc": 4,
            "return_chunks": True,
            "chunks_per_doc": 2,
            "return_documents": False,
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    expected = rank_chunked(
        reranker, [QUERY], [docs], max_chunks_per_doc=4, return_chunks=True, chunks_per_doc=2
    )[0]
    assert [x["index"] for x in results] == [h.index for h in expected]
    for got, want in zip(results, expected):
        doc = docs[got["index"]]
        assert [(c["index"], c["start"], c["end"]) for c in got["chunks"]] == [
            (h.chunk, h.start, h.end) for h in want.chunks
        ]
        for c in got["chunks"]:
            assert doc[c["start"] : c["end"]] == c["text"]
        scores = reranker.score_pairs([(QUERY, c["text"]) for c in got["chunks"]])
        np.testing.assert_allclose([c["relevance_score"] for c in got["chunks"]], scores, atol=1e-4)
        # the document scores as its best window (max)
        assert got["chunks"][0]["relevance_score"] == pytest.approx(got["relevance_score"])
    assert len(results[0]["chunks"]) == 2 and len(results[-1]["chunks"]) <= 2
    short = next(x for x in results if x["index"] == 1)
    assert short["chunks"] == [
        {
            "index": 0,
            "text": docs[1],
            "start": 0,
            "end": len(docs[1]),
            "relevance_score": short["relevance_score"],
        }
    ]


def test_chunks_follow_the_score_normalisation(client, reranker):
    docs = [LONG, "wing lift"]
    body = {"query": QUERY, "max_chunks_per_doc": 3, "return_chunks": True}
    v1 = client.post("/v1/rerank", json={**body, "documents": docs, "normalize": "sigmoid"})
    tei = client.post("/rerank", json={**body, "texts": docs})
    raw = client.post("/rerank", json={**body, "texts": docs, "raw_scores": True})
    for r in (v1, tei, raw):
        assert r.status_code == 200, r.text
    v1_chunks = {x["index"]: x["chunks"] for x in v1.json()["results"]}
    for tei_rank, raw_rank in zip(tei.json(), raw.json()):
        i = tei_rank["index"]
        assert len(tei_rank["chunks"]) == 1  # chunks_per_doc defaults to the best one
        (chunk,) = tei_rank["chunks"]
        assert docs[i][chunk["start"] : chunk["end"]] == chunk["text"]
        assert chunk["score"] == pytest.approx(tei_rank["score"])
        assert raw_rank["chunks"][0]["score"] == pytest.approx(raw_rank["score"])
        assert chunk["score"] == pytest.approx(float(sigmoid(raw_rank["chunks"][0]["score"])[()]))
        assert v1_chunks[i][0]["relevance_score"] == pytest.approx(chunk["score"])


def test_return_chunks_without_chunking_is_the_whole_document(client, reranker):
    docs = ["the wing makes lift", LONG]
    r = client.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": docs, "return_chunks": True, "return_token_info": True},
    )
    assert r.status_code == 200
    for x in r.json()["results"]:
        doc = docs[x["index"]]
        assert x["chunks"] == [
            {
                "index": 0,
                "text": doc,
                "start": 0,
                "end": len(doc),
                "relevance_score": x["relevance_score"],
            }
        ]
    assert next(x for x in r.json()["results"] if x["index"] == 1)["truncated"] is True
    # without return_chunks nothing changes
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": docs, "chunks_per_doc": 3})
    assert all("chunks" not in x for x in r.json()["results"])


@pytest.fixture(scope="module")
def steep_bert(tmp_path_factory):
    """The tiny BERT with its classifier scaled up: logits of hundreds, whose sigmoid is 1.0 or
    0.0 in float32 (as a listwise model's rank scores, or a confident cross-encoder's, are)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from winnow.testing import build_tiny_bert_cross_encoder

    path = build_tiny_bert_cross_encoder(tmp_path_factory.mktemp("steep") / "bert", seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(3000.0)
        model.classifier.bias.zero_()
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(path).save_pretrained(path)
    return str(path)


def test_order_follows_raw_scores_when_sigmoid_saturates(steep_bert):
    """Regression: results were sorted by the sigmoid scores, so documents whose scores all
    rounded to 1.0 (or 0.0) came back in request order instead of by their raw scores."""
    reranker = load_reranker(steep_bert)
    raw = reranker.score_pairs([(QUERY, d) for d in DOCS])
    assert len(set(sigmoid(raw).tolist())) <= len(DOCS) - 3  # saturated: sigmoid cannot order them
    expected = [h.index for h in reranker.rank(QUERY, DOCS)]
    config = ServerConfig(models=(ModelSpec.parse(f"steep={steep_bert}"),))
    with running_server(config) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        v1 = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "normalize": "sigmoid"})
        v2 = c.post("/v2/rerank", json={"query": QUERY, "documents": DOCS})
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": True})
    assert [x["index"] for x in v1.json()["results"]] == expected
    assert [x["index"] for x in v2.json()["results"]] == expected
    assert [x["index"] for x in tei.json()] == expected
