"""Dense retrieval: exact cosine top-k, embedding cache keyed by model and corpus, MiniLM quality."""

from __future__ import annotations

import shutil

import ir_measures
import numpy as np
import pytest

from winnow.errors import ConfigError, InputError
from winnow.fusion import rrf
from winnow.retrieval import BM25Index, DenseIndex
from winnow.retrieval.dense import exact_top_k, model_fingerprint
from winnow.testing import sample_corpus
from winnow.types import Document


@pytest.fixture(scope="module")
def corpus():
    texts = sample_corpus()[:40]
    return {
        f"d{i}": Document(f"d{i}", t, title="T" if i % 3 == 0 else "") for i, t in enumerate(texts)
    }


QUERIES = {"q1": "how do wings make lift", "q2": "heat transfer in a boundary layer", "q3": "  "}


def counting(monkeypatch, dense: DenseIndex) -> list[int]:
    """Count documents the encoder is asked to embed (delegates to the real encoder)."""
    calls: list[int] = []
    real = dense.encoder.encode_documents

    def wrapper(texts, **kwargs):
        calls.append(len(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(dense.encoder, "encode_documents", wrapper)
    return calls


def test_search_is_exact_cosine_top_k(tiny_bi_encoder, corpus):
    from sentence_transformers import SentenceTransformer

    dense = DenseIndex(tiny_bi_encoder, device="cpu").index(corpus)
    run = dense.search(QUERIES, top_k=5)
    assert run["q3"] == {}  # blank query: empty ranking
    ref = SentenceTransformer(tiny_bi_encoder, device="cpu")
    d = ref.encode(
        [f"{x.title} {x.text}".strip() for x in corpus.values()], normalize_embeddings=True
    )
    for qid in ("q1", "q2"):
        q = ref.encode([QUERIES[qid]], normalize_embeddings=True)[0]
        scores = d @ q
        best = np.argsort(-scores, kind="stable")[:5]
        assert list(run[qid]) == [f"d{i}" for i in best]
        assert list(run[qid].values()) == pytest.approx(scores[best].tolist(), abs=1e-5)
    assert set(dense.timings) >= {"encode", "retrieve", "search"}


def test_top_k_clamped(tiny_bi_encoder):
    corpus = {k: Document(k, "identical text") for k in ("c", "a", "b")}
    run = DenseIndex(tiny_bi_encoder, device="cpu").index(corpus).search({"q": "text"}, top_k=100)
    assert sorted(run["q"]) == ["a", "b", "c"]
    assert max(run["q"].values()) - min(run["q"].values()) < 1e-6


def test_exact_top_k_orders_ties_by_doc_order():
    # exactly representable products, so equal scores are exactly equal
    docs = np.array([[1, 0], [0.5, 0.5], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    queries = np.array([[1, 0], [0, 1]], dtype=np.float32)
    idx, top = exact_top_k(queries, docs, top_k=3)
    assert idx.tolist() == [[0, 2, 4], [3, 1, 0]]
    assert top.tolist() == [[1, 1, 1], [1, 0.5, 0]]
    doc_order = np.array([4, 3, 2, 1, 0])  # reverse: the last document has the smallest id
    idx, _ = exact_top_k(queries, docs, top_k=2, doc_order=doc_order, block=2)
    assert idx.tolist() == [[4, 2], [3, 1]]
    full, _ = exact_top_k(queries, docs, top_k=10)
    assert full.shape == (2, 5)


def test_exact_top_k_matches_full_sort_with_many_ties():
    rng = np.random.default_rng(0)
    docs = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)  # small integers: many exact ties
    queries = rng.integers(-2, 3, size=(50, 4)).astype(np.float32)
    doc_order = rng.permutation(300)
    idx, top = exact_top_k(queries, docs, top_k=17, doc_order=doc_order, block=1000)
    scores = queries @ docs.T
    for row in range(len(queries)):
        expected = np.lexsort((doc_order, -scores[row]))[:17]
        assert idx[row].tolist() == expected.tolist()
        assert top[row].tolist() == scores[row, expected].tolist()


def test_embedding_cache(tiny_bi_encoder, corpus, tmp_path, monkeypatch):
    first = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
    calls = counting(monkeypatch, first)
    first.index(corpus)
    assert calls == [len(corpus)] and first.timings["cache_hit"] == 0
    expected = first.search(QUERIES, top_k=10)
    [entry] = (tmp_path / "dense").iterdir()
    emb = np.load(entry / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape[0] == len(corpus)

    second = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
    calls = counting(monkeypatch, second)
    second.index(corpus)
    assert calls == [] and second.timings["cache_hit"] == 1
    assert second.search(QUERIES, top_k=10) == expected

    changed = dict(corpus, d1=Document("d1", "a different text"))
    third = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
    calls = counting(monkeypatch, third)
    third.index(changed)
    assert calls == [len(corpus)] and third.timings["cache_hit"] == 0
    capped = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu", max_length=16)
    assert capped.index(corpus).timings["cache_hit"] == 0  # max_length is part of the key
    assert len(list((tmp_path / "dense").iterdir())) == 3


def test_damaged_cache_entry_is_rebuilt(tiny_bi_encoder, corpus, tmp_path, caplog):
    DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu").index(corpus)
    [entry] = (tmp_path / "dense").iterdir()
    np.save(entry / "embeddings.npy", np.zeros((3, 4), dtype=np.float32))  # wrong shape
    dense = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu").index(corpus)
    assert dense.timings["cache_hit"] == 0 and "rebuilding" in caplog.text
    assert np.load(entry / "embeddings.npy").shape[0] == len(corpus)


def test_model_fingerprint_follows_content_not_location(tiny_bi_encoder, tmp_path):
    copy = shutil.copytree(tiny_bi_encoder, tmp_path / "copy")
    assert model_fingerprint(copy) == model_fingerprint(tiny_bi_encoder)
    weights = next(p for p in copy.rglob("*") if p.suffix in (".safetensors", ".bin"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_fingerprint(copy) != model_fingerprint(tiny_bi_encoder)


def test_bad_use(tiny_bi_encoder):
    dense = DenseIndex(tiny_bi_encoder, device="cpu")
    with pytest.raises(InputError, match="before index"):
        dense.search({"q": "x"})
    with pytest.raises(InputError, match="empty corpus"):
        dense.index({})


def test_faiss_flat_equals_exact(tiny_bi_encoder, corpus):
    pytest.importorskip("faiss")
    exact = DenseIndex(tiny_bi_encoder, device="cpu").index(corpus).search(QUERIES, top_k=7)
    flat = DenseIndex(tiny_bi_encoder, device="cpu", index="faiss").index(corpus)
    assert "faiss_build" in flat.timings
    run = flat.search(QUERIES, top_k=7)
    for qid in QUERIES:
        assert list(run[qid]) == list(exact[qid])
        assert list(run[qid].values()) == pytest.approx(list(exact[qid].values()), abs=1e-5)
    hnsw = DenseIndex(tiny_bi_encoder, device="cpu", index="faiss", faiss_factory="HNSW32")
    approx = hnsw.index(corpus).search(QUERIES, top_k=5)
    for qid in ("q1", "q2"):  # 40 documents: HNSW finds (nearly) the exact neighbours
        assert len(set(approx[qid]) & set(exact[qid])) >= 4


def test_index_option_validated(tiny_bi_encoder, corpus):
    with pytest.raises(ConfigError, match="index must be"):
        DenseIndex(tiny_bi_encoder, device="cpu", index="annoy")
    pytest.importorskip("faiss")
    with pytest.raises(ConfigError, match="invalid faiss_factory"):
        DenseIndex(tiny_bi_encoder, device="cpu", index="faiss", faiss_factory="Nonsense").index(
            corpus
        )


@pytest.fixture(scope="module")
def cranfield_runs(shared_datasets, minilm_path, tmp_path_factory):
    from winnow.data import load_dataset

    ds = load_dataset("cranfield", data_dir=str(shared_datasets), download=False)
    dense = DenseIndex(minilm_path, cache_dir=tmp_path_factory.mktemp("dense-cache"), device="cpu")
    dense_run = dense.index(ds.corpus).search(ds.queries, top_k=1000)
    bm25_run = BM25Index().index(ds.corpus).search(ds.queries, top_k=1000)
    return ds, bm25_run, dense_run


def ndcg10(qrels, run) -> float:
    return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]


@pytest.mark.slow
def test_minilm_on_cranfield(cranfield_runs):
    ds, _, dense_run = cranfield_runs
    assert 0.33 <= ndcg10(ds.qrels, dense_run) <= 0.43  # measured 0.3817


@pytest.mark.slow
def test_rrf_hybrid_on_cranfield_beats_both(cranfield_runs):
    ds, bm25_run, dense_run = cranfield_runs
    hybrid = ndcg10(ds.qrels, rrf([bm25_run, dense_run]))
    assert 0.39 <= hybrid <= 0.45  # measured 0.4221
    assert hybrid > max(ndcg10(ds.qrels, bm25_run), ndcg10(ds.qrels, dense_run))


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_bi_encoder, corpus):
    cpu = (
        DenseIndex(tiny_bi_encoder, device="cpu", dtype="float32").index(corpus).search(QUERIES, 5)
    )
    gpu = (
        DenseIndex(tiny_bi_encoder, device="cuda", dtype="float32").index(corpus).search(QUERIES, 5)
    )
    for qid in ("q1", "q2"):
        assert list(gpu[qid].values()) == pytest.approx(list(cpu[qid].values()), abs=1e-4)
        assert len(set(gpu[qid]) & set(cpu[qid])) >= 4  # near-ties may swap at the cut


def test_rerank_after_dense_finds_documents_embedded(
    tiny_bi_encoder, corpus, tmp_path, monkeypatch, encode_spy, fresh_cache
):
    """A bi-encoder rerank over documents that Dense embedded (or read from its disk cache) runs
    the model on the queries only, and scores exactly as a fresh computation would."""
    import winnow

    DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu").index(corpus)
    expected = winnow.load_reranker(tiny_bi_encoder, device="cpu", memo_mb=0).score_pairs(
        [("how do wings make lift", d.full_text) for d in corpus.values()]
    )
    for fresh_process in (False, True):
        if fresh_process:
            winnow.clear_cache()  # as a new process would start: only the disk cache is left
            assert DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu").index(corpus)
        rr = winnow.load_reranker(tiny_bi_encoder, device="cpu").load()
        seen = encode_spy(rr.model)
        pairs = [("how do wings make lift", d.full_text) for d in corpus.values()]
        np.testing.assert_allclose(rr.score_pairs(pairs), expected, atol=1e-6)
        assert seen == ["how do wings make lift"]
        monkeypatch.undo()


def test_cache_key_follows_the_encoding_path(tiny_bi_encoder, corpus, tmp_path, monkeypatch):
    """An entry written by one encoding path (sentence-transformers, or an older engine) is never
    read by another: the path is part of the key."""
    from winnow.rerankers.text_encoder import TextEncoder

    st = DenseIndex(
        tiny_bi_encoder, cache_dir=tmp_path, device="cpu", encoder="sentence-transformers"
    )
    assert st.index(corpus).timings["cache_hit"] == 0
    engine = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
    calls = counting(monkeypatch, engine)
    engine.index(corpus)
    assert calls == [len(corpus)] and engine.timings["cache_hit"] == 0
    assert st.cache_key(corpus)["encoding"]["engine"] == "sentence-transformers"
    key = engine.cache_key(corpus)["encoding"]
    assert key["engine"] == TextEncoder.engine and key["pooling"] == ["mean"]
    # the pipeline's run and score caches key on score_identity: the path is in it as well
    assert engine.encoder.score_identity() != st.encoder.score_identity()
    assert (
        DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
        .index(corpus)
        .timings["cache_hit"]
    )
    monkeypatch.setattr(TextEncoder, "engine", "winnow-text-encoder-next")  # numbers changed
    bumped = DenseIndex(tiny_bi_encoder, cache_dir=tmp_path, device="cpu")
    assert bumped.index(corpus).timings["cache_hit"] == 0
    assert len(list((tmp_path / "dense").iterdir())) == 3
