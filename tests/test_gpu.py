"""CUDA checks of the GPU paths (docs/gpu.md): float32 scores equal the CPU's, bfloat16 ranks like
float32, the look-ahead with pinned non-blocking copies gives the serial results, SDPA is selected.

Deselected, with a line saying so, where ``torch.cuda.is_available()`` is False (tests/conftest.py);
``benchmarks/gpu.sh`` runs them on a loan machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import winnow
from winnow.rerankers._cuda import attention_implementation, flash_attn_available, to_device
from winnow.rerankers._first_token import _encoder_layers
from winnow.testing import sample_corpus

pytestmark = pytest.mark.gpu

TEXTS = sample_corpus(300, seed=7)
PAIRS = [(TEXTS[i % 25], TEXTS[i]) for i in range(len(TEXTS))]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr"])
def test_cuda_float32_scores_match_cpu_float32(request, fixture):
    path = request.getfixturevalue(fixture)
    cpu = winnow.load_reranker(path, device="cpu", dtype="float32").score_pairs(PAIRS)
    gpu = winnow.load_reranker(path, device="cuda", dtype="float32").score_pairs(PAIRS)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-4)


def test_cuda_bi_encoder_float32_matches_cpu(tiny_bi_encoder):
    cpu = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cpu", dtype="float32")
    gpu = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cuda", dtype="float32")
    assert gpu.uses_engine
    a, b = cpu.encode(TEXTS), gpu.encode(TEXTS)
    assert float((a * b).sum(1).min()) >= 0.99999


def test_cuda_auto_dtype_is_bfloat16_where_supported(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, device="cuda")
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert rr.config.dtype == expected


def test_cuda_bfloat16_ranks_like_float32(minilm_cross_encoder):
    """The real all-MiniLM-L6-v2 encoder (a tiny random model is too sensitive to rounding to
    stand for a trained one: 0.997 on the CPU in bfloat16)."""
    fp32 = winnow.load_reranker(minilm_cross_encoder, device="cuda", dtype="float32")
    bf16 = winnow.load_reranker(minilm_cross_encoder, device="cuda", dtype="bfloat16")
    assert spearmanr(fp32.score_pairs(PAIRS), bf16.score_pairs(PAIRS)).statistic >= 0.999


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_overlap_is_on_and_identical_to_serial(tiny_bert, dtype):
    ahead = winnow.load_reranker(tiny_bert, device="cuda", dtype=dtype, max_tokens=512)
    serial = winnow.load_reranker(
        tiny_bert, device="cuda", dtype=dtype, max_tokens=512, overlap=False
    )
    got, expected = ahead.score_pairs(PAIRS), serial.score_pairs(PAIRS)
    assert ahead.last_stats.batches > 2
    assert ahead.last_stats.prepared_ahead == ahead.last_stats.batches - 1  # on by default
    assert serial.last_stats.prepared_ahead == 0
    np.testing.assert_array_equal(got, expected)


def test_cuda_overlap_on_a_side_stream_identical_to_serial(tiny_bert):
    """The look-ahead thread's copies go on the caller's stream, not the default one."""
    serial = winnow.load_reranker(
        tiny_bert, device="cuda", dtype="float32", max_tokens=512, overlap=False
    )
    ahead = winnow.load_reranker(tiny_bert, device="cuda", dtype="float32", max_tokens=512)
    expected = serial.score_pairs(PAIRS)
    with torch.cuda.stream(torch.cuda.Stream()):
        got = ahead.score_pairs(PAIRS)
    assert ahead.last_stats.prepared_ahead > 1
    np.testing.assert_array_equal(got, expected)


def test_cuda_bi_encoder_overlap_identical_to_serial(tiny_bi_encoder):
    kwargs = {"device": "cuda", "dtype": "float32", "max_tokens": 512, "memo_mb": 0}
    ahead = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", **kwargs)
    serial = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", overlap=False, **kwargs)
    got, expected = ahead.encode(TEXTS), serial.encode(TEXTS)
    assert ahead.last_stats.prepared_ahead == ahead.last_stats.batches - 1 > 1
    np.testing.assert_array_equal(got, expected)


def test_pinned_non_blocking_copy_gives_the_array():
    array = np.arange(4096 * 3, dtype=np.int64).reshape(3, 4096)
    tensor = to_device(array, "cuda")
    assert tensor.is_cuda
    np.testing.assert_array_equal(tensor.cpu().numpy(), array)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_selects_sdpa_or_flash_attention(tiny_bert, tiny_bi_encoder, dtype):
    expected = "flash_attention_2" if flash_attn_available() and dtype != "float32" else "sdpa"
    rr = winnow.load_reranker(tiny_bert, device="cuda", dtype=dtype)
    rr.load()
    assert attention_implementation(rr.model) == expected
    # the first-token last layer still passes its self-check with that attention
    assert type(_encoder_layers(rr.model)[-1]).__name__ == "FirstTokenLayer"
    bi = winnow.load_reranker(tiny_bi_encoder, "bi-encoder", device="cuda", dtype=dtype)
    bi.load()
    assert attention_implementation(bi.model.model) == expected
