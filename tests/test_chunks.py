"""Chunks for RAG: the best windows themselves, with spans into the original text and scores."""

from __future__ import annotations

import itertools

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


# -- the two-model form in `winnow eval`: documents by model A, the top N's chunks by model B ------

TOPICS = {
    "wing": "wing lift drag airfoil flow boundary layer separation vortex",
    "heat": "heat transfer temperature conduction convection wall flux",
    "grain": "grain chaff wheat threshing harvest barley mill flour",
}


@pytest.fixture(scope="module")
def long_beir(tmp_path_factory):
    """A BEIR folder of 15 documents, the longer ones several windows of the tiny models long."""
    import json
    import random

    rng = random.Random(7)
    root = tmp_path_factory.mktemp("beir-long") / "long"
    (root / "qrels").mkdir(parents=True)
    docs, queries, qrels = [], [], []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for i in range(5):
            text = " ".join(rng.choice(vocab) for _ in range(20 + 60 * i))
            docs.append({"_id": f"{topic}{i}", "title": f"{topic} {i}", "text": text})
        queries.append({"_id": f"q-{topic}", "text": " ".join(rng.sample(vocab, 3))})
        qrels += [f"q-{topic}\t{topic}{i}\t1" for i in (1, 3)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels))
    return root


def test_eval_two_model_expression_is_rerank_then_chunks_of_the_top_n(
    long_beir, tmp_path, tiny_bert, tiny_xlmr
):
    import json

    from winnow.cli import main
    from winnow.data import load_dataset, read_run
    from winnow.pipeline.base import top_docs

    system = f"bm25%8>>rerank:cross-encoder:{tiny_bert}>>chunked:cross-encoder:{tiny_xlmr}@3"
    out = tmp_path / "out"
    argv = ["eval", "--dataset", str(long_beir), "--systems", f"bm25,{system}"]
    argv += ["--output", str(out), "--no-cache", "--no-plot", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["systems"][system]["pipeline"].endswith("@3")
    run = read_run(out / doc["systems"][system]["run"])
    bm25 = read_run(out / doc["systems"]["bm25"]["run"])

    dataset = load_dataset(str(long_beir))
    model_a = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    model_b = winnow.load_reranker(tiny_xlmr, "cross-encoder", device="cpu")
    split = 0
    for qid, query in dataset.queries.items():
        candidates = [d for d, _ in top_docs(bm25[qid], 8)]
        # stage 1: model A scores the 8 documents (title + text)
        hits = model_a.rank(query, [dataset.corpus[d].full_text for d in candidates])
        by_a = [d for d, _ in top_docs({candidates[h.index]: h.score for h in hits})]
        # stage 2: model B re-scores the best 3 by their best window, the other 5 stay below
        head = [dataset.corpus[d] for d in by_a[:3]]
        chunked = rank_chunked(
            model_b, [query], [[d.text for d in head]], titles=[[d.title for d in head]]
        )[0]
        expected = [head[h.index].doc_id for h in chunked] + by_a[3:]
        assert [d for d, _ in top_docs(run[qid])] == expected
        for h in chunked:
            assert run[qid][head[h.index].doc_id] == pytest.approx(h.score, abs=1e-5)
        windows = rank_chunks(
            model_b, [query], [[d.text for d in head]], titles=[[d.title for d in head]]
        )[0]
        split += sum(h.chunk > 0 for h in windows)
    assert split > 0  # some of the documents model B re-scored were really cut into windows


def test_default_windows_do_not_depend_on_the_other_queries(reranker):
    """Regression: the default window was sized for the longest query of the whole call, so a
    query's scores changed with the queries it was batched with (eval groups, batch_queries)."""
    short = "lift"
    long = " ".join(["supersonic boundary layer transition on a swept wing"] * 6)
    alone = rank_chunked(reranker, [short], [DOCS])[0]
    together = rank_chunked(reranker, [short, long], [DOCS, DOCS])[0]
    assert [r.index for r in together] == [r.index for r in alone]
    # equal up to float rounding of the batch a pair lands in (padding)
    np.testing.assert_allclose([r.score for r in together], [r.score for r in alone], atol=1e-5)
    alone_hits = rank_chunks(reranker, [short], [DOCS])[0]
    together_hits = rank_chunks(reranker, [long, short], [DOCS, DOCS])[1]
    spans = sorted((h.doc_index, h.chunk, h.start, h.end) for h in alone_hits)
    assert sorted((h.doc_index, h.chunk, h.start, h.end) for h in together_hits) == spans
    by_span = {(h.doc_index, h.chunk): h.score for h in alone_hits}
    np.testing.assert_allclose(
        [h.score for h in together_hits],
        [by_span[h.doc_index, h.chunk] for h in together_hits],
        atol=1e-5,
    )


def test_spec_depth_suffix_sets_the_rescoring_depth(tiny_bert, tiny_xlmr):
    from winnow.errors import ConfigError
    from winnow.pipeline import SpecOptions, parse_system
    from winnow.pipeline.rerank import ChunkedRerank, Rerank

    options = SpecOptions(reranker=f"cross-encoder:{tiny_bert}", depth=50, device="cpu")
    stage = parse_system(f"bm25 % 100 >> rerank >> chunked:cross-encoder:{tiny_xlmr}@10", options)
    rerank, chunked = stage.stages[2], stage.stages[3]
    assert isinstance(rerank, Rerank) and rerank.depth == 50
    assert isinstance(chunked, ChunkedRerank) and chunked.depth == 10
    assert chunked.label.endswith("@10") and stage.label.endswith("@10")
    assert parse_system("bm25 >> rerank@7", options).stages[1].depth == 7
    assert options.depth == 50  # the suffix does not leak into the shared options
    for bad, message in [
        ("bm25@10", "rerank and chunked stages only"),
        ("bm25 >> rerank@0", "positive integer"),
        ("bm25 >> hybrid@3", "rerank and chunked stages only"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_system(bad, options)


def test_windows_start_and_end_at_word_boundaries(reranker):
    """Regression: windows were cut at any token, so with a subword tokenizer a chunk could start
    or end inside a word ("ows with the angle ...")."""
    tokenizer = window_tokenizer(reranker)
    # words of 2-4 subword tokens with the tiny vocabularies
    text = " ".join(["the wings lifted, winnowing layered breads; millers heats attacks"] * 12)
    for window, stride in [(12, 9), (12, 12), (7, 3)]:
        spans = window_spans(text, tokenizer, window, stride)
        assert len(spans) > 3
        for a, b in spans:
            assert a == 0 or not (text[a - 1].isalnum() and text[a].isalnum()), text[a - 5 : a + 5]
            assert b == len(text) or not (text[b - 1].isalnum() and text[b].isalnum())
            assert len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) <= window
        # no text is skipped between consecutive windows (at most the space between two words)
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(not text[b1:a2].strip() for (_, b1), (a2, _) in itertools.pairwise(spans))
    # a word longer than the window is still cut (nothing else fits)
    long_word = "pneumonoultramicroscopicsilicovolcanoconiosis " * 3
    assert all(b > a for a, b in window_spans(long_word, tokenizer, 3, 3))
