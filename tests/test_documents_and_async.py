"""rank() on documents with ids and metadata (dicts and winnow Documents), errors naming the
caller's argument, the user's model name beside the resolved path, and the async API."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import winnow
from winnow.errors import InputError
from winnow.pipeline import Rerank
from winnow.types import Document

TEXTS = ["the wing makes lift", "heat transfer in a plate", "lift and drag of a wing"]
QUERY = "lift of a wing"


@pytest.fixture
def reranker(tiny_bert):
    return winnow.load_reranker(tiny_bert)


def test_dict_documents_carry_ids_and_metadata(reranker):
    docs = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(TEXTS)]
    hits = reranker.rank(QUERY, docs)
    plain = reranker.rank(QUERY, TEXTS)
    assert [(h.index, h.score) for h in hits] == [(h.index, h.score) for h in plain]
    assert [h.id for h in hits] == [f"d{h.index}" for h in hits]
    assert [h.metadata for h in hits] == [{"n": h.index} for h in hits]
    assert [h.document for h in hits] == [TEXTS[h.index] for h in hits]
    assert all(h.id is None and h.metadata is None for h in plain)


def test_a_title_is_scored_before_the_text_as_in_collections(reranker):
    titled = reranker.rank(QUERY, [{"doc_id": 7, "title": "Wings", "text": TEXTS[0]}])
    joined = reranker.score_pairs([(QUERY, f"Wings {TEXTS[0]}")])
    assert titled[0].score == float(joined[0])
    assert titled[0].id == "7"  # ids are strings, as in runs
    assert titled[0].document == TEXTS[0]  # the text as given, without the title


def test_winnow_documents_and_mixed_lists(reranker):
    doc = Document("x1", TEXTS[2], title="Drag", metadata={"source": "cranfield"})
    hits = reranker.rank(QUERY, [TEXTS[0], doc], top_k=2)
    by_index = {h.index: h for h in hits}
    assert by_index[1].id == "x1" and by_index[1].metadata == {"source": "cranfield"}
    pairs = [(QUERY, TEXTS[0]), (QUERY, doc.full_text)]  # the same batch: the same padding
    assert by_index[1].score == float(reranker.score_pairs(pairs)[1])
    assert by_index[0].id is None


def test_errors_name_the_argument_the_caller_passed(reranker):
    # before: a single-query call blamed documents_per_query[0][1]
    with pytest.raises(InputError, match=r"^documents\[1\] is int"):
        reranker.rank(QUERY, ["a", 3])
    with pytest.raises(InputError, match=r"documents\[0\] has unknown key 'body'"):
        reranker.rank(QUERY, [{"body": "a"}])
    with pytest.raises(InputError, match=r"documents\[0\] has no 'text'"):
        reranker.rank(QUERY, [{"id": "a"}])
    with pytest.raises(InputError, match=r"documents\[0\]\['metadata'\] is list"):
        reranker.rank(QUERY, [{"text": "a", "metadata": [1]}])
    with pytest.raises(InputError, match=r"^query is int"):
        reranker.rank(3, ["a"])
    with pytest.raises(InputError, match=r"documents_per_query\[1\]\[0\] is float"):
        reranker.rank_many([QUERY, QUERY], [["a"], [1.5]])
    with pytest.raises(InputError, match="documents must be a list of documents"):
        reranker.rank(QUERY, "one string")
    with pytest.raises(InputError, match="top_k must be a non-negative integer"):
        reranker.rank(QUERY, ["a"], top_k=True)


def test_the_users_model_name_is_kept_beside_the_path(fresh_cache, minilm_path):
    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    by_name = winnow.load_reranker(hub_id, "bi-encoder")
    assert by_name.name == hub_id and by_name.config.model == minilm_path
    assert repr(by_name).startswith(f"BiEncoderReranker(model={hub_id!r}, path={minilm_path!r}")
    assert Rerank(by_name).label == "rerank:all-MiniLM-L6-v2"  # was rerank:model
    by_path = winnow.load_reranker(minilm_path, "bi-encoder")
    assert by_path.name == minilm_path and "path=" not in repr(by_path)


def test_async_rank_and_score_pairs_match_the_sync_api(reranker):
    docs = [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)]
    pairs = [(QUERY, t) for t in TEXTS]

    async def main():
        return await asyncio.gather(
            reranker.arank(QUERY, docs, top_k=2),
            reranker.arank_many([QUERY, "heat"], [TEXTS, TEXTS[:1]]),
            reranker.ascore_pairs(p for p in pairs),  # a generator is consumed once
        )

    ranked, many, scores = asyncio.run(main())
    assert ranked == reranker.rank(QUERY, docs, top_k=2)
    assert many == reranker.rank_many([QUERY, "heat"], [TEXTS, TEXTS[:1]])
    np.testing.assert_array_equal(scores, reranker.score_pairs(pairs))


def test_async_errors_are_raised_to_the_caller(reranker):
    with pytest.raises(InputError, match=r"documents\[0\] is int"):
        asyncio.run(reranker.arank(QUERY, [1]))
