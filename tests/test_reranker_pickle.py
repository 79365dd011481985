"""Rerankers and stages pickle as their configuration and rebuild lazily through the cache."""

from __future__ import annotations

import pickle

import numpy as np

import winnow
from winnow.pipeline import Rerank

PAIRS = [
    ("wing lift", "lift on a swept wing in supersonic flow"),
    ("heat transfer", "heat transfer in a turbulent boundary layer"),
    ("wing lift", "the farmer winnows the grain"),
]


def test_cross_encoder_pickles_as_config_and_scores_the_same(tiny_bert, fresh_cache):
    rr = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu", max_query_length=16)
    expected = rr.score_pairs(PAIRS)  # loaded: holds weights, a tokenizer and an RLock
    data = pickle.dumps(rr)
    assert len(data) < 2_000  # the configuration, not the weights
    assert pickle.loads(data) is rr  # same process: the cached instance
    winnow.clear_cache()
    rebuilt = pickle.loads(data)
    assert rebuilt is not rr and rebuilt.config == rr.config
    assert not rebuilt.loaded  # rebuilt lazily: weights load on first use
    loads = winnow.model_loads(tiny_bert)
    np.testing.assert_array_equal(rebuilt.score_pairs(PAIRS), expected)
    assert winnow.model_loads(tiny_bert) == loads + 1


def test_bi_encoder_and_rerank_stage_pickle(tiny_bi_encoder, fresh_cache):
    rr = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu")
    expected = rr.score_pairs(PAIRS)
    stage = Rerank(rr, depth=5)
    data = pickle.dumps(stage)
    winnow.clear_cache()
    copy = pickle.loads(data)
    assert copy.label == stage.label and copy.depth == 5
    assert copy.reranker.config == rr.config and not copy.reranker.loaded
    np.testing.assert_array_equal(copy.reranker.score_pairs(PAIRS), expected)
