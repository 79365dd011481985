"""The bi-encoder on winnow's engine: embeddings equal SentenceTransformer.encode for every module stack
it reproduces (each pooling mode, Dense, lowercasing, prompts left out of pooling), and a stack it cannot
reproduce goes through SentenceTransformer.encode with one log line."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import winnow
from winnow.testing import build_tiny_bi_encoder, sample_corpus

BASE = sample_corpus(30, seed=7)
#: duplicates, an empty string, texts far longer than the 32-token limit, capitals
TEXTS = [
    *BASE[:12],
    BASE[3],
    "",
    BASE[0],
    " ".join(BASE[12:24]),
    "Wing LIFT at High Mach Number",
    " ".join(BASE),
    BASE[5],
]
MAX_LENGTH = 32


def _variant(models_dir, name: str, **kwargs) -> str:
    path = models_dir / f"bi-{name}"
    if not (path / "modules.json").is_file():
        build_tiny_bi_encoder(path, max_length=MAX_LENGTH, seed=3, **kwargs)
    return str(path)


def _compare(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(smallest cosine per text, largest absolute difference) of two row-normalised matrices."""
    assert ours.shape == reference.shape and ours.dtype == np.float32
    cosine = (ours * reference).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return float(cosine.min()), float(np.abs(ours - reference).max())


def _reference(path: str, texts: list[str], **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    return model.encode(texts, normalize_embeddings=True, batch_size=7, **kwargs)


@pytest.mark.parametrize(
    "pooling", ["mean", "cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
)
def test_engine_equals_sentence_transformers_for_each_pooling_mode(models_dir, pooling):
    path = _variant(models_dir, pooling, pooling=pooling)
    encoder = winnow.load_reranker(path, kind="bi-encoder", max_tokens=96, memo_mb=0)
    assert encoder.uses_engine
    assert encoder.embedding_identity()["pooling"] == [pooling]
    ours = encoder.encode(TEXTS)
    cosine, diff = _compare(ours, _reference(path, TEXTS))
    print(f"{pooling}: cosine min {cosine:.7f}, max |diff| {diff:.2e}")
    assert cosine >= 0.99999 and diff < 1e-5
    # duplicates come back identical, in the caller's order; batches were token-budgeted
    np.testing.assert_array_equal(ours[12], ours[3])
    np.testing.assert_array_equal(ours[14], ours[0])
    assert encoder.last_stats.batches > 1 and encoder.last_stats.items == len(set(TEXTS))


def test_engine_reproduces_concatenated_pooling_dense_head_and_lowercasing(models_dir):
    path = _variant(
        models_dir,
        "cls-mean-dense-lower",
        pooling=("cls", "mean"),
        dense_dim=24,
        do_lower_case=True,
    )
    encoder = winnow.load_reranker(path, kind="bi-encoder", memo_mb=0)
    assert encoder.uses_engine and encoder.dimension == 24
    ours = encoder.encode(TEXTS)
    cosine, diff = _compare(ours, _reference(path, TEXTS))
    assert cosine >= 0.99999 and diff < 1e-5
    # the tokenizer itself is case-sensitive: the model's do_lower_case is what makes these equal
    lower, upper = encoder.encode(
        ["wing lift at high mach number", "Wing LIFT at High Mach Number"]
    )
    np.testing.assert_allclose(lower, upper, atol=1e-6)


def test_prompt_tokens_are_left_out_of_pooling_when_the_model_says_so(models_dir):
    """Regression: the prompt used to be glued to the text, so include_prompt=False was ignored."""
    path = _variant(models_dir, "no-prompt", include_prompt=False)
    prompt = "query: "
    for encoder_kind in ("winnow", "sentence-transformers"):
        encoder = winnow.load_reranker(
            path, kind="bi-encoder", query_prompt=prompt, encoder=encoder_kind, memo_mb=0
        )
        ours = encoder.encode_queries(TEXTS)
        reference = _reference(path, TEXTS, prompt=prompt)
        cosine, diff = _compare(ours, reference)
        assert cosine >= 0.99999 and diff < 1e-5, encoder_kind
        glued = _reference(path, [prompt + t for t in TEXTS])  # prompt pooled with the text
        assert _compare(ours, glued)[0] < 0.9999, encoder_kind


def test_unreproducible_stack_falls_back_to_sentence_transformers_with_one_log_line(
    models_dir, caplog, fresh_cache
):
    path = _variant(models_dir, "layer-norm", layer_norm=True)
    with caplog.at_level(logging.INFO, logger="winnow.rerankers.bi_encoder"):
        encoder = winnow.load_reranker(path, kind="bi-encoder", memo_mb=0)
        ours = encoder.encode(TEXTS)
    lines = [r.getMessage() for r in caplog.records if r.name == "winnow.rerankers.bi_encoder"]
    assert len(lines) == 1 and "LayerNorm is not reproduced" in lines[0], lines
    assert "SentenceTransformer.encode" in lines[0]
    assert not encoder.uses_engine
    assert encoder.embedding_identity()["engine"] == "sentence-transformers"
    cosine, diff = _compare(ours, _reference(path, TEXTS))
    assert cosine >= 0.99999 and diff < 1e-5


def test_both_encoders_agree_and_the_choice_is_checked(tiny_bi_encoder):
    engine = winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", memo_mb=0)
    st = winnow.load_reranker(
        tiny_bi_encoder, kind="bi-encoder", encoder="sentence-transformers", memo_mb=0
    )
    assert engine.uses_engine and not st.uses_engine
    assert engine.embedding_identity() != st.embedding_identity()
    cosine, diff = _compare(engine.encode(TEXTS), st.encode(TEXTS))
    assert cosine >= 0.99999 and diff < 1e-5
    np.testing.assert_array_equal(engine.token_lengths(TEXTS), st.token_lengths(TEXTS))
    assert engine.max_length == st.max_length == 128
    with pytest.raises(winnow.ConfigError, match="encoder must be one of winnow, sentence-tr"):
        winnow.load_reranker(tiny_bi_encoder, kind="bi-encoder", encoder="onnx").load()


def _write(folder, name: str, data) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))


def test_read_stack_names_what_it_cannot_reproduce(tmp_path):
    from winnow.rerankers._st_stack import UnsupportedStack, read_stack

    with pytest.raises(UnsupportedStack, match=r"no modules\.json"):
        read_stack(tmp_path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    _write(tmp_path, "modules.json", modules)
    _write(tmp_path, "sentence_bert_config.json", {"max_seq_length": 64, "do_lower_case": True})
    _write(tmp_path, "1_Pooling/config.json", {"pooling_mode_cls_token": True})  # legacy format
    stack = read_stack(tmp_path)
    assert (stack.max_seq_length, stack.do_lower_case, stack.pooling) == (64, True, ("cls",))
    _write(tmp_path, "1_Pooling/config.json", {"pooling_mode": "median"})
    with pytest.raises(UnsupportedStack, match=r"1_Pooling.config\.json: pooling mode 'median'"):
        read_stack(tmp_path)
    _write(tmp_path, "1_Pooling/config.json", {"pooling_mode": "mean"})
    _write(tmp_path, "sentence_bert_config.json", {"query_expansion": {"strategy": "fixed"}})
    with pytest.raises(UnsupportedStack, match="Transformer query_expansion"):
        read_stack(tmp_path)
    _write(tmp_path, "sentence_bert_config.json", {"max_seq_length": 64})
    modules.append({"idx": 2, "path": "2_X", "type": "sentence_transformers.models.WordWeights"})
    _write(tmp_path, "modules.json", modules)
    with pytest.raises(UnsupportedStack, match="module WordWeights is not reproduced"):
        read_stack(tmp_path)
    modules[2] = {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    _write(tmp_path, "modules.json", modules)
    _write(tmp_path, "2_Dense/config.json", {"in_features": 32, "out_features": 8})
    with pytest.raises(UnsupportedStack, match="Dense weights"):
        read_stack(tmp_path)


@pytest.mark.slow
def test_real_minilm_engine_equals_sentence_transformers(minilm_path):
    """all-MiniLM-L6-v2 (max length 256): per-text cosine >= 0.99999 against the reference."""
    texts = [*TEXTS, " ".join(sample_corpus(80, seed=2))]
    encoder = winnow.load_reranker(minilm_path, kind="bi-encoder", memo_mb=0)
    assert encoder.uses_engine and encoder.max_length == 256
    cosine, diff = _compare(encoder.encode(texts), _reference(minilm_path, texts))
    print(f"all-MiniLM-L6-v2: cosine min {cosine:.7f}, max |diff| {diff:.2e}")
    assert cosine >= 0.99999 and diff < 1e-5
