"""Document-then-chunk reranking: window splitting, aggregation, and ranking by best window."""

from __future__ import annotations

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError
from winnow.rerankers.chunking import aggregate_scores, rank_chunked, split_windows

TEXT = " ".join(f"w{i}" for i in range(10))  # ten whitespace tokens


def test_split_windows_whitespace_tokens_with_overlap():
    chunks = split_windows(TEXT, None, window=4, stride=3)
    assert chunks == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]


def test_split_windows_short_text_is_one_window_and_title_prepended():
    assert split_windows("a b", None, window=4, stride=2) == ["a b"]
    # the title's tokens count against the window
    assert split_windows(TEXT, None, window=5, stride=4, title="T") == [
        "T w0 w1 w2 w3",
        "T w4 w5 w6 w7",
        "T w8 w9",
    ]


def test_split_windows_max_chunks_and_bad_settings():
    assert split_windows(TEXT, None, window=2, stride=2, max_chunks=2) == ["w0 w1", "w2 w3"]
    with pytest.raises(ConfigError, match="stride"):
        split_windows(TEXT, None, window=2, stride=3)
    with pytest.raises(ConfigError, match="window"):
        split_windows(TEXT, None, window=0, stride=1)


def test_split_windows_with_a_real_tokenizer_keeps_text_verbatim(tiny_bert):
    rr = winnow.load_reranker(tiny_bert)
    rr.load()
    text = "Boundary-layer flow, at high Mach number; heat transfer! " * 20
    chunks = split_windows(text, rr.tokenizer, window=16, stride=16)
    assert len(chunks) > 1
    for c in chunks:
        assert c in text
        assert len(rr.tokenizer(c, add_special_tokens=False)["input_ids"]) <= 16


def test_aggregations_closed_form():
    s = np.array([1.0, 3.0, 2.0, 0.0])
    assert aggregate_scores(s, "max") == 3.0
    assert aggregate_scores(s, "first") == 1.0
    assert aggregate_scores(s, "mean") == 1.5
    assert aggregate_scores(s, "kmax", k=2) == 2.5
    with pytest.raises(ConfigError):
        aggregate_scores(s, "median")


def test_rank_chunked_scores_documents_by_their_windows(tiny_bert):
    rr = winnow.load_reranker(tiny_bert)
    q = "wing lift drag"
    long_doc = "pressure heat transfer shock wave " * 60
    docs = [long_doc, "the wing of an aircraft", "bread flour mill"]
    ranked = rank_chunked(rr, [q], [docs], window=24, stride=20, aggregate="max")[0]
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    # the long document's score is the max over its own windows, scored independently
    windows = split_windows(long_doc, rr.tokenizer, 24, 20)
    expected = rr.score_pairs([(q, w) for w in windows]).max()
    got = next(r for r in ranked if r.index == 0)
    assert got.score == pytest.approx(float(expected), abs=1e-5)
    # short documents are one window: same score as plain scoring
    short = rr.score_pairs([(q, docs[1])])[0]
    assert next(r for r in ranked if r.index == 1).score == pytest.approx(float(short), abs=1e-5)
    # scores are in descending order
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_rank_chunked_max_chunks_marks_truncation_and_many_queries(tiny_bert):
    rr = winnow.load_reranker(tiny_bert)
    long_doc = "vortex wake separation " * 80
    out = rank_chunked(
        rr, ["q one", "q two"], [[long_doc], [long_doc, "x"]], window=16, max_chunks_per_doc=2
    )
    assert [len(o) for o in out] == [1, 2]
    assert out[0][0].truncated
    assert rank_chunked(rr, ["q"], [[]]) == [[]]
