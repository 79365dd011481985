"""One reranker called from several threads at once runs its model one call at a time.

Regression: a Hugging Face fast tokenizer keeps its padding / truncation settings on the object
that ``MODELS`` shares, and sets them on every call, so two overlapping calls could mix them up
(Daft's in-process workers hit ``Unable to create tensor`` that way). ``ascore_pairs`` / ``arank``
run the reranker in worker threads, so an application awaiting two of them did the same.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import winnow
from overlap_spy import Overlap

PAIRS = [
    (f"query {i} about wings", f"document {i} on lift and drag " * (1 + i % 5)) for i in range(24)
]


def test_threads_share_one_cross_encoder_one_call_at_a_time(tiny_bert, monkeypatch):
    rr = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    expected = rr.score_pairs(PAIRS)
    spy = Overlap(rr._score)
    monkeypatch.setattr(rr, "_score", spy)
    results: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda k=k: results.__setitem__(k, rr.score_pairs(PAIRS)))
        for k in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert spy.calls == 3 and spy.most == 1
    for k in range(3):
        np.testing.assert_allclose(results[k], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("encoder", ["winnow", "sentence-transformers"])
def test_awaited_calls_of_one_bi_encoder_run_one_at_a_time(tiny_bi_encoder, encoder, monkeypatch):
    rr = winnow.load_reranker(
        tiny_bi_encoder, "bi-encoder", device="cpu", encoder=encoder, memo_mb=0
    )
    expected = rr.score_pairs(PAIRS)
    spy = Overlap(rr._embed)
    monkeypatch.setattr(rr, "_embed", spy)

    async def both():
        return await asyncio.gather(rr.ascore_pairs(PAIRS), rr.ascore_pairs(PAIRS[::-1]))

    first, second = asyncio.run(both())
    assert spy.calls >= 2 and spy.most == 1
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(second, expected[::-1], rtol=0, atol=1e-6)


def test_the_lock_is_shared_by_rerankers_of_one_model_and_reentrant(tiny_bert):
    from winnow.rerankers.cache import model_lock

    a = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    b = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu", max_length=16)
    assert a is not b and model_lock(a.config) is model_lock(b.config)
    with model_lock(a.config):  # a caller holding it (a Daft worker) may still score
        assert len(b.score_pairs(PAIRS[:2])) == 2
