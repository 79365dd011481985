"""Cross-encoder: same ids and scores as the reference (transformers tokenizer, sentence-transformers
CrossEncoder.predict), activations, precision modes, and clear errors for the wrong kind of model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import winnow
from winnow.errors import ConfigError, ModelLoadError
from winnow.testing import sample_corpus

CORPUS = sample_corpus(200, seed=3)
PAIRS = [(CORPUS[i][:60], CORPUS[i + 1] + " " + CORPUS[i + 2]) for i in range(0, 150, 3)]
PAIRS += [("heat transfer", "boundary layer heat transfer at high mach number " * 30)]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr", "tiny_bert_2labels"])
def test_scores_equal_sentence_transformers_cross_encoder(request, fixture):
    from sentence_transformers import CrossEncoder

    path = request.getfixturevalue(fixture)
    ours = winnow.load_reranker(path).score_pairs(PAIRS)
    reference = CrossEncoder(path, activation_fn=torch.nn.Identity()).predict(PAIRS, batch_size=32)
    reference = np.asarray(reference, dtype=np.float32)
    if reference.ndim == 2:  # two labels (no, yes): our raw score is the logit difference
        reference = reference[:, 1] - reference[:, 0]
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr"])
def test_pair_ids_equal_the_tokenizer(request, fixture):
    rr = winnow.load_reranker(request.getfixturevalue(fixture))
    rr.load()
    ids, type_ids, lengths, truncated = rr.pairs.encode_pairs(PAIRS)
    for (q, d), got, types, n, cut in zip(PAIRS, ids, type_ids, lengths, truncated):
        ref = rr.tokenizer(q, d, truncation="only_second", max_length=rr.max_length)
        assert got == ref["input_ids"]
        assert n == len(got)
        if "token_type_ids" in ref:
            assert types == ref["token_type_ids"]
        full = rr.tokenizer(q, d)["input_ids"]
        assert cut == (len(full) > rr.max_length)


def test_query_is_capped_and_document_keeps_the_rest(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, max_query_length=8)
    long_query = "wing lift drag " * 20
    det = rr.score_pairs_detailed([(long_query, "the aircraft wing"), ("wing", "flow " * 500)])
    assert det.truncated.tolist() == [True, True]
    ids, *_ = rr.pairs.encode_pairs([(long_query, "the aircraft wing")])
    doc_ids = rr.tokenizer("the aircraft wing", add_special_tokens=False)["input_ids"]
    assert len(ids[0]) == 8 + len(doc_ids) + 3  # [CLS] q(8) [SEP] doc [SEP]
    assert det.num_tokens[1] == rr.max_length == 128


def test_max_length_option_is_respected(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, max_length=32)
    det = rr.score_pairs_detailed([("wing", "flow " * 100)])
    assert rr.max_length == 32 and det.num_tokens[0] == 32 and det.truncated[0]


def test_activations(tiny_bert, tiny_bert_2labels):
    from sentence_transformers import CrossEncoder

    raw = winnow.load_reranker(tiny_bert).score_pairs(PAIRS)
    sig = winnow.load_reranker(tiny_bert, activation="sigmoid").score_pairs(PAIRS)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-raw.astype(np.float64))), atol=1e-6)
    np.testing.assert_allclose(sig, CrossEncoder(tiny_bert).predict(PAIRS), atol=1e-5)
    with pytest.raises(ConfigError, match="two labels"):
        winnow.load_reranker(tiny_bert, activation="softmax").score_pairs(PAIRS[:1])
    soft = winnow.load_reranker(tiny_bert_2labels, activation="softmax").score_pairs(PAIRS)
    probs = CrossEncoder(tiny_bert_2labels).predict(PAIRS, apply_softmax=True)
    np.testing.assert_allclose(soft, probs[:, 1], atol=1e-5)
    with pytest.raises(ConfigError, match="activation"):
        winnow.load_reranker(tiny_bert, activation="relu")


@pytest.mark.parametrize("dtype, min_spearman", [("bfloat16", 0.99), ("int8", 0.8)])
def test_fast_cpu_modes_against_float32(minilm_cross_encoder, dtype, min_spearman):
    # Real MiniLM-L6 weights with a fresh head. bfloat16 keeps the ranking; int8 dynamic
    # quantisation is lossy (the benchmark reports its Spearman), so it is opt-in.
    pairs = PAIRS[:40]
    exact = winnow.load_reranker(minilm_cross_encoder).score_pairs(pairs)
    fast_rr = winnow.load_reranker(minilm_cross_encoder, dtype=dtype)
    fast = fast_rr.score_pairs(pairs)
    assert fast_rr.config.dtype == dtype and fast.dtype == np.float32
    assert spearmanr(exact, fast).statistic > min_spearman


def test_first_token_last_layer_gives_the_same_scores(minilm_cross_encoder, tiny_xlmr):
    for path in (minilm_cross_encoder, tiny_xlmr):
        fast = winnow.load_reranker(path)
        full = winnow.load_reranker(path, first_token_only=False)
        fast.load()
        full.load()
        assert type(fast.model.base_model.encoder.layer[-1]).__name__ == "FirstTokenLayer"
        assert type(full.model.base_model.encoder.layer[-1]).__name__ != "FirstTokenLayer"
        np.testing.assert_allclose(fast.score_pairs(PAIRS), full.score_pairs(PAIRS), atol=1e-5)


def test_wrong_kind_of_model_is_refused(tmp_path, tiny_bi_encoder):
    from transformers import BertConfig, BertForSequenceClassification

    # a plain encoder (no classification head) would give garbage scores
    with pytest.raises(ModelLoadError, match="not a sequence-classification model"):
        winnow.load_reranker(tiny_bi_encoder, "cross-encoder").score_pairs([("q", "d")])
    # three labels is a classifier, not a reranker
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        num_labels=3,
    )
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "three")
    with pytest.raises(ModelLoadError, match="3 labels"):
        winnow.load_reranker(str(tmp_path / "three"), "cross-encoder").score_pairs([("q", "d")])


def test_bad_device_and_dtype_are_config_errors(tiny_bert):
    with pytest.raises(ConfigError, match="dtype"):
        winnow.load_reranker(tiny_bert, dtype="float8")
    with pytest.raises(ConfigError, match="device"):
        winnow.load_reranker(tiny_bert, device="tpu")
    with pytest.raises(ConfigError, match="float16"):
        winnow.load_reranker(tiny_bert, device="cpu", dtype="float16")


@pytest.mark.gpu
def test_cuda_auto_precision_is_half_and_close_to_float32(tiny_bert):
    exact = winnow.load_reranker(tiny_bert, device="cpu").score_pairs(PAIRS)
    gpu = winnow.load_reranker(tiny_bert, device="cuda")
    assert gpu.config.dtype in ("bfloat16", "float16")
    assert spearmanr(exact, gpu.score_pairs(PAIRS)).statistic > 0.99
