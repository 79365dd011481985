"""Model information (``winnow info``, ``Reranker.info()``) and memory figures (``health()``).

Expected values come from the models' own files (``AutoConfig``) and from the models loaded by
transformers / sentence-transformers directly, not through winnow.
"""

from __future__ import annotations

import json
import sys
import types

import pytest

import winnow
from ollama_standin import OllamaStandin
from winnow.cli import main
from winnow.rerankers.info import INFO_FIELDS, gpu_memory, imported_torch, process_memory

OLLAMA_MODEL = "tiny-reranker:latest"


def reference_parameters(path: str, kind: str) -> int:
    """Parameters of the model as its own library loads it."""
    if kind == "bi-encoder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, device="cpu")
    elif kind == "cross-encoder":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def reference_config(path: str):
    """The model's config.json (a sentence-transformers folder holds its transformer's)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


@pytest.fixture(
    params=[
        ("tiny_bert", "cross-encoder", "BertForSequenceClassification"),
        ("tiny_xlmr", "cross-encoder", "XLMRobertaForSequenceClassification"),
        ("tiny_bi_encoder", "bi-encoder", "BertModel"),
        ("tiny_llama", "llm-pointwise", "LlamaForCausalLM"),
        ("tiny_qwen2", "llm-listwise", "Qwen2ForCausalLM"),
    ],
    ids=lambda p: f"{p[1]}-{p[0]}",
)
def model(request):
    fixture, kind, architecture = request.param
    return request.getfixturevalue(fixture), kind, architecture


def test_winnow_info_json_matches_the_model_files(model, capsys):
    path, kind, architecture = model
    assert main(["info", path, "--kind", kind, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    config = reference_config(path)
    assert list(info) == list(INFO_FIELDS)
    assert info["architecture"] == architecture
    assert info["num_layers"] == config.num_hidden_layers == 2
    assert info["hidden_size"] == config.hidden_size == 32
    assert info["num_attention_heads"] == config.num_attention_heads
    assert info["vocab_size"] == config.vocab_size
    assert info["max_position_embeddings"] == config.max_position_embeddings
    assert info["parameters"] == reference_parameters(path, kind)
    assert info["model_bytes"] == 4 * info["parameters"]  # float32 on the CPU
    assert info["kind"] == kind and info["backend"] == "hf"
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["name"] == path and info["path"] == path
    assert info["max_length"] > 0


def test_winnow_info_prints_a_table(tiny_bert, capsys):
    assert main(["info", tiny_bert]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│|").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    assert rows["kind"] == "cross-encoder"  # inferred
    assert rows["num_layers"] == "2" and rows["hidden_size"] == "32"
    assert rows["architecture"] == "BertForSequenceClassification"
    assert rows["parameters"] == f"{reference_parameters(tiny_bert, 'cross-encoder'):,}"


def test_winnow_info_on_a_missing_model_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    assert main(["info", str(missing), "--kind", "cross-encoder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("winnow info: error:") and str(missing) in err


def test_info_keeps_the_name_the_user_gave(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, device="cpu")
    info = rr.info("my-alias")
    assert info["name"] == "my-alias" and info["path"] == tiny_bert


def test_int8_models_count_their_packed_weights(tiny_bert):
    """Dynamic quantisation moves Linear weights out of parameters(); they still count."""
    full = winnow.load_reranker(tiny_bert, device="cpu").info()
    int8 = winnow.load_reranker(tiny_bert, device="cpu", dtype="int8").info()
    assert int8["dtype"] == "int8"
    assert int8["parameters"] == full["parameters"]
    assert int8["model_bytes"] < full["model_bytes"]


class StandinWithShow(OllamaStandin):
    """The stand-in, answering ``POST /api/show`` as Ollama does (GGUF metadata in model_info)."""

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        if path != "/api/show":
            return super().answer(path, body)
        with self._lock:
            self.requests.append((path, body))
        if not self._known(body.get("model", "")):
            return 404, {"error": f"model '{body.get('model')}' not found"}
        return 200, {
            "details": {
                "format": "gguf",
                "family": "qwen3",
                "parameter_size": "751.63M",
                "quantization_level": "Q4_K_M",
            },
            "model_info": {
                "general.architecture": "qwen3",
                "general.parameter_count": 751632384,
                "qwen3.block_count": 28,
                "qwen3.embedding_length": 1024,
                "qwen3.attention.head_count": 16,
                "qwen3.context_length": 40960,
            },
        }


@pytest.mark.parametrize("kind", ["llm-pointwise", "llm-listwise"])
def test_ollama_info_is_what_the_server_reports(kind, fresh_cache, capsys):
    with StandinWithShow([OLLAMA_MODEL]) as server:
        args = ["info", OLLAMA_MODEL, "--kind", kind, "--backend", "ollama", "--json"]
        assert main([*args, "--ollama-url", server.url]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "ollama" and info["kind"] == kind
    assert info["architecture"] == "qwen3" and info["model_type"] == "gguf"
    assert (info["num_layers"], info["hidden_size"], info["num_attention_heads"]) == (28, 1024, 16)
    assert info["parameters"] == 751632384 and info["max_position_embeddings"] == 40960
    assert info["quantization"] == "Q4_K_M" and info["parameter_size"] == "751.63M"
    assert info["vocab_size"] is None and info["model_bytes"] is None  # not reported


class StandinWithOddShow(OllamaStandin):
    """A server whose ``/api/show`` answers with the wrong types in every field."""

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        if path != "/api/show":
            return super().answer(path, body)
        return 200, {
            "details": ["not", "an", "object"],
            "model_info": {
                "general.architecture": "llama",
                "general.parameter_count": True,
                "llama.block_count": "28",
                "llama.embedding_length": 1024.5,
                "llama.attention.head_count": 16,
            },
        }


def test_ollama_info_ignores_what_is_not_a_count(fresh_cache):
    with StandinWithOddShow([OLLAMA_MODEL]) as server:
        rr = winnow.load_reranker(
            OLLAMA_MODEL, "llm-pointwise", device="cpu", backend="ollama", ollama_url=server.url
        )
        info = rr.info()
    assert info["architecture"] == "llama" and info["num_attention_heads"] == 16
    assert info["parameters"] is None and info["num_layers"] is None
    assert info["hidden_size"] is None and info["quantization"] is None


def test_the_servers_model_facts_of_an_ollama_model(fresh_cache):
    """What /v1/models shows of an Ollama model (``winnow serve`` has no per-model options yet to
    name the backend, so the batcher is built here with the factory the server would use)."""
    import time

    from winnow.server.batcher import READY, Batcher
    from winnow.server.model_facts import ModelFacts

    with StandinWithShow([OLLAMA_MODEL]) as ollama:

        def factory():
            return winnow.load_reranker(
                OLLAMA_MODEL, "llm-pointwise", device="cpu", backend="ollama", ollama_url=ollama.url
            )

        batcher = Batcher("qwen", factory)
        batcher.start()
        try:
            deadline = time.monotonic() + 60
            while batcher.state != READY:
                assert batcher.state == "loading" and time.monotonic() < deadline, batcher.error
                time.sleep(0.02)
            facts = ModelFacts({"qwen": batcher}, {"qwen": OLLAMA_MODEL})
            details = facts.details("qwen")
            assert details["backend"] == "ollama" and details["num_layers"] == 28
            assert details["parameters"] == 751632384 and details["name"] == OLLAMA_MODEL
            assert facts.size("qwen") is None and facts.sizes() == {}  # no torch module here
            assert facts.details("qwen") == details
            assert [path for path, _ in ollama.requests].count("/api/show") == 1  # asked once
        finally:
            assert batcher.close(30)


def test_ollama_info_without_show_marks_fields_unknown(fresh_cache, capsys):
    with OllamaStandin([OLLAMA_MODEL]) as server:  # answers /api/show with 400
        args = ["info", OLLAMA_MODEL, "--kind", "llm-pointwise", "--backend", "ollama"]
        assert main([*args, "--ollama-url", server.url]) == 0
    out = capsys.readouterr().out
    assert "unknown" in out
    with OllamaStandin([OLLAMA_MODEL]) as server:
        rr = winnow.load_reranker(
            OLLAMA_MODEL, "llm-pointwise", device="cpu", backend="ollama", ollama_url=server.url
        )
        info = rr.info()
    assert info["backend"] == "ollama" and info["name"] == OLLAMA_MODEL
    assert info["num_layers"] is None and info["parameters"] is None
    assert rr.health()["parameters"] is None


# -- memory ------------------------------------------------------------------------------------
def test_health_reports_memory_on_the_cpu(tiny_bert, fresh_cache):
    """health() gave memory_in_use=None on the CPU; it is the process's resident memory there."""
    rr = winnow.load_reranker(tiny_bert, device="cpu")
    assert rr.health()["memory_in_use"] is None  # not loaded: nothing to say
    rr.load()
    health = rr.health()
    assert health["memory_in_use"] > 50 * 2**20  # torch and the model live in this process
    assert health["process_resident_bytes"] > 50 * 2**20
    assert health["parameters"] == reference_parameters(tiny_bert, "cross-encoder")
    assert health["model_bytes"] == 4 * health["parameters"]


def test_process_memory_is_read_from_the_standard_library():
    memory = process_memory()
    assert memory["peak_resident_bytes"] > 0
    if sys.platform.startswith("linux"):
        assert memory["peak_resident_bytes"] >= memory["resident_bytes"] > 0


def test_gpu_memory_is_there_exactly_when_cuda_is():
    import torch

    assert bool(gpu_memory()) == torch.cuda.is_available()


def test_torch_half_way_through_its_import_is_left_alone(monkeypatch):
    """/ready during model loading raised AttributeError: torch was in sys.modules, not finished."""
    spec = types.SimpleNamespace(name="torch", _initializing=True)
    half = types.ModuleType("torch")
    half.__spec__ = spec
    monkeypatch.setitem(sys.modules, "torch", half)
    assert imported_torch() is None
    assert gpu_memory() == {}


@pytest.mark.gpu
def test_gpu_memory_on_cuda(tiny_bert):
    rr = winnow.load_reranker(tiny_bert, device="cuda", dtype="float32")
    rr.score_pairs([("wing", "lift on a wing")])
    memory = gpu_memory()
    assert "cuda:0" in memory
    figures = memory["cuda:0"]
    assert figures["allocated_bytes"] >= rr.info()["model_bytes"]
    assert figures["reserved_bytes"] >= figures["allocated_bytes"]
    assert figures["peak_allocated_bytes"] >= figures["allocated_bytes"]
    assert rr.health()["memory_in_use"] == figures["allocated_bytes"]
