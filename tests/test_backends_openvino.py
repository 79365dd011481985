"""OpenVINO backend: the same ONNX export compiled by OpenVINO, exact float32 equal to torch, the
int8 guard run on OpenVINO itself, and the runtime's settings. Tiny models built locally; the real
all-MiniLM-L6-v2 check is marked slow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import winnow
from winnow.errors import MissingExtraError
from winnow.testing import sample_corpus

pytest.importorskip("openvino")

TEXTS = sample_corpus(48, seed=6)
PAIRS = [(f"query {i % 5} on {TEXTS[i][:20]}", TEXTS[(i * 5) % len(TEXTS)]) for i in range(40)]
LONG = " ".join(["shock wave boundary layer interaction at supersonic speed"] * 40)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return str(tmp_path_factory.mktemp("exports"))


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_bert_2labels", "tiny_xlmr"])
def test_exact_cross_encoder_equals_torch(fresh_cache, request, exports, model):
    path = request.getfixturevalue(model)
    pairs = [*PAIRS, ("long", LONG)]
    expected = winnow.load_reranker(path, "cross-encoder").score_pairs(pairs)
    ov = winnow.load_reranker(path, "cross-encoder", backend="openvino", export_dir=exports)
    np.testing.assert_allclose(ov.score_pairs(pairs), expected, atol=1e-4, rtol=0)
    assert ov.backend_info["backend"] == "openvino"


def test_openvino_compiles_the_onnx_export_it_shares_with_onnxruntime(
    fresh_cache, tiny_bert, exports
):
    pytest.importorskip("onnxruntime")
    ov = winnow.load_reranker(tiny_bert, "cross-encoder", backend="openvino", export_dir=exports)
    ort = winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", export_dir=exports)
    assert ov.backend_info["export"] == ort.backend_info["export"]  # one export, two runtimes
    np.testing.assert_allclose(ov.score_pairs(PAIRS), ort.score_pairs(PAIRS), atol=1e-5)


def test_exact_bi_encoder_equals_torch_with_dynamic_shapes(fresh_cache, tiny_bi_encoder, exports):
    texts = [*TEXTS, LONG, "x"]
    expected = winnow.load_reranker(tiny_bi_encoder, "bi-encoder").encode(texts)
    ov = winnow.load_reranker(
        tiny_bi_encoder, "bi-encoder", backend="openvino", export_dir=exports, max_tokens=256
    )
    emb = ov.encode(texts)
    assert ov.last_stats.batches > 1  # several batch and sequence shapes through one model
    assert (emb * expected).sum(1).min() >= 0.99999
    assert np.abs(emb - expected).max() < 1e-4


def test_runtime_settings_latency_hint_f32_and_threads(fresh_cache, tiny_bert, exports):
    import openvino as ov

    from winnow.rerankers.backends.openvino import compile_settings

    settings = compile_settings(1)
    assert settings == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    reranker = winnow.load_reranker(
        tiny_bert, "cross-encoder", backend="openvino", export_dir=exports, threads=1
    )
    folder = Path(reranker.backend_info["export"])
    compiled = ov.Core().compile_model(str(folder / "model.onnx"), "CPU", settings)
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.inputs[0].get_partial_shape().is_dynamic


def test_int8_guard_is_measured_on_openvino(fresh_cache, tiny_bert, tmp_path):
    int8 = winnow.load_reranker(
        tiny_bert,
        "cross-encoder",
        backend="openvino",
        dtype="int8",
        calibration=PAIRS,
        export_dir=str(tmp_path),
    )
    info = int8.backend_info
    report = info["guard"]
    assert report["backend"] == "openvino" and report["metric"] == "spearman"
    stored = next(Path(tmp_path).glob("*/int8-*/guard-openvino.json"))
    assert json.loads(stored.read_text())["value"] == report["value"]
    assert info["dtype_used"] == ("int8" if report["passed"] else "float32")
    scores = int8.score_pairs(PAIRS)
    assert scores.shape == (len(PAIRS),) and np.isfinite(scores).all()


def test_a_missing_openvino_names_its_extra(fresh_cache, tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'winnow\[openvino\]'"):
        winnow.load_reranker(tiny_bert, "cross-encoder", backend="openvino").load()


@pytest.mark.slow
def test_real_minilm_exact_on_openvino(fresh_cache, minilm_path, minilm_cross_encoder, tmp_path):
    texts = [*TEXTS, LONG]
    expected = winnow.load_reranker(minilm_path, "bi-encoder", memo_mb=0).encode(texts)
    emb = winnow.load_reranker(
        minilm_path, "bi-encoder", backend="openvino", export_dir=str(tmp_path), memo_mb=0
    ).encode(texts)
    assert (emb * expected).sum(1).min() >= 0.99999
    pairs = [*PAIRS, ("long", LONG)]
    a = winnow.load_reranker(minilm_cross_encoder, "cross-encoder").score_pairs(pairs)
    b = winnow.load_reranker(
        minilm_cross_encoder, "cross-encoder", backend="openvino", export_dir=str(tmp_path)
    ).score_pairs(pairs)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
