"""Process-wide cache: one instance per key, weights loaded once (also under concurrent first use),
unload frees; kind inference; offline model resolution; `import winnow` stays light."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

import winnow
from winnow.errors import ConfigError, ModelLoadError
from winnow.rerankers.cache import MODELS
from winnow.rerankers.hub import infer_kind, resolve_model_path
from winnow.rerankers.registry import parse_model_spec


def test_same_arguments_same_instance(fresh_cache, tiny_bert):
    a = winnow.load_reranker(tiny_bert)
    b = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu", dtype="float32")
    assert a is b
    assert winnow.load_reranker(tiny_bert, max_length=64) is not a


def test_instances_differing_in_options_share_weights(fresh_cache, tiny_bert):
    loads = winnow.model_loads(tiny_bert)
    a = winnow.load_reranker(tiny_bert)
    b = winnow.load_reranker(tiny_bert, max_length=64, activation="sigmoid")
    a.score_pairs([("q", "d")])
    b.score_pairs([("q", "d")])
    assert a.model is b.model
    assert winnow.model_loads(tiny_bert) == loads + 1


def test_concurrent_first_use_loads_once(fresh_cache, tiny_xlmr):
    loads = winnow.model_loads(tiny_xlmr)
    barrier = threading.Barrier(8)
    got, errors = [], []

    def worker():
        try:
            barrier.wait()
            rr = winnow.load_reranker(tiny_xlmr)
            rr.score_pairs([("wing", "lift")])
            got.append(rr)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 8 and all(r is got[0] for r in got)
    assert winnow.model_loads(tiny_xlmr) == loads + 1


def test_unload_frees_and_next_use_reloads(fresh_cache, tiny_bert):
    loads = winnow.model_loads(tiny_bert)
    rr = winnow.load_reranker(tiny_bert)
    before = rr.score_pairs([("q", "d")])
    assert winnow.unload(tiny_bert) == 1
    assert not rr.loaded and rr.model is None
    assert not any(tiny_bert in k for k in MODELS)
    again = winnow.load_reranker(tiny_bert)
    assert again is not rr
    assert again.score_pairs([("q", "d")]) == pytest.approx(before)
    assert winnow.model_loads(tiny_bert) == loads + 2


def test_kind_inference(tiny_bert, tiny_bi_encoder, minilm_path):
    assert infer_kind(tiny_bert) == "cross-encoder"
    assert infer_kind(tiny_bi_encoder) == "bi-encoder"
    assert infer_kind(minilm_path) == "bi-encoder"
    assert winnow.load_reranker(tiny_bi_encoder).config.kind == "bi-encoder"


def test_kind_errors_list_valid_kinds(tmp_path, tiny_bert):
    with pytest.raises(ConfigError, match="cross-encoder"):
        winnow.load_reranker(tiny_bert, "colbert-v9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="pass kind="):
        winnow.load_reranker(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        winnow.load_reranker("./no/such/folder")


def test_hub_model_that_is_not_cached_says_so(monkeypatch, tmp_path):
    """Offline (or unreachable hub), an uncached hub id is a clear error, not 'cannot tell the kind'."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(
        ModelLoadError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE"
    ):
        infer_kind("winnow-tests/no-such-model")


def test_offline_copy_of_minilm(minilm_path):
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path
    assert resolve_model_path("org/some-model") == "org/some-model"  # hub ids pass through


def test_parse_model_spec():
    assert parse_model_spec("cross-encoder:BAAI/bge-reranker-v2-m3") == (
        "cross-encoder",
        "BAAI/bge-reranker-v2-m3",
    )
    assert parse_model_spec("rerank:org/m") == (None, "org/m")
    assert parse_model_spec("rerank:cross-encoder:org/m") == ("cross-encoder", "org/m")
    assert parse_model_spec("rerank:qwen3:4b") == (None, "qwen3:4b")  # an Ollama name:tag
    assert parse_model_spec("llm:/models/qwen") == ("llm-pointwise", "/models/qwen")
    assert parse_model_spec("org/m") == (None, "org/m")


def test_import_winnow_does_not_import_torch():
    code = "import sys, winnow; winnow.__version__; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
