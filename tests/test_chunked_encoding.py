"""Document-then-chunk reranking with a bi-encoder embeds each distinct window once.

Regression test for the slow ``bm25+chunked``: windows used to be sized per query (the model's
length less the query's), so with a bi-encoder every query of a different length cut the same long
document into different windows and the model embedded them all again.
"""

from __future__ import annotations

import pytest

from winnow.rerankers.chunking import rank_chunked, window_spans, window_text, window_tokenizer
from winnow.retrieval import DenseIndex
from winnow.testing import build_tiny_bi_encoder, sample_corpus
from winnow.types import Document


@pytest.fixture(scope="module")
def short_bi_encoder(models_dir):
    return str(build_tiny_bi_encoder(models_dir / "bi-32-chunked", max_length=32))


def _text(n: int, seed: int) -> str:
    words = " ".join(sample_corpus(200, seed=seed)).replace(".", "").replace("?", "").split()
    return " ".join(words[:n]).replace("!", "")


QUERIES = ["wing", "lift of a wing at speed", "heat transfer in the boundary layer of a fast wing"]


@pytest.fixture(scope="module")
def corpus():
    lengths = [80, 5, 120, 12, 60, 20]  # three long documents, three that fit one window
    return {
        f"d{i}": Document(f"d{i}", _text(n, seed=i), title="wing" if i == 2 else "")
        for i, n in enumerate(lengths)
    }


def test_each_window_is_embedded_once_whatever_the_query(
    short_bi_encoder, corpus, fresh_cache, encode_spy
):
    import winnow

    bi = winnow.load_reranker(short_bi_encoder, kind="bi-encoder", device="cpu").load()
    window = 30  # the model's 32 tokens less [CLS] and [SEP]: no room kept for a query
    seen = encode_spy(bi.model)
    docs = list(corpus.values())
    ranked = rank_chunked(
        bi, QUERIES, [[d.text for d in docs]] * 3, titles=[[d.title for d in docs]] * 3
    )
    assert [len(r) for r in ranked] == [6, 6, 6]

    tokenizer = window_tokenizer(bi)
    windows = {
        window_text(d.text[a:b], d.title)
        for d in docs
        for a, b in window_spans(d.text, tokenizer, window, window * 3 // 4, d.title)
    }
    assert len(windows) > len(docs)  # the long documents have several windows
    assert sorted(seen) == sorted([*windows, *QUERIES])  # each window and query once


def test_after_dense_only_the_long_documents_windows_are_embedded(
    short_bi_encoder, corpus, fresh_cache, encode_spy
):
    import winnow

    dense = DenseIndex(short_bi_encoder, device="cpu").index(corpus)  # embeds the full texts
    bi = winnow.load_reranker(short_bi_encoder, kind="bi-encoder", device="cpu")
    seen = encode_spy(bi.model)
    docs = list(corpus.values())
    rank_chunked(bi, QUERIES, [[d.text for d in docs]] * 3, titles=[[d.title for d in docs]] * 3)
    tokenizer = window_tokenizer(bi)
    long_docs = [d for d in docs if len(window_spans(d.text, tokenizer, 30, 22, d.title)) > 1]
    assert len(long_docs) == 3
    windows = [
        window_text(d.text[a:b], d.title)
        for d in long_docs
        for a, b in window_spans(d.text, tokenizer, 30, 22, d.title)
    ]
    # a document that fits one window is scored by the embedding dense already made
    assert dense.encoder is bi
    assert sorted(seen) == sorted([*windows, *QUERIES])


def test_maxp_dense_and_chunked_share_windows(short_bi_encoder, corpus, fresh_cache, encode_spy):
    import winnow

    DenseIndex(short_bi_encoder, device="cpu", passages=True).index(corpus)
    bi = winnow.load_reranker(short_bi_encoder, kind="bi-encoder", device="cpu")
    seen = encode_spy(bi.model)
    docs = list(corpus.values())
    rank_chunked(bi, QUERIES, [[d.text for d in docs]] * 3, titles=[[d.title for d in docs]] * 3)
    assert sorted(seen) == sorted(QUERIES)  # every window was embedded by the passage index
