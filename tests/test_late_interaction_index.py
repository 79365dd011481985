"""Multi-vector indexes: exact MaxSim is the reference, PLAID is measured against it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from winnow.errors import ConfigError, DatasetError, InputError
from winnow.retrieval.late_interaction import (
    ExactIndex,
    MultiVectorIndex,
    auto_kind,
    build_index,
    build_index_chunked,
    cached_index,
    load_index,
    maxsim,
)

N_DOCS = 300
#: PLAID build knobs: the defaults (256 centroids for this corpus's ~6,000 tokens).
PLAID_KNOBS: dict = {}


def _normalised(tensors) -> list[np.ndarray]:
    out = []
    for t in tensors:
        v = t.float().numpy()
        out.append(np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True)))
    return out


@pytest.fixture(scope="module")
def token_vectors(minilm_path):
    """all-MiniLM-L6-v2's token vectors: (doc_ids, documents, queries), L2-normalised."""
    from sentence_transformers import SentenceTransformer

    from winnow.testing import sample_corpus

    model = SentenceTransformer(minilm_path, device="cpu")
    texts = sample_corpus(N_DOCS, seed=3)
    queries = [" ".join(t.split()[:6]) for t in sample_corpus(30, seed=4)]
    docs = _normalised(model.encode(texts, output_value="token_embeddings", batch_size=64))
    qs = _normalised(model.encode(queries, output_value="token_embeddings", batch_size=64))
    return [f"d{i:03d}" for i in range(N_DOCS)], docs, qs


@pytest.fixture(scope="module")
def exact(token_vectors):
    ids, docs, _ = token_vectors
    return build_index(ids, docs, kind="exact")


@pytest.fixture(scope="module")
def plaid(token_vectors):
    ids, docs, _ = token_vectors
    return build_index(ids, docs, kind="plaid", **PLAID_KNOBS)


def _brute_force(ids, docs, query, k):
    """MaxSim of every document by a plain loop, sorted by score then id."""
    scored = []
    for doc_id, doc in zip(ids, docs):
        total = 0.0
        for q_tok in query:
            total += max(float(np.dot(q_tok, d_tok)) for d_tok in doc)
        scored.append((doc_id, total))
    return sorted(scored, key=lambda x: (-x[1], x[0]))[:k]


def test_maxsim_equals_a_loop(token_vectors):
    _, docs, qs = token_vectors
    for q, d in zip(qs[:5], docs[:5]):
        loop = sum(max(float(np.dot(a, b)) for b in d) for a in q)
        assert maxsim(q, d) == pytest.approx(loop, rel=1e-5)


def test_exact_search_equals_brute_force(token_vectors, exact):
    ids, docs, qs = token_vectors
    hits = exact.search(qs[:8], k=20)
    for q, got in zip(qs[:8], hits):
        want = _brute_force(ids, docs, q, 20)
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)


def test_exact_search_in_small_blocks_gives_the_same(token_vectors, exact):
    _, _, qs = token_vectors
    small, whole = exact.search(qs, k=10, block=64), exact.search(qs, k=10)
    for a, b in zip(small, whole):  # BLAS rounds differently for other shapes: last bits only
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-6)
        assert {d for d, _ in a} == {d for d, _ in b}


def test_equal_scores_are_ordered_by_doc_id_also_at_the_cut():
    doc = np.eye(4, dtype=np.float32)[:2]
    other = np.eye(4, dtype=np.float32)[2:]
    ids = ["c", "a", "z", "b"]
    index = build_index(ids, [doc, doc, other, doc], kind="exact")
    assert index.search([doc], k=2) == [[("a", 2.0), ("b", 2.0)]]
    assert index.search([doc], k=4)[0][-1] == ("z", 0.0)


def _overlap(a, b, k):
    return len({d for d, _ in a[:k]} & {d for d, _ in b[:k]}) / k


def test_plaid_agrees_with_exact(token_vectors, exact, plaid):
    _, _, qs = token_vectors
    ref = exact.search(qs, k=100)
    got = plaid.search(qs, k=100)
    top10 = np.mean([_overlap(a, b, 10) for a, b in zip(ref, got)])
    recall100 = np.mean([_overlap(a, b, 100) for a, b in zip(ref, got)])
    assert top10 >= 0.98  # measured 0.997 with the defaults (8-bit residuals, nprobe 4)
    assert recall100 >= 0.98  # measured 0.998
    # PLAID's scores are MaxSim over the decompressed vectors: close to the exact ones
    ref_scores = {d: s for d, s in ref[0]}
    for d, s in got[0][:10]:
        if d in ref_scores:
            assert s == pytest.approx(ref_scores[d], abs=0.05 * len(qs[0]))


def test_plaid_search_knobs(token_vectors, plaid):
    _, _, qs = token_vectors
    wide = plaid.search(qs[:5], k=10, nprobe=8, ndocs=N_DOCS, centroid_score_threshold=-1.0)
    assert all(len(h) == 10 for h in wide)
    with pytest.raises(ConfigError, match=r"unknown search option.*ncells.*valid: nprobe"):
        plaid.search(qs[:1], k=10, ncells=2)
    with pytest.raises(ConfigError, match="nprobe must be a positive integer"):
        plaid.search(qs[:1], k=10, nprobe=0)


@pytest.mark.parametrize("kind", ["exact", "plaid"])
@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(token_vectors, exact, plaid, kind, mmap, tmp_path):
    _, _, qs = token_vectors
    index = exact if kind == "exact" else plaid
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["kind"] == kind and meta["documents"] == N_DOCS and meta["format_version"] == 1
    loaded = MultiVectorIndex.load(tmp_path / "idx", mmap=mmap)
    assert type(loaded) is type(index) and len(loaded) == N_DOCS
    assert loaded.search(qs, k=30) == index.search(qs, k=30)
    index.save(tmp_path / "idx")  # saving over an existing folder replaces it whole
    assert load_index(tmp_path / "idx").search(qs[:3], k=5) == index.search(qs[:3], k=5)


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_add_in_batches_equals_building_at_once(token_vectors, kind, tmp_path):
    ids, docs, qs = token_vectors
    half = N_DOCS // 2
    grown = build_index(
        ids[:half], docs[:half], kind=kind, **(PLAID_KNOBS if kind == "plaid" else {})
    )
    # at once, with the same centroids (trained on the first half) for plaid
    at_once = grown.empty_copy() if kind == "plaid" else ExactIndex(grown.dim)
    at_once.add(ids, docs)
    grown.save(tmp_path / "g")
    grown = load_index(tmp_path / "g")  # memory-mapped arrays are grown too
    grown.add(ids[half:], docs[half:])
    assert len(grown) == N_DOCS and grown.doc_ids == ids
    assert grown.search(qs, k=50) == at_once.search(qs, k=50)
    if kind == "plaid":
        np.testing.assert_array_equal(grown.centroids, at_once.centroids)
        np.testing.assert_array_equal(grown.ivf, at_once.ivf)


def _chunks(docs, sizes):
    """(tokens, doclens) chunks of ``docs`` of the given document counts."""
    out, begin = [], 0
    for size in sizes:
        part = docs[begin : begin + size]
        out.append((np.concatenate(part), np.array([len(d) for d in part], dtype=np.int64)))
        begin += size
    return out


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_building_from_chunks_equals_building_at_once(token_vectors, exact, plaid, kind):
    ids, docs, qs = token_vectors
    at_once = exact if kind == "exact" else plaid
    chunked = build_index_chunked(ids, _chunks(docs, [100, 1, 150, 49]), kind=kind)
    assert chunked.doc_ids == ids
    np.testing.assert_array_equal(chunked.doclens, at_once.doclens)
    if kind == "plaid":  # the same training sample, so the same centroids and codes
        np.testing.assert_array_equal(chunked.centroids, at_once.centroids)
        np.testing.assert_array_equal(chunked.codes, at_once.codes)
        np.testing.assert_array_equal(chunked.residuals, at_once.residuals)
    assert chunked.search(qs, k=50) == at_once.search(qs, k=50)
    # float16 chunks (how the first stage keeps them) are read as float32
    half = [(t.astype(np.float16), n) for t, n in _chunks(docs, [200, 100])]
    assert len(build_index_chunked(ids, half, kind=kind)) == N_DOCS
    with pytest.raises(InputError, match="300 doc_ids but the chunks hold 200 documents"):
        build_index_chunked(ids, _chunks(docs, [200]), kind=kind)
    tokens, lens = _chunks(docs, [300])[0]
    with pytest.raises(InputError, match=r"chunk 0: .* tokens in its document lengths"):
        build_index_chunked(ids, [(tokens[:-1], lens)], kind=kind)
    with pytest.raises(InputError, match="empty corpus"):
        build_index_chunked([], [], kind=kind)


@pytest.mark.parametrize("nbits", [8, 4])
def test_plaid_scores_are_maxsim_over_the_decompressed_vectors(token_vectors, plaid, nbits):
    """The search scores candidates from the residual buckets without decompressing them; its
    scores equal MaxSim over ``decompress`` (the stored vectors) to float32 rounding."""
    ids, docs, qs = token_vectors
    index = plaid if nbits == 8 else build_index(ids, docs, kind="plaid", nbits=4)
    assert index._residual_affine() is not None  # faiss's scalar quantisers are affine
    wide = {"nprobe": 8, "ndocs": N_DOCS * 4, "centroid_score_threshold": -1.0}
    checked = 0
    for q, hits in zip(qs[:10], index.search(qs[:10], k=N_DOCS, **wide)):
        by_id = dict(hits)
        for doc, d_id in enumerate(ids[:20]):
            start = int(index.doclens[:doc].sum())
            vecs = index.decompress(np.arange(start, start + index.doclens[doc]))
            if d_id in by_id:
                assert by_id[d_id] == pytest.approx(maxsim(q, vecs), abs=1e-5)
                checked += 1
    assert checked >= 100


def test_plaid_search_is_the_same_without_its_precomputed_arrays(token_vectors, plaid, tmp_path):
    """The per-document centroid matrix and the token norms only save work: an index loaded
    without ``norms.npy`` (saved before it existed) or without the matrix searches the same."""
    _, _, qs = token_vectors
    expected = plaid.search(qs, k=30)
    plaid.save(tmp_path / "idx")
    (tmp_path / "idx" / "norms.npy").unlink()
    old = load_index(tmp_path / "idx")
    assert old._norms is None and old.search(qs, k=30) == expected
    old._padded = False  # the per-call layout of the token codes
    assert old.search(qs, k=30) == expected
    np.testing.assert_array_equal(old.token_norms(), plaid.token_norms())


def test_auto_kind_is_exact_below_4096_documents():
    assert auto_kind(1_400) == "exact" and auto_kind(4_095) == "exact"
    assert auto_kind(4_096) == "plaid" and auto_kind(100_000) == "plaid"


def test_bad_inputs(token_vectors, exact):
    ids, docs, qs = token_vectors
    with pytest.raises(InputError, match="empty corpus"):
        build_index([], [], kind="exact")
    with pytest.raises(InputError, match=r"document 'b' \(doc_ids\[1\]\) has zero tokens"):
        build_index(["a", "b"], [docs[0], docs[0][:0]], kind="exact")
    with pytest.raises(InputError, match="dtype int64"):
        build_index(["a"], [np.ones((3, 4), dtype=np.int64)], kind="exact")
    with pytest.raises(InputError, match=r"doc_ids\[1\].*dim 5, the index has 4"):
        build_index(["a", "b"], [np.ones((3, 4)), np.ones((3, 5))], kind="exact")
    with pytest.raises(InputError, match="NaN"):
        build_index(["a"], [np.full((2, 4), np.nan, dtype=np.float32)], kind="exact")
    with pytest.raises(InputError, match="2 doc_ids but 1 token matrices"):
        build_index(["a", "b"], [docs[0]], kind="exact")
    with pytest.raises(InputError, match=r"doc_ids\[1\]: duplicate document id 'a'"):
        build_index(["a", "a"], [docs[0], docs[1]], kind="exact")
    with pytest.raises(InputError, match="duplicate document id 'd000'"):
        exact.add(["d000"], [docs[0]])
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        exact.search(qs[:1], k=0)
    with pytest.raises(InputError, match=r"queries\[0\] has token vectors of dim 3"):
        exact.search([np.ones((2, 3), dtype=np.float32)], k=5)
    with pytest.raises(InputError, match=r"queries\[0\] has zero tokens"):
        exact.search([qs[0][:0]], k=5)
    with pytest.raises(
        ConfigError, match=r"unknown multi-vector index kind 'colbert'.*exact, plaid"
    ):
        build_index(ids, docs, kind="colbert")
    with pytest.raises(ConfigError, match=r"unknown option.*ncentroid .*valid: ncentroids"):
        build_index(ids, docs, kind="plaid", ncentroid=16)
    with pytest.raises(ConfigError, match="nbits must be one of"):
        build_index(ids, docs, kind="plaid", nbits=3)
    assert exact.search([], k=5) == []


def _corrupt(folder, name, change):
    path = folder / name
    if name.endswith(".json"):
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    else:
        change(path)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("meta.json", lambda m: m.update(format_version=2), "meta.json: index format version 2"),
        ("meta.json", lambda m: m.update(dim=7), "centroids.npy: shape 64x384, expected 64x7"),
        ("meta.json", lambda m: m.update(kind="hnsw"), "meta.json: unknown index kind 'hnsw'"),
        ("codes.npy", lambda p: p.unlink(), "codes.npy: missing file"),
        ("doc_ids.json", lambda ids: ids.pop(), "doc_ids.json: 119 ids, meta.json says 120"),
        ("residuals.npy", lambda p: p.write_bytes(b"junk"), "residuals.npy: unreadable array"),
    ],
)
def test_loading_a_damaged_index_names_the_file(token_vectors, tmp_path, name, change, message):
    ids, docs, _ = token_vectors
    index = build_index(ids[:120], docs[:120], kind="plaid", ncentroids=64)
    index.save(tmp_path / "idx")
    _corrupt(tmp_path / "idx", name, change)
    with pytest.raises(DatasetError, match=message.replace(".", r"\.")):
        load_index(tmp_path / "idx")


def test_loading_a_folder_that_is_no_index(tmp_path):
    with pytest.raises(DatasetError, match=r"meta\.json: missing file"):
        load_index(tmp_path)
    exact = build_index(["a"], [np.eye(3, dtype=np.float32)], kind="exact")
    exact.save(tmp_path / "e")
    (tmp_path / "e" / "tokens.npy").unlink()
    with pytest.raises(DatasetError, match=r"tokens\.npy: missing file"):
        load_index(tmp_path / "e")


def test_cached_index_builds_once_per_key(token_vectors, tmp_path):
    ids, docs, qs = token_vectors
    builds = []

    def build():
        builds.append(1)
        return build_index(ids[:100], docs[:100], kind="exact")

    key = {"model": "tiny", "corpus": "hash-1", "kind": "exact"}
    first = cached_index(tmp_path, key, build)
    again = cached_index(tmp_path, key, build)
    assert len(builds) == 1
    assert again.search(qs[:4], k=10) == first.search(qs[:4], k=10)
    cached_index(tmp_path, {**key, "corpus": "hash-2"}, build)
    assert len(builds) == 2
    # a damaged entry is rebuilt, not trusted
    (entry,) = [p for p in (tmp_path / "late-interaction").iterdir() if p.name[0] != "."][:1]
    for p in (tmp_path / "late-interaction").iterdir():
        (p / "index" / "tokens.npy").write_bytes(b"junk")
    rebuilt = cached_index(tmp_path, key, build)
    assert len(builds) == 3 and rebuilt.search(qs[:4], k=10) == first.search(qs[:4], k=10)
    assert entry.exists()


def test_importing_the_index_module_loads_neither_faiss_nor_torch():
    code = (
        "import sys, winnow, winnow.retrieval.late_interaction\n"
        "print(sorted(m for m in ('faiss', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
