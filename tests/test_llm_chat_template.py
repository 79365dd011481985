"""llm-pointwise on instruct models (the tokenizer's chat template) and ``device_map`` (accelerate)."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError
from winnow.rerankers.llm.hf_backend import AccelerateMissingError
from winnow.rerankers.llm.prompts import CHAT_USER_TURN, QWEN3_INSTRUCTION
from winnow.rerankers.loading import load_spec

#: A Llama-3-style chat template (what Llama-3.x-Instruct ships, without tools and dates).
LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
PAIRS = [
    ("what is lift?", "lift is the force on a wing"),
    ("what is lift?", "bread and flour from the mill, ground fine"),
    ("heat transfer in a boundary layer", "the wing makes lift at a high angle of attack"),
]


@pytest.fixture(scope="module")
def chat_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama with a Llama-3-style chat template and its header tokens (an 'instruct' model)."""
    from transformers import AutoConfig, AutoTokenizer

    path = tmp_path_factory.mktemp("chat") / "tiny-llama-instruct"
    shutil.copytree(tiny_llama, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"additional_special_tokens": HEADER_TOKENS})
    assert len(tok) <= AutoConfig.from_pretrained(path).vocab_size  # ids the model can embed
    tok.chat_template = LLAMA3_CHAT
    tok.save_pretrained(path)
    return str(path)


def _reference_scores(path, pairs):
    """logit(yes) - logit(no) at the last position of apply_chat_template's prompt, pair by pair."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    yes, no = (tok.convert_tokens_to_ids(t) for t in ("yes", "no"))
    out = []
    for q, d in pairs:
        ids = _chat_ids(tok, q, d)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        out.append(float(logits[yes] - logits[no]))
    return np.array(out, dtype=np.float32)


def _chat_ids(tok, query, document):
    user = CHAT_USER_TURN.format(instruction=QWEN3_INSTRUCTION, query=query, document=document)
    text = tok.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def test_instruct_models_are_prompted_with_their_chat_template(fresh_cache, chat_llama):
    r = winnow.load_reranker(chat_llama, "llm-pointwise", device="cpu", dtype="float32").load()
    assert r.uses_chat_template
    seqs, _, truncated = r.encode_pairs(PAIRS)
    assert not truncated.any()
    for (q, d), seq in zip(PAIRS, seqs):
        expected = _chat_ids(r.tokenizer, q, d)
        assert seq == expected
        assert seq.count(r.tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    # the yes/no is read right after the opened assistant turn
    assistant = r.tokenizer("<|start_header_id|>assistant<|end_header_id|>\n\n")["input_ids"]
    assistant = [i for i in assistant if i != r.tokenizer.bos_token_id]
    assert seqs[0][-len(assistant) :] == assistant
    ours = r.score_pairs(PAIRS)
    np.testing.assert_allclose(ours, _reference_scores(chat_llama, PAIRS), atol=1e-4)


def test_a_given_template_wins_over_the_chat_template(fresh_cache, chat_llama):
    r = winnow.load_reranker(chat_llama, "llm-pointwise", device="cpu", template="qwen3").load()
    assert not r.uses_chat_template
    assert r.template.prefix.startswith("<|im_start|>system")
    assert r.prefix_ids[0] == r.tokenizer.bos_token_id  # the tokenizer's own BOS, as before
    spec = load_spec(f"llm:{chat_llama}?template=chat&instruction=Is it about wings?").load()
    assert spec.uses_chat_template
    user = CHAT_USER_TURN.format(instruction="Is it about wings?", query="q", document="d")
    assert spec.template.render("q", "d").endswith(_chat_text_after_bos(spec.tokenizer, user))


def _chat_text_after_bos(tok, user):
    return tok.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )[len(tok.bos_token) :]


def test_chat_template_on_a_tokenizer_without_one_is_an_error(fresh_cache, tiny_llama):
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", template="chat")
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        r.load()
    with pytest.raises(ConfigError, match="template='chat' needs the tokenizer"):
        winnow.load_reranker("qwen3:0.6b", "llm-pointwise", backend="ollama", template="chat")


def test_device_map_reaches_from_pretrained(fresh_cache, tiny_llama, monkeypatch):
    """There is one device here, so accelerate has nothing to spread; what is checked is that the
    option is accepted, reaches transformers' from_pretrained (which checks it) and scores the same.
    """
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained.__func__
    seen = []

    def recording(cls, path, **kwargs):  # the real loader, with its arguments written down
        seen.append(kwargs.get("device_map"))
        return real(cls, path, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    plain = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", dtype="float32").load()
    mapped = load_spec(f"llm:{tiny_llama}?device_map=auto&dtype=float32&device=cpu").load()
    assert seen == [None, "auto"]
    assert mapped.options.device_map == "auto"
    assert mapped.model is not plain.model  # a separate cache entry
    np.testing.assert_allclose(mapped.score_pairs(PAIRS), plain.score_pairs(PAIRS), atol=1e-5)
    listwise = winnow.load_reranker(
        tiny_llama, "llm-listwise", device="cpu", dtype="float32", device_map="auto", window=3
    ).load()
    assert listwise.backend.model is mapped.model  # pointwise and listwise share the weights
    bad = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", device_map="nonsense")
    with pytest.raises(ConfigError, match="device_map='nonsense' was refused by transformers"):
        bad.load()


def test_device_map_without_accelerate_names_the_pip_command(fresh_cache, tiny_llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", device="cpu", device_map="auto")
    with pytest.raises(AccelerateMissingError, match="pip install accelerate") as info:
        r.load()
    assert isinstance(info.value, ImportError)


def test_device_map_is_validated(fresh_cache, tiny_llama):
    with pytest.raises(ConfigError, match="device_map must be a string or none, got 0"):
        winnow.load_reranker(tiny_llama, "llm-pointwise", device_map=0)
    with pytest.raises(ConfigError, match="device_map is an option of backend='hf'"):
        winnow.load_reranker("qwen3:0.6b", "llm-pointwise", backend="ollama", device_map="auto")
    r = winnow.load_reranker(tiny_llama, "llm-pointwise", dtype="int8", device_map="auto")
    with pytest.raises(ConfigError, match="cannot be combined with dtype='int8'"):
        r.load()


def test_rerank_cache_key_holds_the_prompt_chosen_at_load(chat_llama, tiny_llama):
    """Scores cached with one prompt are never served for another: the prompt that llm-pointwise
    picks from the tokenizer at load time is part of the rescoring stages' cache key."""
    from winnow.pipeline.rerank import reranker_identity

    instruct = winnow.load_reranker(chat_llama, "llm-pointwise")
    plain = winnow.load_reranker(tiny_llama, "llm-pointwise")
    instruct_key, plain_key = reranker_identity(instruct), reranker_identity(plain)
    assert instruct.uses_chat_template and not plain.uses_chat_template
    # the chosen prompt is in the key, not only the (unset) template option
    assert instruct_key[-1][0] == "prompt" and plain_key[-1][0] == "prompt"
    assert "<|start_header_id|>" in "".join(instruct_key[-1][1])
    assert "<|start_header_id|>" not in "".join(plain_key[-1][1])
    # the same choice made explicitly gives the same prompt part of the key
    explicit = winnow.load_reranker(tiny_llama, "llm-pointwise", template="qwen3")
    assert reranker_identity(explicit)[-1] == plain_key[-1]
