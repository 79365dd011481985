"""Passage-level dense (MaxP): windows of long documents, best window per document, cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.errors import ConfigError
from winnow.retrieval import DenseIndex
from winnow.retrieval.dense import exact_top_k
from winnow.retrieval.passages import document_windows
from winnow.testing import build_tiny_bi_encoder, sample_corpus
from winnow.types import Document

#: The tiny model reads 32 tokens (30 of document text after [CLS] and [SEP]).
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def short_bi_encoder(models_dir):
    """The tiny bi-encoder with a 32-token window, so documents of a few sentences are long."""
    return str(build_tiny_bi_encoder(models_dir / "bi-32", max_length=MAX_LENGTH))


def _words(n: int, seed: int) -> list[str]:
    """``n`` words of the tiny vocabulary (each one token for the tiny tokenizer)."""
    text = " ".join(sample_corpus(200, seed=seed))
    return [w.strip(".?!") for w in text.split()][:n]


@pytest.fixture(scope="module")
def long_corpus():
    """Documents of 5 to 120 words: about half fit one window of the tiny model, half do not."""
    rng = np.random.default_rng(0)
    corpus = {}
    for i in range(24):
        n = int(rng.integers(5, 120))
        corpus[f"d{i:02d}"] = Document(
            f"d{i:02d}", " ".join(_words(n, seed=i)), title="wing" if i % 4 == 0 else ""
        )
    return corpus


def test_relevant_text_past_the_window_is_found_by_maxp_not_by_plain_dense(short_bi_encoder):
    # The needle is the last 30 words of a 90-word document: plain dense reads the first 30 only,
    # which are digits (one token each), nothing like the query.
    needle = _words(30, seed=101)
    hay = [str(d) for d in np.random.default_rng(0).integers(0, 10, 60)]
    corpus = {"long": Document("long", " ".join(hay + needle))}
    for i in range(8):  # other documents, all short enough to fit
        corpus[f"other{i}"] = Document(f"other{i}", " ".join(_words(25, seed=200 + i)))
    query = {"q": " ".join(needle)}

    plain = DenseIndex(short_bi_encoder, device="cpu").index(corpus).search(query, top_k=10)["q"]
    maxp = DenseIndex(short_bi_encoder, device="cpu", passages=True, window=30, stride=30)
    hits = maxp.index(corpus).search(query, top_k=10)["q"]

    assert len(maxp.embeddings) == 3 + 8  # three windows of the long document, one per other
    assert next(iter(hits)) == "long"  # its third window is the query's text exactly
    assert hits["long"] == pytest.approx(1.0, abs=1e-5)
    assert list(plain).index("long") >= 5, plain  # plain dense: not in its top 5
    # documents that fit one window are embedded as plain dense embeds them: same scores
    for doc_id in corpus:
        if doc_id != "long":
            assert hits[doc_id] == pytest.approx(plain[doc_id], abs=1e-6)


def test_document_scores_are_the_max_over_their_windows(short_bi_encoder, long_corpus):
    queries = {"q1": "how do wings make lift", "q2": "heat transfer in a boundary layer"}
    maxp = DenseIndex(short_bi_encoder, device="cpu", passages=True).index(long_corpus)
    window, stride = maxp.window_settings()
    assert (window, stride) == (MAX_LENGTH - 2, (MAX_LENGTH - 2) * 3 // 4)
    run = maxp.search(queries, top_k=len(long_corpus))

    # brute force: embed every window on its own, max per document in plain numpy
    from winnow.rerankers.chunking import window_tokenizer

    texts, owner = document_windows(long_corpus, window_tokenizer(maxp.encoder), window, stride)
    assert len(texts) > len(long_corpus) and len(set(owner.tolist())) == len(long_corpus)
    emb = maxp.encoder.encode_documents(texts)
    doc_ids = list(long_corpus)
    for qid, text in queries.items():
        q = maxp.encoder.encode_queries([text])[0]
        best = {
            d: max(float(emb[w] @ q) for w in np.flatnonzero(owner == i))
            for i, d in enumerate(doc_ids)
        }
        expected = sorted(best, key=lambda d: (-best[d], d))
        assert list(run[qid]) == expected
        assert [run[qid][d] for d in expected] == pytest.approx(
            [best[d] for d in expected], abs=1e-5
        )


def test_exact_top_k_with_windows_equals_brute_force():
    rng = np.random.default_rng(1)
    n_docs = 50
    owner = np.sort(np.concatenate([np.arange(n_docs), rng.integers(0, n_docs, 70)]))
    windows = rng.standard_normal((len(owner), 8)).astype(np.float32)
    windows[5] = windows[0]  # a tie between two documents' best windows
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    queries[3] = windows[0]
    doc_order = rng.permutation(n_docs)
    for block in (64, 1 << 20):  # one query per block, then all at once
        idx, top = exact_top_k(
            queries, windows, 10, doc_order, block, window_doc=owner, num_documents=n_docs
        )
        scores = queries @ windows.T
        for r in range(len(queries)):
            best = np.array([scores[r, owner == d].max() for d in range(n_docs)])
            order = np.lexsort((doc_order, -best))[:10]
            assert idx[r].tolist() == order.tolist()
            np.testing.assert_allclose(top[r], best[order], rtol=1e-6, atol=1e-6)


def test_cache_keys_differ_by_window_settings(short_bi_encoder, long_corpus):
    def key(**kw):
        return DenseIndex(short_bi_encoder, device="cpu", **kw).cache_key(long_corpus)

    plain = key()
    assert "passages" not in plain  # plain dense keys (and their cached entries) are unchanged
    default = key(passages=True)
    assert default["passages"]["window"] == MAX_LENGTH - 2
    assert default == key(passages=True, window=MAX_LENGTH - 2)  # the same windows, the same key
    keys = [plain, default, key(passages=True, window=20), key(passages=True, window=20, stride=10)]
    assert len({repr(sorted(k.items())) for k in keys}) == 4


def test_passage_index_is_cached_and_read_back(
    short_bi_encoder, long_corpus, tmp_path, monkeypatch
):
    queries = {"q": "wing lift at high speed"}
    first = DenseIndex(short_bi_encoder, cache_dir=tmp_path, device="cpu", passages=True)
    run = first.index(long_corpus).search(queries, top_k=10)
    plain = DenseIndex(short_bi_encoder, cache_dir=tmp_path, device="cpu").index(long_corpus)
    assert plain.timings["cache_hit"] == 0.0  # not the passage entry
    assert len(list((tmp_path / "dense").iterdir())) == 2

    again = DenseIndex(short_bi_encoder, cache_dir=tmp_path, device="cpu", passages=True)
    monkeypatch.setattr(
        again.encoder, "encode_documents", lambda *a, **k: pytest.fail("re-embedded")
    )
    again.index(long_corpus)
    assert again.timings["cache_hit"] == 1.0
    assert np.array_equal(again.window_doc, first.window_doc)
    assert again.search(queries, top_k=10) == run

    # a damaged window map is rebuilt, not trusted
    (entry,) = [e for e in (tmp_path / "dense").iterdir() if (e / "window_doc.npy").exists()]
    np.save(entry / "window_doc.npy", first.window_doc[::-1].copy())
    monkeypatch.undo()
    rebuilt = DenseIndex(short_bi_encoder, cache_dir=tmp_path, device="cpu", passages=True)
    rebuilt.index(long_corpus)
    assert rebuilt.timings["cache_hit"] == 0.0
    assert rebuilt.search(queries, top_k=10) == run


def test_passage_settings_are_checked(short_bi_encoder):
    with pytest.raises(ConfigError, match="window=31 tokens does not fit the model"):
        DenseIndex(short_bi_encoder, device="cpu", passages=True, window=31).window_settings()
    with pytest.raises(ConfigError, match="stride=20 > window=10"):
        DenseIndex(short_bi_encoder, device="cpu", passages=True, window=10, stride=20)
    with pytest.raises(ConfigError, match="with passages=True only"):
        DenseIndex(short_bi_encoder, device="cpu", window=10)
    with pytest.raises(ConfigError, match="window must be a positive number"):
        DenseIndex(short_bi_encoder, device="cpu", passages=True, window=0)
    with pytest.raises(ConfigError, match="index must be 'exact'"):
        DenseIndex(short_bi_encoder, device="cpu", passages=True, index="faiss")


def test_maxp_spec_words(short_bi_encoder):
    from winnow.pipeline.retrieval import Dense as DenseStage
    from winnow.pipeline.spec import parse_system

    stage = parse_system(f"maxp:{short_bi_encoder}?window=20&stride=10")
    assert isinstance(stage, DenseStage)
    assert (stage.passages.window, stage.passages.stride) == (20, 10)
    assert parse_system("dense+maxp").label == "maxp"
    assert parse_system("maxp").passages is not None
    with pytest.raises(ConfigError, match="unknown option 'windw'; a maxp stage takes window"):
        parse_system(f"maxp:{short_bi_encoder}?windw=20")
    with pytest.raises(ConfigError, match="stride must be a positive number of tokens"):
        parse_system(f"maxp:{short_bi_encoder}?stride=-1")


def test_maxp_stage_searches_the_context_and_caches_its_run(
    short_bi_encoder, long_corpus, tmp_path, fresh_cache
):
    from winnow.pipeline import Context
    from winnow.pipeline.spec import parse_system
    from winnow.types import Dataset

    queries = {"q1": "wing lift", "q2": "heat transfer"}
    ds = Dataset("long", long_corpus, queries, {})
    stage = parse_system(f"maxp:{short_bi_encoder}?window=20")
    first_ctx = Context(ds, cache_dir=tmp_path)
    first = stage.transform(queries, None, first_ctx)
    index = stage.retriever(first_ctx)
    assert index.window_settings() == (20, 15)
    assert first == index.search(queries, top_k=1000)
    again_ctx = Context(ds, cache_dir=tmp_path)
    assert stage.transform(queries, None, again_ctx) == first
    assert again_ctx.timings[-1].cached  # read back from the search cache
    # another window is another index and another search
    other = parse_system(f"maxp:{short_bi_encoder}?window=10")
    other_ctx = Context(ds, cache_dir=tmp_path)
    assert other.transform(queries, None, other_ctx) != first
    assert not other_ctx.timings[-1].cached
