"""The engine's look-ahead (next batch prepared on a background thread) and the CUDA loading choices,
exercised on the CPU: same results as the serial path, in order, errors propagated, threads joined.
The CUDA-only halves (pinned copies, SDPA on a GPU) are in tests/test_gpu.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import winnow
from winnow.rerankers._cuda import attention_choices, attention_implementation, load_pretrained
from winnow.rerankers.engine import run_batches
from winnow.testing import sample_corpus

TEXTS = sample_corpus(60, seed=3)
PAIRS = [(TEXTS[i % 7], TEXTS[i]) for i in range(len(TEXTS))]


def _prepare_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("winnow-prepare")]


def test_lookahead_gives_the_serial_results_in_order():
    lengths = np.random.default_rng(0).integers(1, 50, size=200)
    threads = []

    def prepare(idx):
        threads.append(threading.current_thread().name)
        return idx * 3, lengths[idx]

    def forward(inputs):
        tripled, lens = inputs
        return tripled.astype(np.float64) + lens / 100

    serial, s_stats = run_batches(lengths, lambda idx: forward(prepare(idx)), max_tokens=200)
    threads.clear()
    ahead, a_stats = run_batches(lengths, forward, prepare=prepare, max_tokens=200)
    np.testing.assert_array_equal(ahead, serial)
    np.testing.assert_array_equal(ahead, np.arange(200) * 3 + lengths / 100)
    assert a_stats.batches == s_stats.batches > 2
    # every batch after the first was prepared ahead, on the look-ahead thread
    assert a_stats.prepared_ahead == a_stats.batches - 1 and s_stats.prepared_ahead == 0
    assert sum(name.startswith("winnow-prepare") for name in threads) == a_stats.batches - 1
    assert not _prepare_threads()


def test_an_error_in_prepare_propagates_and_the_thread_is_joined():
    lengths = np.full(40, 10)
    calls = []

    def prepare(idx):
        calls.append(len(calls))
        if len(calls) == 3:
            raise ValueError("bad batch 3")
        return idx

    with pytest.raises(ValueError, match="bad batch 3"):
        run_batches(lengths, lambda idx: idx.astype(np.float32), prepare=prepare, max_tokens=50)
    assert not _prepare_threads()


def test_an_error_in_forward_propagates_while_a_batch_is_prepared_ahead():
    lengths = np.full(40, 10)  # batches of 5, in input order
    prepared = []

    def forward(idx):
        if idx[0] >= 10:
            raise KeyError("forward failed")
        return idx.astype(np.float32)

    with pytest.raises(KeyError, match="forward failed"):
        run_batches(lengths, forward, prepare=lambda i: prepared.append(i[0]) or i, max_tokens=50)
    # the fourth batch was started ahead, then dropped (cancelled, or waited for if it had begun)
    assert prepared in ([0, 5, 10], [0, 5, 10, 15])
    assert not _prepare_threads()


def test_out_of_memory_with_lookahead_re_plans_and_loses_nothing():
    lengths = np.full(40, 10)
    prepared = []

    def prepare(idx):
        prepared.append(idx.copy())
        return idx

    def forward(idx):
        if len(idx) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return idx.astype(np.float32)

    out, stats = run_batches(lengths, forward, prepare=prepare, max_tokens=400, max_batch_size=64)
    np.testing.assert_array_equal(out, np.arange(40, dtype=np.float32))
    assert stats.oom_splits >= 1 and max(stats.batch_sizes) <= 5
    assert sum(stats.batch_sizes) == 40 and stats.prepared_ahead >= 1


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr"])
def test_cross_encoder_overlap_scores_equal_the_serial_path(request, fixture):
    path = request.getfixturevalue(fixture)
    serial = winnow.load_reranker(path, device="cpu", max_tokens=256)
    ahead = winnow.load_reranker(path, device="cpu", max_tokens=256, overlap=True)
    expected = serial.score_pairs(PAIRS)
    assert serial.last_stats.prepared_ahead == 0  # off by default on the CPU
    got = ahead.score_pairs(PAIRS)
    assert ahead.last_stats.batches > 2
    assert ahead.last_stats.prepared_ahead == ahead.last_stats.batches - 1
    np.testing.assert_array_equal(got, expected)


def test_bi_encoder_overlap_embeddings_equal_the_serial_path(tiny_bi_encoder):
    serial = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu", max_tokens=256)
    ahead = winnow.load_reranker(
        tiny_bi_encoder, "bi-encoder", device="cpu", max_tokens=256, overlap=True, memo_mb=0
    )
    expected = serial.encode(TEXTS)
    got = ahead.encode(TEXTS)
    assert ahead.last_stats.prepared_ahead == ahead.last_stats.batches - 1 > 1
    np.testing.assert_array_equal(got, expected)


def test_attention_choices_per_device_and_dtype():
    assert attention_choices("cpu", "float32", flash_available=True) == [None]
    assert attention_choices("mps", "float16", flash_available=True) == [None]
    assert attention_choices("cuda", "bfloat16", flash_available=True) == [
        "flash_attention_2",
        "sdpa",
        None,
    ]
    assert attention_choices("cuda:1", "float16", flash_available=False) == ["sdpa", None]
    assert attention_choices("cuda", "float32", flash_available=True) == ["sdpa", None]


def test_cpu_loading_keeps_transformers_default_attention(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    ours = load_pretrained(AutoModelForSequenceClassification, tiny_bert, "cpu", "float32")
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    assert attention_implementation(ours) == attention_implementation(plain)


def test_an_unavailable_attention_falls_back_to_the_next(tiny_bert):
    import importlib.util

    from transformers import AutoModelForSequenceClassification

    refused = ["not_an_attention"]  # transformers: ValueError, not supported
    if importlib.util.find_spec("flash_attn") is None:
        refused.append("flash_attention_2")  # transformers: ImportError, not installed
    for choice in refused:
        model = load_pretrained(
            AutoModelForSequenceClassification,
            tiny_bert,
            "cuda",
            "bfloat16",
            choices=[choice, "sdpa", None],
        )
        assert attention_implementation(model) == "sdpa"
        assert model.dtype == torch.bfloat16


def test_first_token_layer_reads_a_two_dimensional_padding_mask(tiny_bert):
    """FlashAttention-2 models hand their layers the plain (batch, tokens) mask: the first-token
    layer must treat it as the 4-D boolean mask SDPA models pass."""
    from transformers import AutoModelForSequenceClassification

    from winnow.rerankers._first_token import _first_token_layer_class

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    layer = _first_token_layer_class()(model.bert.encoder.layer[-1])
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, model.config.hidden_size)
    mask2 = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    mask4 = mask2[:, None, None, :].bool().expand(3, 1, 7, 7)
    with torch.inference_mode():
        a = layer(hidden, mask2)
        b = layer(hidden, mask4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (3, 1, model.config.hidden_size)
