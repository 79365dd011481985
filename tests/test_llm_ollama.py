"""LLM rerankers against an Ollama stand-in server on 127.0.0.1 (real HTTP, real socket)."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest

import winnow
from ollama_standin import OllamaStandin
from winnow.errors import WinnowError
from winnow.rerankers.llm.ollama import (
    OllamaClient,
    OllamaError,
    OllamaModelNotFound,
    score_from_answer,
)

MODEL = "tiny-reranker:latest"


def overlap(prompt: str) -> int:
    """The stand-in's notion of relevance: words shared by the <Query> and <Document> lines."""
    query = re.search(r"<Query>: (.*)\n", prompt).group(1).split()
    doc = re.search(r"<Document>: (.*?)<\|im_end\|>", prompt, re.S).group(1).split()
    return len(set(query) & set(doc))


def yes_no_logprobs(prompt: str) -> list[tuple[str, float]]:
    k = overlap(prompt)
    yes, no = -1.0 / (1 + k), -0.5 * k - 0.25
    return sorted([("yes", yes), ("no", no), ("maybe", -5.0)], key=lambda t: -t[1])


PAIRS = [
    ("lift on a wing", "the wing gives lift"),
    ("lift on a wing", "bread"),
    ("heat transfer", "heat transfer in a heat pipe"),
]


def expected(pairs):
    out = []
    for q, d in pairs:
        k = len(set(q.split()) & set(d.split()))
        out.append(-1.0 / (1 + k) - (-0.5 * k - 0.25))
    return np.array(out, dtype=np.float32)


def load(url, kind="llm-pointwise", model=MODEL, **options):
    return winnow.load_reranker(
        model, kind, device="cpu", backend="ollama", ollama_url=url, backoff=0.01, **options
    )


def test_pointwise_scores_from_logprobs(fresh_cache):
    with OllamaStandin([MODEL], generate=yes_no_logprobs) as server:
        r = load(server.url, concurrency=2)
        detailed = r.score_pairs_detailed(PAIRS)
        np.testing.assert_allclose(detailed.scores, expected(PAIRS), atol=1e-6)
        assert (detailed.num_tokens > 0).all() and not detailed.truncated.any()
        ranked = r.rank("lift on a wing", ["bread", "the wing gives lift"])
        assert ranked[0].index == 1
        bodies = [b for path, b in server.requests if path == "/api/generate"]
        assert all(b["stream"] is False and b["raw"] is True for b in bodies)
        assert all(b["keep_alive"] == "10m" and b["logprobs"] is True for b in bodies)
        assert all(b["options"]["num_predict"] == 1 for b in bodies)
        # Requests run concurrently and length-sorted, so compare the prompts as a set, not by position.
        sent = {b["prompt"] for b in bodies}
        rendered = [r.template.render(q, d) for q, d in PAIRS]
        assert set(rendered) <= sent and len(set(rendered)) == len(PAIRS)
        assert server.requests[0][0] == "/api/tags"  # checked the model exists first


def test_pointwise_without_logprobs_parses_the_answer(fresh_cache):
    answers = {"the wing gives lift": "Yes.", "bread": "no", "x": "0.75", "y": "perhaps"}

    def generate(prompt):
        doc = re.search(r"<Document>: (.*?)<\|im_end\|>", prompt, re.S).group(1)
        return [(answers[doc], -0.1)]

    with OllamaStandin([MODEL], generate=generate, logprobs=False) as server:
        r = load(server.url)
        scores = r.score_pairs([("q", d) for d in answers])
        assert scores.tolist() == [1.0, -1.0, 0.75, 0.0]


def test_duplicate_prompts_sent_once_and_concurrency_bounded(fresh_cache):
    with OllamaStandin([MODEL], generate=yes_no_logprobs, delay=0.02) as server:
        r = load(server.url, concurrency=3)
        pairs = [("lift", f"doc {i} lift") for i in range(12)] + [("lift", "doc 0 lift")]
        scores = r.score_pairs(pairs)
        assert scores[0] == scores[-1]
        generated = [p for p, _ in server.requests if p == "/api/generate"]
        assert len(generated) == 12
        assert 1 <= server.max_in_flight <= 3


def test_missing_model_is_a_clear_error(fresh_cache):
    with OllamaStandin(["other:latest"]) as server:
        r = load(server.url, model="absent-model")
        with pytest.raises(OllamaModelNotFound, match="ollama pull absent-model") as info:
            r.score_pairs(PAIRS)
        assert "other:latest" in str(info.value)
        client = OllamaClient("absent-model", url=server.url)
        with pytest.raises(OllamaModelNotFound, match="not found"):
            client.generate("hi")  # the server's own 404 body is quoted


def test_bare_model_name_matches_latest_tag(fresh_cache):
    with OllamaStandin([MODEL], generate=yes_no_logprobs) as server:
        r = load(server.url, model="tiny-reranker")
        assert r.score_pairs(PAIRS[:1]).shape == (1,)


def test_unreachable_server(fresh_cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    r = load(f"http://127.0.0.1:{port}", max_retries=1, timeout=2.0)
    with pytest.raises(OllamaError, match="cannot reach the Ollama server") as info:
        r.score_pairs(PAIRS)
    assert isinstance(info.value, WinnowError) and "2 attempts" in str(info.value)


def test_retries_5xx_then_succeeds_or_gives_up():
    with OllamaStandin([MODEL], generate=yes_no_logprobs) as server:
        client = OllamaClient(MODEL, url=server.url, max_retries=2, backoff=0.01)
        server.fail_next = 2
        answer = client.generate("<Query>: a\n<Document>: a<|im_end|>")
        assert answer["response"] == "yes" and client.retries == 2
        server.fail_next = 3
        with pytest.raises(OllamaError, match="503"):
            client.generate("<Query>: a\n<Document>: a<|im_end|>")


def test_score_from_answer_missing_tokens_use_the_floor():
    answer = {
        "logprobs": [
            {
                "token": "yes",
                "logprob": -0.2,
                "top_logprobs": [
                    {"token": "yes", "logprob": -0.2},
                    {"token": " maybe", "logprob": -3.0},
                ],
            }
        ]
    }
    assert score_from_answer(answer, "yes", "no") == pytest.approx(-0.2 + 3.0)
    assert score_from_answer(answer, "yes", None) == pytest.approx(-0.2)


def ranked_answer(messages):
    """Order the shown passages by their number of 'lift' words: a deterministic 'LLM'."""
    passages = re.findall(r"^\[(\w+)\] (.*)$", messages[-1]["content"], re.M)
    order = sorted(range(len(passages)), key=lambda i: -passages[i][1].count("lift"))
    return " > ".join(f"[{passages[i][0]}]" for i in order)


def test_listwise_over_ollama(fresh_cache):
    docs = ["bread", "lift lift", "lift", "lift lift lift", "drag"]
    with OllamaStandin([MODEL], chat=ranked_answer) as server:
        r = load(server.url, kind="llm-listwise", window=20)
        ranked = r.rank("lift", docs)
        assert [x.index for x in ranked] == [3, 1, 2, 0, 4]
        chats = [b for p, b in server.requests if p == "/api/chat"]
        assert len(chats) == 1 and chats[0]["stream"] is False
        assert chats[0]["messages"][0]["role"] == "system"


def test_listwise_first_mode_over_ollama(fresh_cache):
    def logprobs(messages):
        assert messages[-1] == {"role": "assistant", "content": "["}  # the answer is prefilled
        passages = re.findall(r"^\[(\w+)\] (.*)$", messages[-2]["content"], re.M)
        return sorted(
            ((label, -1.0 / (1 + text.count("lift"))) for label, text in passages),
            key=lambda t: -t[1],
        )

    docs = ["bread", "lift lift", "lift", "lift lift lift", "drag"]
    with OllamaStandin([MODEL], chat_logprobs=logprobs) as server:
        r = load(server.url, kind="llm-listwise", window=20, mode="first")
        assert [x.index for x in r.rank("lift", docs)] == [3, 1, 2, 0, 4]
    with OllamaStandin([MODEL], chat_logprobs=logprobs, logprobs=False) as server:
        r = load(server.url, kind="llm-listwise", window=20, mode="first", top_k=99)
        with pytest.raises(OllamaError, match="logprobs"):
            r.rank("lift", docs)


def test_max_length_becomes_num_ctx(fresh_cache):
    with OllamaStandin([MODEL], generate=yes_no_logprobs) as server:
        r = load(server.url, max_length=2048)
        r.score_pairs(PAIRS[:1])
        body = next(b for p, b in server.requests if p == "/api/generate")
        assert body["options"]["num_ctx"] == 2048


def test_ollama_model_names_with_slashes_are_not_paths(fresh_cache):
    name = "hf.co/someone/tiny-reranker:Q4"
    with OllamaStandin([name], generate=yes_no_logprobs) as server:
        r = load(server.url, model=name)
        assert r.config.model == name
        assert np.isfinite(r.score_pairs(PAIRS[:2])).all()
    with pytest.raises(winnow.ConfigError, match="needs kind="):
        winnow.load_reranker(name, backend="ollama")
