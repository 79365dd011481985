"""The late-interaction (ColBERT) reranker kind: MaxSim equal to sentence-transformers' reference,
the tiny ColBERT's round trip, the bounded memo, kind inference, backbone mode and bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError
from winnow.rerankers.hub import colbert_format, infer_kind
from winnow.rerankers.late_interaction import LateInteractionReranker, maxsim_scores
from winnow.rerankers.loading import load_spec
from winnow.testing import sample_corpus

QUERIES = ["wing lift at high mach number", "library catalog search", "bread", "heat transfer"]
DOCS = [
    "the aircraft wing generates lift in subsonic flow",
    "shock wave boundary layer interaction on a flat plate at supersonic speed!",
    "a user searches the library catalog for journal articles and books",
    "flour mill",
    "heat transfer " * 60,
    "",
    *sample_corpus(20, seed=5),
]


def _pairs():
    return [(q, d) for q in QUERIES for d in DOCS]


@pytest.fixture(scope="module")
def reference(tiny_colbert):
    from sentence_transformers import MultiVectorEncoder

    return MultiVectorEncoder(tiny_colbert, device="cpu")


def _reference_scores(model, pairs, **kwargs):
    q = model.encode_query([q for q, _ in pairs])
    d = model.encode_document([d for _, d in pairs])
    return model.similarity_pairwise(q, d, **kwargs).float().numpy()


def test_tiny_colbert_reloads_as_a_colbert(tiny_colbert, reference):
    names = [type(m).__name__ for m in reference]
    assert names == ["Transformer", "Dense", "MultiVectorMask", "Normalize"]
    assert reference.prompts == {"query": "[Q] ", "document": "[D] "}
    assert reference.tokenizer.tokenize("[Q] wing") == ["[Q]", "wing"]
    assert reference[0].query_expansion["length"] == 16
    # queries are expanded to the fixed length; the projection is the saved one, not a fresh
    # random one (a second load gives the same vectors)
    from sentence_transformers import MultiVectorEncoder

    again = MultiVectorEncoder(tiny_colbert, device="cpu")
    a = reference.encode_query(["wing lift"], convert_to_numpy=True)[0]
    b = again.encode_query(["wing lift"], convert_to_numpy=True)[0]
    assert a.shape == (16, 16)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_maxsim_equals_similarity_pairwise(tiny_colbert, reference):
    pairs = _pairs()
    got = winnow.load_reranker(tiny_colbert).score_pairs(pairs)
    np.testing.assert_allclose(got, _reference_scores(reference, pairs), atol=1e-5, rtol=0)


def test_length_normalised_maxsim_equals_meanmaxsim(tiny_colbert, reference):
    pairs = _pairs()
    rr = winnow.load_reranker(tiny_colbert, "late-interaction", length_normalize=True)
    got = rr.score_pairs(pairs)
    expected = _reference_scores(reference, pairs, length_normalize=True)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert (got <= 1.0 + 1e-6).all()  # normalised token vectors: at most 1 per query token


def test_minilm_backbone_equals_its_token_vectors(minilm_path):
    """Backbone mode: the model's own last hidden states, L2-normalised, MaxSim, nothing added."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    pairs = [(q, d) for q in QUERIES[:2] for d in DOCS[:5]]
    rr = load_spec("colbert:sentence-transformers/all-MiniLM-L6-v2")
    assert rr.config.kind == "late-interaction" and rr.settings()["backbone"] is True
    got = rr.score_pairs(pairs)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()

    def vectors(text):
        enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
        with torch.inference_mode():
            out = model(**enc).last_hidden_state[0]
        return torch.nn.functional.normalize(out, dim=-1)

    expected = [float((vectors(q) @ vectors(d).T).max(dim=1).values.sum()) for q, d in pairs]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_maxsim_scores_closed_form():
    q = [np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)]
    d = [
        np.array([[0.5, 0.5], [1.0, 0.0]], dtype=np.float32),  # maxima 1.0 and 0.5
        np.zeros((0, 2), dtype=np.float32),  # no tokens: 0
        np.array([[0.0, 2.0]], dtype=np.float32),  # maxima 0.0 and 2.0
    ]
    qi, di = np.array([0, 0, 0]), np.array([0, 1, 2])
    np.testing.assert_allclose(maxsim_scores(q, d, qi, di), [1.5, 0.0, 2.0])
    np.testing.assert_allclose(maxsim_scores(q, d, qi, di, length_normalize=True), [0.75, 0, 1])


def test_documents_encoded_once_and_memo_is_bounded(tiny_colbert, fresh_cache):
    rr = winnow.load_reranker(tiny_colbert, memo_mb=0.002)  # ~2 KB: a few 16-dim documents
    first = rr.score_pairs(_pairs())
    assert rr.memo.nbytes <= rr.memo.max_bytes and 0 < len(rr.memo) < len(DOCS)
    again = rr.score_pairs(_pairs())
    np.testing.assert_array_equal(first, again)

    big = winnow.load_reranker(tiny_colbert, memo_mb=64)
    big.score_pairs(_pairs())
    assert len(big.memo) == len(set(DOCS))  # each distinct document encoded once
    hits = big.memo.hits
    big.score_pairs(_pairs())
    assert big.memo.hits == hits + len(set(DOCS))  # the second call encodes no document


def test_kind_inferred_from_checkpoint_files(tiny_colbert, tiny_bi_encoder, tmp_path):
    assert infer_kind(tiny_colbert) == "late-interaction"
    assert colbert_format(tiny_colbert) == "multi-vector-encoder"
    assert infer_kind(tiny_bi_encoder) == "bi-encoder"
    assert colbert_format(tiny_bi_encoder) is None
    # a PyLate save: config_sentence_transformers.json with model_type ColBERT and the prefixes
    pylate = tmp_path / "pylate"
    shutil.copytree(tiny_bi_encoder, pylate)
    (pylate / "config_sentence_transformers.json").write_text(
        json.dumps({"model_type": "ColBERT", "query_prefix": "[Q] ", "document_prefix": "[D] "})
    )
    assert colbert_format(str(pylate)) == "pylate"
    assert infer_kind(str(pylate)) == "late-interaction"
    # a Stanford ColBERT: architectures HF_ColBERT
    stanford = tmp_path / "stanford"
    stanford.mkdir()
    (stanford / "config.json").write_text(json.dumps({"architectures": ["HF_ColBERT"]}))
    assert colbert_format(str(stanford)) == "stanford"
    assert infer_kind(str(stanford)) == "late-interaction"


@pytest.mark.parametrize("spec", ["colbert:{}", "rerank:colbert:{}", "late-interaction:{}", "{}"])
def test_specs_name_the_kind(tiny_colbert, spec):
    rr = load_spec(spec.format(tiny_colbert))
    assert isinstance(rr, LateInteractionReranker)


def test_non_colbert_model_is_refused_naming_it_and_the_fix(tiny_bi_encoder):
    with pytest.raises(ConfigError) as err:
        winnow.load_reranker(tiny_bi_encoder, "late-interaction")
    message = str(err.value)
    assert tiny_bi_encoder in message and "not a ColBERT checkpoint" in message
    assert "backbone=true" in message and "random projection" in message
    with pytest.raises(ConfigError, match="not a ColBERT"):
        load_spec(f"colbert:{tiny_bi_encoder}").score_pairs([("q", "d")])


def test_backbone_option_on_a_bi_encoder_and_refused_on_a_colbert(tiny_bi_encoder, tiny_colbert):
    rr = load_spec(f"colbert:{tiny_bi_encoder}?backbone=true")
    out = rr.score_pairs([("wing lift", "the wing"), ("wing lift", "flour mill")])
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert rr.settings()["backbone"] is True and rr.dimension == 32  # hidden size, no projection
    with pytest.raises(ConfigError, match="is a ColBERT checkpoint"):
        load_spec(f"colbert:{tiny_colbert}?backbone=true")


def test_bad_inputs(tiny_colbert):
    rr = winnow.load_reranker(tiny_colbert)
    assert rr.encode_queries([]) == [] and rr.encode_documents([]) == []
    assert rr.score_pairs([]).shape == (0,)
    assert rr.rank_many([], []) == []
    with pytest.raises(ConfigError, match=r"unknown option 'batch_size'.*max_tokens"):
        winnow.load_reranker(tiny_colbert, batch_size=8)
    with pytest.raises(ConfigError, match="length_normalize must be"):
        load_spec(f"colbert:{tiny_colbert}?length_normalize=maybe")
    with pytest.raises(ConfigError, match="memo_mb"):
        winnow.load_reranker(tiny_colbert, memo_mb=-1).score_pairs([("q", "d")])


def test_max_length_caps_documents(tiny_colbert, reference):
    rr = winnow.load_reranker(tiny_colbert, max_length=12)
    assert rr.max_length == 12
    detailed = rr.score_pairs_detailed([("heat", DOCS[4]), ("heat", "flour mill")])
    assert detailed.truncated.tolist() == [True, False]
    assert detailed.num_tokens.tolist()[0] == 12
    short = reference.encode_document([DOCS[4]], processing_kwargs={"text": {"max_length": 12}})
    q = reference.encode_query(["heat"])
    expected = reference.similarity_pairwise(q, short).numpy()
    np.testing.assert_allclose(detailed.scores[:1], expected, atol=1e-5)


def test_info_shows_the_late_interaction_settings(tiny_colbert):
    info = load_spec(f"colbert:{tiny_colbert}").info("tiny")
    assert info["kind"] == "late-interaction" and info["name"] == "tiny"
    assert info["dimension"] == 16 and info["query_length"] == 16
    assert info["document_length"] == 64 == info["max_length"]
    assert info["query_prompt"] == "[Q] " and info["similarity"] == "maxsim"


def test_served_through_the_rerank_apis(tiny_colbert):
    """``winnow serve --model colbert:PATH``: a real server answers /v1/rerank and TEI /rerank
    with the library's ranking; ``length_normalize`` makes the relevance scores comparable."""
    pytest.importorskip("fastapi")
    import httpx

    from winnow.server.config import ModelSpec, ServerConfig
    from winnow.server.testing import running_server

    config = ServerConfig(
        models=(
            ModelSpec.parse(f"colbert=colbert:{tiny_colbert}"),
            ModelSpec.parse(f"colbert-mean=colbert:{tiny_colbert}?length_normalize=true"),
        )
    )
    query, docs = QUERIES[0], DOCS[:8]
    with running_server(config) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/rerank", json={"model": "colbert", "query": query, "documents": docs})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        expected = load_spec(f"colbert:{tiny_colbert}").rank(query, docs)
        assert [x["index"] for x in results] == [h.index for h in expected]
        np.testing.assert_allclose(
            [x["relevance_score"] for x in results], [h.score for h in expected], atol=1e-4
        )
        tei = c.post(
            "/rerank",
            json={
                "model": "colbert-mean",
                "query": query,
                "texts": docs,
                "truncate": True,
                "raw_scores": True,
            },
        )
        assert tei.status_code == 200, tei.text
        mean = load_spec(f"colbert:{tiny_colbert}?length_normalize=true").rank(query, docs)
        got = {x["index"]: x["score"] for x in tei.json()}
        np.testing.assert_allclose([got[h.index] for h in mean], [h.score for h in mean], atol=1e-4)
        assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in got.values())  # mean of cosines
