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


def test_embeddings_are_remembered_across_calls_and_instances(
    tiny_bi_encoder, fresh_cache, encode_spy
):
    a = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder")
    b = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", max_tokens=64)
    assert a is not b
    a.load()
    seen = encode_spy(a.model)
    first = a.encode(TEXTS[:10])
    assert sorted(seen) == sorted(TEXTS[:10])
    seen.clear()
    # Another instance of the same model, a mix of known and new texts: only the new ones run.
    again = b.encode(TEXTS[5:15])
    assert sorted(seen) == sorted(TEXTS[10:15])
    np.testing.assert_array_equal(again[:5], first[5:])
    ref = a.encode(TEXTS[10:15])
    np.testing.assert_array_equal(again[5:], ref)
    assert a.memo is b.memo and a.memo.hits >= 10
    # A different max length is a different model input: its own memo.
    short = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", max_length=16)
    short.encode(TEXTS[:3])
    assert short.memo is not a.memo


def test_memo_off_and_dropped_on_unload(tiny_bi_encoder, fresh_cache, encode_spy):
    off = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", memo_mb=0).load()
    seen = encode_spy(off.model)
    off.encode(TEXTS[:4])
    off.encode(TEXTS[:4])
    assert len(seen) == 8 and len(off.memo) == 0
    on = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder")
    on.encode(TEXTS[:4])
    memo = on.memo
    assert len(memo) == 4
    winnow.unload(tiny_bi_encoder)
    on.encode(TEXTS[:1])  # reloads: a fresh memo, not the dropped one
    assert on.memo is not memo and len(on.memo) == 1
    with pytest.raises(winnow.ConfigError, match="memo_mb must be a number of MiB >= 0"):
        winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", memo_mb="lots").load()


def test_memo_is_bounded_least_recently_used_first():
    from winnow.rerankers.cache import EmbeddingMemo

    rows = np.eye(5, dtype=np.float32)  # 20 bytes a row
    memo = EmbeddingMemo(max_bytes=3 * 20)
    memo.store(["a", "b", "c"], rows[:3])
    assert set(memo.lookup(["a"])) == {0}  # "a" is now the most recently used
    memo.store(["d"], rows[3:4])
    assert list(memo.lookup(["a", "b", "c", "d"])) == [0, 2, 3]  # "b" went out
    memo.store(["v", "w", "x", "y"], rows[:4])  # more than fits: the last three stay
    assert len(memo) == 3 and memo.nbytes == 60
    np.testing.assert_array_equal(memo.lookup(["y"])[0], rows[3])
    assert memo.lookup(["a", "v"]) == {}
