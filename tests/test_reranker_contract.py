"""The contract every reranker backend passes (see STYLE.md): empty input, one pair, duplicates,
order invariance, batch-size invariance, long documents truncated, non-string input rejected."""

from __future__ import annotations

import numpy as np
import pytest

import winnow
from winnow.errors import InputError

QUERIES = ["wing lift at high mach number", "library catalog search", "bread"]
DOCS = [
    "the aircraft wing generates lift in subsonic flow",
    "shock wave boundary layer interaction on a flat plate at supersonic speed",
    "a user searches the library catalog for journal articles and books",
    "flour mill",
    "heat transfer " * 5,
    "",
]
LONG_DOC = "turbulent boundary layer separation on a swept wing " * 200

BACKENDS = {
    "bert-cross-encoder": ("tiny_bert", None),
    "bert-2-label-cross-encoder": ("tiny_bert_2labels", None),
    "xlmr-cross-encoder": ("tiny_xlmr", None),
    "bi-encoder": ("tiny_bi_encoder", None),
    "late-interaction": ("tiny_colbert", None),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    """(model path, kind, options) of each backend under contract."""
    fixture, kind = BACKENDS[request.param]
    return request.getfixturevalue(fixture), kind


def _load(backend, **options):
    path, kind = backend
    return winnow.load_reranker(path, kind, **options)


def _pairs():
    return [(q, d) for q in QUERIES for d in DOCS]


def test_empty_input(backend):
    rr = _load(backend)
    out = rr.score_pairs([])
    assert out.dtype == np.float32 and out.shape == (0,)
    assert rr.rank("q", []) == []
    assert rr.rank_many([], []) == []


def test_one_pair_gives_one_finite_float32(backend):
    out = _load(backend).score_pairs([("wing lift", "the wing of an aircraft")])
    assert out.dtype == np.float32 and out.shape == (1,)
    assert np.isfinite(out).all()


def test_duplicates_score_identically(backend):
    pair = ("wing lift", "the wing of an aircraft")
    out = _load(backend).score_pairs([pair, ("other", "text"), pair, pair])
    assert out[0] == out[2] == out[3]


def test_order_invariance(backend):
    rr = _load(backend)
    pairs = _pairs()
    perm = np.random.default_rng(0).permutation(len(pairs))
    direct = rr.score_pairs(pairs)
    shuffled = rr.score_pairs([pairs[i] for i in perm])
    np.testing.assert_allclose(shuffled, direct[perm], atol=1e-5, rtol=0)


@pytest.mark.parametrize("max_tokens,max_batch_size", [(1, 1), (64, 3), (100_000, 1000)])
def test_batch_size_invariance(backend, max_tokens, max_batch_size):
    pairs = _pairs()
    reference = np.array([_load(backend).score_pairs([p])[0] for p in pairs])
    batched = _load(backend, max_tokens=max_tokens, max_batch_size=max_batch_size).score_pairs(
        pairs
    )
    # within 1e-5 absolute, or relative for |score| > 1 (float32 carries ~7 significant digits)
    np.testing.assert_allclose(batched, reference, atol=1e-5, rtol=1e-5)


def test_long_documents_are_truncated_not_crashing(backend):
    rr = _load(backend)
    detailed = rr.score_pairs_detailed([("wing", LONG_DOC), ("wing", "short wing text")])
    assert np.isfinite(detailed.scores).all()
    assert detailed.truncated.tolist() == [True, False]
    assert detailed.num_tokens[0] <= rr.max_length


@pytest.mark.parametrize(
    "bad, where",
    [
        ([("q", 3)], r"pairs\[0\]\[1\]"),
        ([("q", "d"), (None, "d")], r"pairs\[1\]\[0\]"),
        ([("only one",)], r"pairs\[0\]"),
        ("not a list", "pairs must be"),
    ],
)
def test_non_string_input_is_rejected_with_its_position(backend, bad, where):
    with pytest.raises(InputError, match=where):
        _load(backend).score_pairs(bad)


def test_rank_sorted_with_top_k_and_ties_in_input_order(backend):
    rr = _load(backend)
    docs = ["flour mill", "the wing of an aircraft", "flour mill", "wing lift"]
    hits = rr.rank("wing lift", docs)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dup = [h.index for h in hits if h.document == "flour mill"]
    assert dup == [0, 2]  # equal scores keep input order
    assert [h.index for h in rr.rank("wing lift", docs, top_k=2)] == [h.index for h in hits[:2]]
    assert all(h.document is None for h in rr.rank("wing lift", docs, return_documents=False))
    with pytest.raises(InputError, match=r"^documents\[1\] is int"):
        rr.rank("q", ["ok", 5])


def test_rank_many_equals_rank_per_query(backend):
    rr = _load(backend)
    docs = [DOCS[:3], DOCS[2:], []]
    many = rr.rank_many(QUERIES, docs, top_k=2)
    for q, d, got in zip(QUERIES, docs, many):
        single = rr.rank(q, d, top_k=2)
        assert [h.index for h in got] == [h.index for h in single]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in single], atol=1e-5)
    with pytest.raises(InputError, match="same length"):
        rr.rank_many(["a", "b"], [["x"]])


def test_warmup_and_health(backend):
    rr = _load(backend)
    assert rr.warmup() >= 0
    health = rr.health()
    assert health["loaded"] and health["warmed"]
    assert health["device"] == "cpu" and health["dtype"] == "float32"
    assert health["max_length"] == rr.max_length > 0
