"""Bi-encoder: scores equal SentenceTransformer.encode + cosine; encode() for dense retrieval."""

from __future__ import annotations

import numpy as np
import pytest

import winnow
from winnow.testing import sample_corpus

TEXTS = sample_corpus(60, seed=5)


def test_scores_equal_sentence_transformers_cosine(tiny_bi_encoder):
    from sentence_transformers import SentenceTransformer

    pairs = [(TEXTS[i], TEXTS[i + 1]) for i in range(0, 58, 2)]
    ours = winnow.load_reranker(tiny_bi_encoder).score_pairs(pairs)
    st = SentenceTransformer(tiny_bi_encoder)
    q = st.encode([p[0] for p in pairs], normalize_embeddings=True)
    d = st.encode([p[1] for p in pairs], normalize_embeddings=True)
    np.testing.assert_allclose(ours, (q * d).sum(1), atol=1e-5)


def test_encode_matches_reference_and_dedupes(tiny_bi_encoder):
    from sentence_transformers import SentenceTransformer

    rr = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", max_tokens=64)
    texts = TEXTS[:20] + TEXTS[:5]
    emb = rr.encode(texts)
    assert emb.shape == (25, rr.dimension) and emb.dtype == np.float32
    ref = SentenceTransformer(tiny_bi_encoder).encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert rr.encode([]).shape == (0, rr.dimension)


def test_query_and_document_prompts(tiny_bi_encoder):
    plain = winnow.load_reranker(tiny_bi_encoder)
    prompted = winnow.load_reranker(tiny_bi_encoder, query_prompt="query: ")
    np.testing.assert_allclose(
        prompted.encode_queries(["wing lift"]), plain.encode(["query: wing lift"]), atol=1e-6
    )
    np.testing.assert_allclose(
        prompted.encode_documents(["wing lift"]), plain.encode(["wing lift"]), atol=1e-6
    )


@pytest.mark.slow
def test_real_minilm_ranks_the_relevant_document_first(minilm_path):
    rr = winnow.load_reranker("sentence-transformers/all-MiniLM-L6-v2")
    assert rr.config.model == minilm_path and rr.config.kind == "bi-encoder"
    hits = rr.rank(
        "how does an aircraft wing produce lift",
        ["A recipe for sourdough bread.", "Airfoils generate lift from a pressure difference."],
    )
    assert hits[0].index == 1 and hits[0].score > 0.3 > hits[1].score
