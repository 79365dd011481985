"""Chunks for RAG: the best windows themselves, with spans into the original text and scores."""

from __future__ import annotations

import numpy as np
import pytest

import winnow
from winnow.errors import InputError
from winnow.rerankers.base import RankedDocument
from winnow.rerankers.chunking import (
    ChunkedDocument,
    ChunkHit,
    rank_chunked,
    rank_chunks,
    split_windows,
    truncate_to_tokens,
    window_spans,
    window_tokenizer,
)

QUERY = "heat transfer in the boundary layer"
# punctuation, runs of spaces, a newline, accents and a character outside the BMP: offsets must
# still index the original string exactly
LONG = (
    "Boundary-layer  flow, at high Mach number; heat transfer!\n"
    "Écoulement visqueux près de la paroi 🚀 and shock-wave interaction. "
) * 8
DOCS = [LONG, "a short note on lift", "  padded text with spaces  ", "bread flour mill " * 30]


@pytest.fixture(scope="module", params=["tiny_bert", "tiny_xlmr"])
def reranker(request):
    return winnow.load_reranker(request.getfixturevalue(request.param), device="cpu")


def test_spans_recover_the_chunk_text_exactly(reranker):
    tokenizer = window_tokenizer(reranker)
    for doc in DOCS:
        spans = window_spans(doc, tokenizer, window=20, stride=15)
        windows = split_windows(doc, tokenizer, window=20, stride=15)
        assert [doc[a:b] for a, b in spans] == windows
    hits = rank_chunks(reranker, [QUERY], [DOCS], window=20, stride=15)[0]
    assert len(hits) > len(DOCS)  # the long documents were split
    for hit in hits:
        assert DOCS[hit.doc_index][hit.start : hit.end] == hit.text
        assert hit.scored_text == hit.text  # no title
    # every window of every document is there, once
    per_doc = {i: split_windows(d, tokenizer, window=20, stride=15) for i, d in enumerate(DOCS)}
    assert sorted((h.doc_index, h.chunk) for h in hits) == sorted(
        (i, c) for i, ws in per_doc.items() for c in range(len(ws))
    )


def test_chunk_scores_equal_score_pairs_on_their_texts(reranker):
    hits = rank_chunks(reranker, [QUERY], [DOCS], window=20, stride=15)[0]
    expected = reranker.score_pairs([(QUERY, h.scored_text) for h in hits])
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
    detailed = reranker.score_pairs_detailed([(QUERY, h.scored_text) for h in hits])
    assert [h.num_tokens for h in hits] == detailed.num_tokens.tolist()
    # best first, ranks 1..n, ties in document then window order
    keys = [(-h.score, h.doc_index, h.chunk) for h in hits]
    assert keys == sorted(keys)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_titles_are_prepended_to_the_scored_text_not_to_the_span(reranker):
    titles = [["Heat", "Lift", "", "Bread"]]
    hits = rank_chunks(reranker, [QUERY], [DOCS], window=24, stride=20, titles=titles)[0]
    for hit in hits:
        title = titles[0][hit.doc_index]
        assert hit.title == title
        assert DOCS[hit.doc_index][hit.start : hit.end] == hit.text
        assert hit.scored_text == (f"{title} {hit.text}" if title else hit.text)
    expected = reranker.score_pairs([(QUERY, h.scored_text) for h in hits])
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)


def test_top_k_and_chunks_per_doc(reranker):
    every = rank_chunks(reranker, [QUERY], [DOCS], window=20, stride=15)[0]
    top = rank_chunks(reranker, [QUERY], [DOCS], window=20, stride=15, top_k=3)[0]
    assert [(h.doc_index, h.chunk) for h in top] == [(h.doc_index, h.chunk) for h in every[:3]]
    one_each = rank_chunks(reranker, [QUERY], [DOCS], window=20, stride=15, chunks_per_doc=1)[0]
    assert sorted(h.doc_index for h in one_each) == list(range(len(DOCS)))
    best_of = {}
    for h in every:
        best_of.setdefault(h.doc_index, (h.doc_index, h.chunk))
    assert {h.doc_index: (h.doc_index, h.chunk) for h in one_each} == best_of
    with pytest.raises(InputError, match="top_k"):
        rank_chunks(reranker, [QUERY], [DOCS], top_k=0)


def test_rank_chunked_return_chunks_gives_each_document_its_best_windows(reranker):
    plain = rank_chunked(reranker, [QUERY, "lift"], [DOCS, DOCS[:2]], window=20, stride=15)
    assert all(type(r) is RankedDocument for q in plain for r in q)  # unchanged by default
    with_chunks = rank_chunked(
        reranker,
        [QUERY, "lift"],
        [DOCS, DOCS[:2]],
        window=20,
        stride=15,
        return_chunks=True,
        chunks_per_doc=2,
    )
    for p, c in zip(plain, with_chunks):
        assert [(r.index, r.score, r.truncated, r.num_tokens) for r in p] == [
            (r.index, r.score, r.truncated, r.num_tokens) for r in c
        ]
    for query, ranked, docs in zip([QUERY, "lift"], with_chunks, [DOCS, DOCS[:2]]):
        for r in ranked:
            assert isinstance(r, ChunkedDocument)
            assert 1 <= len(r.chunks) <= 2
            assert all(isinstance(h, ChunkHit) and h.doc_index == r.index for h in r.chunks)
            assert r.chunks[0].score == pytest.approx(r.score)  # max aggregation: the best window
            assert [h.rank for h in r.chunks] == list(range(1, len(r.chunks) + 1))
            for h in r.chunks:
                assert docs[r.index][h.start : h.end] == h.text
            expected = reranker.score_pairs([(query, h.scored_text) for h in r.chunks])
            np.testing.assert_allclose([h.score for h in r.chunks], expected, atol=1e-5)


def test_max_chunks_per_doc_limits_the_windows_returned(reranker):
    hits = rank_chunks(reranker, [QUERY], [[LONG]], window=16, stride=16, max_chunks_per_doc=2)[0]
    assert sorted(h.chunk for h in hits) == [0, 1]
    assert hits[0].start >= 0 and max(h.end for h in hits) < len(LONG)


def test_truncate_to_tokens_cuts_the_original_text_at_a_token_end(reranker):
    tokenizer = window_tokenizer(reranker)
    cut, was_cut = truncate_to_tokens(LONG, tokenizer, 10)
    assert was_cut and LONG.startswith(cut)
    assert len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 10
    assert truncate_to_tokens("short", tokenizer, 10) == ("short", False)
    assert truncate_to_tokens("one two three", None, 2) == ("one two", True)
