"""ONNX Runtime backend: exact float32 equal to torch, guarded static int8, exports cached by content,
cache keys that tell the backends apart, and clear errors. Tiny models built locally; the real
all-MiniLM-L6-v2 checks are marked slow."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError, DatasetError, MissingExtraError, ModelLoadError
from winnow.rerankers.backends import guard
from winnow.rerankers.backends.calibration import calibration_sample
from winnow.rerankers.backends.export import ensure_onnx
from winnow.rerankers.loading import load_spec
from winnow.testing import sample_corpus

pytest.importorskip("onnxruntime")

TEXTS = sample_corpus(48, seed=5)
PAIRS = [(f"query {i % 5} about {TEXTS[i][:20]}", TEXTS[(i * 7) % len(TEXTS)]) for i in range(40)]
LONG = " ".join(["boundary layer separation on the wing at high angle of attack"] * 40)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export folder for the exactness tests of this module (each model exported once)."""
    return str(tmp_path_factory.mktemp("exports"))


def export_folders(root) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_bert_2labels", "tiny_xlmr"])
def test_exact_cross_encoder_equals_torch(fresh_cache, request, exports, model):
    path = request.getfixturevalue(model)
    pairs = [*PAIRS, ("long", LONG), ("dup", "same"), ("dup", "same")]
    torch_scores = winnow.load_reranker(path, "cross-encoder").score_pairs(pairs)
    onnx = winnow.load_reranker(path, "cross-encoder", backend="onnx", export_dir=exports)
    scores = onnx.score_pairs(pairs)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, torch_scores, atol=1e-4, rtol=0)
    info = onnx.backend_info
    assert (info["backend"], info["dtype"], info["dtype_used"]) == ("onnx", "float32", "float32")
    # the export kept the first-token-only last layer (the BERT/XLM-R heads read token 0 only)
    meta = json.loads((Path(info["export"]) / "export.json").read_text())
    assert meta["options"]["first_token_only"] is True


def test_first_token_graph_gives_the_full_graphs_scores(fresh_cache, tiny_bert, exports):
    fast = winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", export_dir=exports)
    full = winnow.load_reranker(
        tiny_bert, "cross-encoder", backend="onnx", export_dir=exports, first_token_only=False
    )
    assert fast.backend_info["export"] != full.backend_info["export"]
    np.testing.assert_allclose(fast.score_pairs(PAIRS), full.score_pairs(PAIRS), atol=1e-5)


def test_scores_do_not_depend_on_batching_or_order(fresh_cache, tiny_bert, exports):
    big = winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", export_dir=exports)
    small = winnow.load_reranker(
        tiny_bert, "cross-encoder", backend="onnx", export_dir=exports, max_tokens=64
    )
    a = big.score_pairs(PAIRS)
    b = small.score_pairs(PAIRS)
    assert small.last_stats.batches > big.last_stats.batches
    np.testing.assert_allclose(a, b, atol=1e-5)
    order = np.random.default_rng(0).permutation(len(PAIRS))
    np.testing.assert_allclose(big.score_pairs([PAIRS[i] for i in order]), a[order], atol=1e-5)
    assert big.score_pairs([]).shape == (0,)
    ranked = big.rank(PAIRS[0][0], [d for _, d in PAIRS[:5]])
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]


def test_exact_bi_encoder_equals_torch_and_sentence_transformers(
    fresh_cache, tiny_bi_encoder, exports
):
    from sentence_transformers import SentenceTransformer

    texts = [*TEXTS, LONG]
    torch_emb = winnow.load_reranker(tiny_bi_encoder, "bi-encoder").encode(texts)
    onnx = winnow.load_reranker(
        tiny_bi_encoder, "bi-encoder", backend="onnx", export_dir=exports, max_tokens=256
    )
    emb = onnx.encode(texts)
    st = SentenceTransformer(tiny_bi_encoder, device="cpu").encode(texts, normalize_embeddings=True)
    for reference in (torch_emb, st):
        cos = (
            (emb * reference).sum(1)
            / np.linalg.norm(emb, axis=1)
            / np.linalg.norm(reference, axis=1)
        )
        assert cos.min() >= 0.99999
        assert np.abs(emb - reference).max() < 1e-4
    assert onnx.last_stats.batches > 1  # driven by the token-budget engine
    assert onnx.backend_info["dtype_used"] == "float32"


def test_second_load_reuses_the_export_and_a_changed_model_makes_a_new_one(
    fresh_cache, tiny_bert, tmp_path
):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    root = tmp_path / "exports"
    first = winnow.load_reranker(str(model), "cross-encoder", backend="onnx", export_dir=str(root))
    before = first.score_pairs(PAIRS)
    folder = Path(first.backend_info["export"])
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    winnow.clear_cache()
    again = winnow.load_reranker(str(model), "cross-encoder", backend="onnx", export_dir=str(root))
    np.testing.assert_array_equal(again.score_pairs(PAIRS), before)
    assert export_folders(root) == [folder]
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp  # reused, not written again

    weights = load_file(model / "model.safetensors")
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name] = weights[name] * 2
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    winnow.clear_cache()
    changed = winnow.load_reranker(
        str(model), "cross-encoder", backend="onnx", export_dir=str(root)
    )
    after = changed.score_pairs(PAIRS)
    assert len(export_folders(root)) == 2
    assert Path(changed.backend_info["export"]) != folder
    torch_after = winnow.load_reranker(str(model), "cross-encoder").score_pairs(PAIRS)
    np.testing.assert_allclose(after, torch_after, atol=1e-4)
    assert not np.allclose(after, before)


def test_int8_is_calibrated_guarded_and_falls_back_to_exact(fresh_cache, tiny_bert, tmp_path):
    root = str(tmp_path)
    exact = winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", export_dir=root)
    int8 = winnow.load_reranker(
        tiny_bert,
        "cross-encoder",
        backend="onnx",
        dtype="int8",
        calibration=PAIRS,
        export_dir=root,
    )
    report = int8.backend_info["guard"]
    assert report["metric"] == "spearman" and report["threshold"] == 0.999
    assert report["held_out"] == 8 and report["calibrated_on"] == 32
    assert report["passed"] is (report["value"] >= 0.999)
    if not report["passed"]:  # the random tiny model: int8 reorders pairs, so exact is used
        assert int8.backend_info["dtype_used"] == "float32"
        np.testing.assert_allclose(int8.score_pairs(PAIRS), exact.score_pairs(PAIRS), atol=1e-6)
        with pytest.raises(ModelLoadError, match=r"fails its quality guard.*spearman"):
            winnow.load_reranker(
                tiny_bert,
                "cross-encoder",
                backend="onnx",
                dtype="int8",
                calibration=PAIRS,
                export_dir=root,
                guard="refuse",
            ).load()


def test_int8_that_passes_its_guard_is_used(fresh_cache, tiny_bi_encoder, tmp_path, monkeypatch):
    # a threshold the tiny random model meets, so the pass path runs on a real int8 file
    monkeypatch.setattr(guard, "MIN_COSINE", 0.9)
    enc = winnow.load_reranker(
        tiny_bi_encoder,
        "bi-encoder",
        backend="onnx",
        dtype="int8",
        calibration=TEXTS,
        export_dir=str(tmp_path),
        memo_mb=0,
    )
    info = enc.backend_info
    assert info["dtype_used"] == "int8" and info["guard"]["passed"]
    assert Path(info["export"]).name.startswith("int8-")
    assert (Path(info["export"]) / "guard-onnx.json").is_file()
    emb = enc.encode(TEXTS)
    exact = winnow.load_reranker(tiny_bi_encoder, "bi-encoder").encode(TEXTS)
    cos = (emb * exact).sum(1)
    assert cos.min() >= 0.9 and not np.allclose(emb, exact, atol=1e-6)  # really int8
    # a second load decides from the stored figures (no second quantisation)
    winnow.clear_cache()
    stamp = (Path(info["export"]) / "model-int8.onnx").stat().st_mtime_ns
    again = winnow.load_reranker(
        tiny_bi_encoder,
        "bi-encoder",
        backend="onnx",
        dtype="int8",
        calibration=TEXTS,
        export_dir=str(tmp_path),
        memo_mb=0,
    )
    np.testing.assert_array_equal(again.encode(TEXTS), emb)
    assert (Path(info["export"]) / "model-int8.onnx").stat().st_mtime_ns == stamp


def test_guard_figures_from_closed_forms():
    exact = np.array([0.1, 0.2, 0.3, 0.4])
    assert guard.compare("spearman", exact, exact * 3)["passed"]
    swapped = guard.compare("spearman", exact, np.array([0.2, 0.1, 0.3, 0.4]))
    assert swapped["value"] == pytest.approx(0.8) and not swapped["passed"]
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 1.0]])
    report = guard.compare("cosine", a, b)
    assert report["value"] == pytest.approx(2**-0.5) and not report["passed"]


def test_cache_keys_tell_backends_dtypes_and_samples_apart(fresh_cache, tiny_bi_encoder, tmp_path):
    from winnow.pipeline.rerank import reranker_identity
    from winnow.retrieval import DenseIndex
    from winnow.types import Document

    corpus = {str(i): Document(doc_id=str(i), text=t) for i, t in enumerate(TEXTS[:5])}
    other = [*TEXTS[1:], TEXTS[0]]
    variants = [
        {},
        {"backend": "onnx"},
        {"backend": "openvino"},
        {"backend": "onnx", "dtype": "int8", "calibration": TEXTS},
        {"backend": "onnx", "dtype": "int8", "calibration": other},
    ]
    dense_keys, rerank_keys = [], []
    for v in variants:
        index = DenseIndex(tiny_bi_encoder, cache_dir=str(tmp_path), **v)
        dense_keys.append(json.dumps(index.cache_key(corpus), sort_keys=True, default=str))
        rerank_keys.append(json.dumps(reranker_identity(index.encoder), default=str))
    assert len(set(dense_keys)) == len(variants)
    assert len(set(rerank_keys)) == len(variants)
    # a torch key made before backends existed is unchanged by them
    assert "backend" not in dense_keys[0]


def test_model_cache_keys_include_the_backend(fresh_cache, tiny_bert, exports):
    from winnow.rerankers.cache import MODELS

    winnow.load_reranker(tiny_bert, "cross-encoder").load()
    winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", export_dir=exports).load()
    keys = [k for k in MODELS if tiny_bert in k]
    assert len(keys) == 2 and any("onnx" in k for k in keys)


def test_calibration_from_a_jsonl_file_and_its_errors(tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps({"query": q, "document": d}) for q, d in PAIRS))
    sample = calibration_sample(str(good), pairs=True)
    assert sample == calibration_sample(PAIRS, pairs=True)  # same content, same sha256
    assert "sha256=" in repr(sample) and PAIRS[0][1] not in repr(sample)
    calib, held = sample.split()
    assert len(held) == 8 and len(calib) == 32 and held[0] == PAIRS[4]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "document": "d"}) + "\n" + '{"query": "q"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: a calibration pair is"):
        calibration_sample(str(bad), pairs=True)
    with pytest.raises(ConfigError, match="has 3 texts; int8 needs at least 10"):
        calibration_sample(["a", "b", "c"], pairs=False)
    with pytest.raises(ConfigError, match=r"calibration\[1\] must be a \(query, document\) pair"):
        calibration_sample([("q", "d"), "oops"] * 6, pairs=True)
    with pytest.raises(ConfigError, match="does not exist"):
        calibration_sample(str(tmp_path / "missing.jsonl"), pairs=False)


def test_spec_options_reach_the_backend(fresh_cache, tiny_bert, tiny_bi_encoder, tmp_path):
    from winnow.pipeline.retrieval import Dense
    from winnow.pipeline.spec import parse_system

    calib = tmp_path / "texts.jsonl"
    calib.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    rr = load_spec(f"cross-encoder:{tiny_bert}?backend=onnx&export_dir={tmp_path}")
    assert rr.backend_info["backend"] == "onnx"
    stage = parse_system(
        f"dense:{tiny_bi_encoder}?backend=onnx&dtype=int8&calibration={calib}&export_dir={tmp_path}"
    )
    assert isinstance(stage, Dense)
    assert stage.options["backend"] == "onnx" and stage.dtype == "int8"
    assert "backend=onnx" in stage.label and "dtype=int8" in stage.label
    # docs/retrieval.md's dense:MODEL?encoder=sentence-transformers (refused before backends)
    st = parse_system(f"dense:{tiny_bi_encoder}?encoder=sentence-transformers")
    assert st.options == {"encoder": "sentence-transformers"}
    with pytest.raises(ConfigError, match="backend='tensorrt' is not one of torch, onnx, openvino"):
        load_spec(f"cross-encoder:{tiny_bert}?backend=tensorrt").load()


def test_server_spec_takes_the_backend(tiny_bert):
    from winnow.server.config import ModelSpec

    spec = ModelSpec.parse(f"fast=cross-encoder:{tiny_bert}?backend=onnx&dtype=int8")
    assert dict(spec.options) == {"backend": "onnx", "dtype": "int8"}
    with pytest.raises(ConfigError, match=r"unknown option .backnd.*did you mean backend"):
        ModelSpec.parse(f"fast=cross-encoder:{tiny_bert}?backnd=onnx")


def test_bad_backend_settings_are_clear_errors(fresh_cache, tiny_bert, tiny_bi_encoder):
    with pytest.raises(ConfigError, match="backend='tensorrt' is not one of torch, onnx, openvino"):
        winnow.load_reranker(tiny_bert, "cross-encoder", backend="tensorrt").load()
    with pytest.raises(ConfigError, match="runs dtype float32 or int8, got dtype='bfloat16'"):
        winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", dtype="bfloat16").load()
    with pytest.raises(ConfigError, match=r"needs a sample of your own .query, document. pairs"):
        winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx", dtype="int8").load()
    with pytest.raises(ConfigError, match="needs a sample of your own texts"):
        winnow.load_reranker(tiny_bi_encoder, "bi-encoder", backend="onnx", dtype="int8").load()
    with pytest.raises(ConfigError, match="torch's dtype='int8' is dynamic and takes none"):
        winnow.load_reranker(tiny_bert, "cross-encoder", dtype="int8", calibration=PAIRS)
    with pytest.raises(ConfigError, match="encoder='sentence-transformers' runs torch only"):
        winnow.load_reranker(
            tiny_bi_encoder, "bi-encoder", backend="onnx", encoder="sentence-transformers"
        ).load()


def test_a_missing_runtime_names_its_extra(fresh_cache, tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'winnow\[onnx\]'"):
        winnow.load_reranker(tiny_bert, "cross-encoder", backend="onnx").load()


def test_an_export_failure_names_the_model_and_the_step(tmp_path):
    import torch

    class Broken(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            raise RuntimeError("this graph cannot be traced")

    example = {"input_ids": np.ones((1, 4), np.int64), "attention_mask": np.ones((1, 4), np.int64)}
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(
        ModelLoadError, match=r"ONNX export of 'my-model' failed \(torch.onnx.export\)"
    ):
        ensure_onnx(
            family="text-encoder",
            model_dir=str(model_dir),
            module_factory=Broken,
            input_names=("input_ids", "attention_mask"),
            example=example,
            options={},
            root=str(tmp_path / "exports"),
            name="my-model",
        )
    assert not (tmp_path / "exports").exists() or export_folders(tmp_path / "exports") == []


@pytest.mark.slow
def test_real_minilm_exact_on_onnx(fresh_cache, minilm_path, minilm_cross_encoder, tmp_path):
    texts = [*TEXTS, LONG]
    torch_emb = winnow.load_reranker(minilm_path, "bi-encoder", memo_mb=0).encode(texts)
    emb = winnow.load_reranker(
        minilm_path, "bi-encoder", backend="onnx", export_dir=str(tmp_path), memo_mb=0
    ).encode(texts)
    assert (emb * torch_emb).sum(1).min() >= 0.99999
    pairs = [*PAIRS, ("long", LONG)]
    a = winnow.load_reranker(minilm_cross_encoder, "cross-encoder").score_pairs(pairs)
    b = winnow.load_reranker(
        minilm_cross_encoder, "cross-encoder", backend="onnx", export_dir=str(tmp_path)
    ).score_pairs(pairs)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
