"""Pointwise LLM reranker on tiny random Llama / Qwen2 models, checked against plain transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import winnow
from winnow.errors import ConfigError, InputError
from winnow.rerankers.llm.prompts import pointwise_template

PAIRS = [
    ("what is lift?", "lift is the force on a wing in a flow"),
    ("heat transfer in a boundary layer", "the boundary layer of a flat plate " * 4),
    ("what is lift?", "bread and flour from the mill"),
    ("supersonic flow", "shock wave"),
    ("supersonic flow", "a"),
]


def reference_scores(path, template, pairs, true="yes", false="no"):
    """Full forward pass, one unpadded pair at a time, full-vocabulary logits at every position."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    yes = tok.convert_tokens_to_ids(true)
    no = tok.convert_tokens_to_ids(false) if false else None
    out = []
    for q, d in pairs:
        inputs = tok(template.render(q, d), return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1].float()
        out.append(float(logits[yes] - (logits[no] if no is not None else 0.0)))
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_scores_equal_plain_forward_pass(fixture, request, fresh_cache):
    path = request.getfixturevalue(fixture)
    reranker = winnow.load_reranker(path, "llm-pointwise", device="cpu", dtype="float32")
    scores = reranker.score_pairs(PAIRS)
    expected = reference_scores(path, reranker.template, PAIRS)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert scores.dtype == np.float32


def test_prompt_ids_equal_whole_prompt_tokenisation(tiny_llama, tiny_qwen2):
    for path in (tiny_llama, tiny_qwen2):
        reranker = winnow.load_reranker(path, "llm-pointwise", device="cpu").load()
        tok = AutoTokenizer.from_pretrained(path)
        seqs, lengths, truncated = reranker.encode_pairs(PAIRS)
        for (q, d), seq, n in zip(PAIRS, seqs, lengths):
            assert seq == tok(reranker.template.render(q, d))["input_ids"]
            assert n == len(seq)
        assert not truncated.any()


def test_batch_invariance(tiny_qwen2):
    big = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu")
    one = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", max_batch_size=1)
    small_budget = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", max_tokens=400)
    reference = one.score_pairs(PAIRS)
    np.testing.assert_allclose(big.score_pairs(PAIRS), reference, atol=1e-5)
    np.testing.assert_allclose(small_budget.score_pairs(PAIRS), reference, atol=1e-5)
    assert big.last_stats.batches == 1 and one.last_stats.batches == len(PAIRS)
    # A pair scores the same alone as inside any batch.
    for i, pair in enumerate(PAIRS):
        np.testing.assert_allclose(big.score_pairs([pair]), reference[i : i + 1], atol=1e-5)


def test_contract(tiny_llama):
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu")
    assert r.score_pairs([]).shape == (0,)
    one = r.score_pairs([PAIRS[0]])
    assert one.shape == (1,) and np.isfinite(one).all()
    dup = r.score_pairs([PAIRS[0], PAIRS[0], PAIRS[2]])
    assert dup[0] == dup[1]
    forward = r.score_pairs(PAIRS)
    backward = r.score_pairs(PAIRS[::-1])
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    ranked = r.rank("what is lift?", [d for _, d in PAIRS])
    assert [x.rank for x in ranked] == list(range(1, len(PAIRS) + 1))
    assert [x.score for x in ranked] == sorted((x.score for x in ranked), reverse=True)
    with pytest.raises(InputError):
        r.score_pairs([("q", 3)])
    with pytest.raises(InputError):
        r.score_pairs("not pairs")
    assert r.warmup() >= 0


def test_long_documents_are_truncated_to_fit(tiny_llama):
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", max_length=200)
    long_doc = "the pressure on the wing surface " * 400
    detailed = r.score_pairs_detailed([("what is lift?", long_doc), PAIRS[0]])
    assert detailed.truncated.tolist() == [True, False]
    assert detailed.num_tokens[0] == 200 and detailed.num_tokens[1] < 200
    assert np.isfinite(detailed.scores).all()
    # The cut prompt scores like the reference on the same (cut) token ids.
    seqs, _, _ = r.encode_pairs([("what is lift?", long_doc)])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seqs[0]])).logits[0, -1]
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    assert abs(float(logits[yes] - logits[no]) - float(detailed.scores[0])) < 1e-4
    # The prompt still ends with the template's suffix (the answer position is intact).
    suffix = r.suffix_ids
    assert seqs[0][-len(suffix) :] == suffix


def test_bge_gemma_preset_scores_yes_logit_with_bos(tiny_llama):
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", template="bge-gemma")
    assert r.template.true_token == "Yes" and r.template.false_token is None
    scores = r.score_pairs(PAIRS[:3])
    expected = reference_scores(tiny_llama, r.template, PAIRS[:3], true="Yes", false=None)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    seqs, _, _ = r.encode_pairs(PAIRS[:1])
    assert seqs[0][0] == AutoTokenizer.from_pretrained(tiny_llama).bos_token_id


def test_custom_template_instruction_and_tokens(tiny_qwen2):
    template = "Instruction: {instruction}\nQuery: {query}\nDocument: {document}\nRelevant:"
    r = winnow.load_reranker(
        tiny_qwen2,
        "llm-pointwise",
        device="cpu",
        template=template,
        instruction="judge it",
        true_token="true",
        false_token="false",
        activation="sigmoid",
    )
    scores = r.score_pairs(PAIRS[:2])
    assert r.template.prefix == "Instruction: judge it\nQuery:"
    raw = reference_scores(tiny_qwen2, r.template, PAIRS[:2], true="true", false="false")
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-raw)), atol=1e-5)


def test_bad_templates_and_tokens(tiny_qwen2):
    with pytest.raises(ConfigError, match="placeholders"):
        pointwise_template("just text")
    with pytest.raises(ConfigError, match="before"):
        pointwise_template("{document} then {query}")
    with pytest.raises(ConfigError, match="unknown placeholders"):
        pointwise_template("{query} {document} {other}")
    r = winnow.load_reranker(
        tiny_qwen2, "llm-pointwise", device="cpu", true_token="supersonic wave"
    )
    with pytest.raises(ConfigError, match="true_token"):
        r.load()
    with pytest.raises(ConfigError, match="backend"):
        winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", backend="vllm")


def test_model_loaded_once_for_pointwise_and_listwise(tiny_qwen2, fresh_cache):
    before = winnow.model_loads(tiny_qwen2)  # the build counter spans the whole process
    point = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu")
    point2 = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", max_length=300)
    listwise = winnow.load_reranker(tiny_qwen2, "llm-listwise", device="cpu", window=3, stride=2)
    point.score_pairs(PAIRS)
    point2.rank_many(["what is lift?", "heat"], [["a", "b"], ["c"]])
    listwise.rank("what is lift?", ["lift wing", "bread", "heat", "flow"])
    assert point.model is point2.model is listwise.backend.model
    assert winnow.model_loads(tiny_qwen2) - before == 1


def test_kind_inferred_and_spec(tiny_llama):
    from winnow.rerankers.hub import infer_kind
    from winnow.rerankers.registry import parse_model_spec

    assert infer_kind(tiny_llama) == "llm-pointwise"
    assert parse_model_spec(f"llm:{tiny_llama}") == ("llm-pointwise", tiny_llama)
    assert parse_model_spec("llm-listwise:qwen3:0.6b") == ("llm-listwise", "qwen3:0.6b")
    assert {"llm-pointwise", "llm-listwise"} <= set(winnow.available_kinds())


def test_cpu_bfloat16_close_to_float32(tiny_qwen2):
    fp32 = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", dtype="float32")
    bf16 = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", dtype="bfloat16")
    a, b = fp32.score_pairs(PAIRS), bf16.score_pairs(PAIRS)
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=0.15)


@pytest.mark.gpu
def test_cuda_bfloat16_matches_cpu_float32(tiny_qwen2):
    cpu = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", dtype="float32")
    gpu = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cuda", dtype="bfloat16")
    np.testing.assert_allclose(gpu.score_pairs(PAIRS), cpu.score_pairs(PAIRS), atol=0.15)
    one = winnow.load_reranker(
        tiny_qwen2, "llm-pointwise", device="cuda", dtype="bfloat16", max_batch_size=1
    )
    np.testing.assert_allclose(gpu.score_pairs(PAIRS), one.score_pairs(PAIRS), atol=0.05)


def test_cpu_int8_runs_and_ranks_like_float32(tiny_qwen2):
    fp32 = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", dtype="float32")
    int8 = winnow.load_reranker(tiny_qwen2, "llm-pointwise", device="cpu", dtype="int8")
    a, b = fp32.score_pairs(PAIRS), int8.score_pairs(PAIRS)
    assert np.isfinite(b).all()
    # int8 dynamic quantisation is lossy on a random tiny model; it must stay strongly correlated
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_concurrent_first_use_loads_once(tiny_llama, fresh_cache):
    from concurrent.futures import ThreadPoolExecutor

    before = winnow.model_loads(tiny_llama)

    def work(i: int):
        r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu")
        return r.score_pairs(PAIRS[i % 2 :])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(8)))
    assert winnow.model_loads(tiny_llama) - before == 1
    for i, scores in enumerate(results):
        np.testing.assert_allclose(scores, results[i % 2], atol=1e-5)
