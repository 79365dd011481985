"""Listwise LLM reranker: sliding windows, parsing and cross-query batching with a scripted model.

The scripted backend is a deterministic stand-in for the LLM (it ranks the passages it is shown by
a relevance table the test chooses); the code under test is the window schedule, the parsing and
the batching, which run unchanged.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import winnow
from winnow.errors import ConfigError
from winnow.rerankers.base import RerankerConfig
from winnow.rerankers.llm.listwise import LLMListwiseReranker, window_spans
from winnow.rerankers.llm.parsing import parse_permutation
from winnow.rerankers.llm.prompts import listwise_messages

_LINE = re.compile(r"^\[(\w+)\] (.*)$", re.M)


def shown_passages(messages: list[dict]) -> list[str]:
    return [text for _, text in _LINE.findall(messages[-1]["content"])]


class ScriptedBackend:
    """Answers windows by a relevance table (or fixed answers); records every batch it gets."""

    def __init__(self, relevance: dict[str, float] | None = None, answers: list[str] | None = None):
        self.relevance = relevance or {}
        self.answers = list(answers or [])
        self.batch_sizes: list[int] = []
        self.windows: list[list[str]] = []

    def _order(self, messages):
        passages = shown_passages(messages)
        self.windows.append(passages)
        scores = [self.relevance.get(p, 0.0) for p in passages]
        return passages, sorted(range(len(passages)), key=lambda i: -scores[i])

    def generate_batch(self, messages, max_new_tokens):
        self.batch_sizes.append(len(messages))
        out = []
        for m in messages:
            _, order = self._order(m)
            if self.answers:
                out.append(self.answers.pop(0))
            else:
                out.append(" > ".join(f"[{i + 1}]" for i in order))
        return out

    def first_token_logits(self, messages, answer_prefix, labels):
        assert answer_prefix == "["
        self.batch_sizes.append(len(messages))
        out = []
        for m, labs in zip(messages, labels):
            passages, _ = self._order(m)
            assert len(labs) == len(passages)
            out.append(np.array([self.relevance.get(p, 0.0) for p in passages], np.float32))
        return out


def make(backend, **options) -> LLMListwiseReranker:
    config = RerankerConfig(
        model="scripted",
        kind="llm-listwise",
        device="cpu",
        dtype="float32",
        options=tuple(sorted(options.items())),
    )
    return LLMListwiseReranker(config, backend=backend)


DOCS = [f"p{i}" for i in range(5)]
RELEVANCE = {f"p{i}": float(i) for i in range(5)}  # p4 is best, p0 worst


def test_window_spans():
    assert window_spans(100, 20, 10) == [(80, 100), *[(e - 20, e) for e in range(90, 10, -10)]]
    assert window_spans(100, 20, 10)[-1] == (0, 20)
    assert window_spans(25, 20, 10) == [(5, 25), (0, 15)]
    assert window_spans(5, 20, 10) == [(0, 5)]
    assert window_spans(5, 3, 2) == [(2, 5), (0, 3)]
    assert window_spans(1, 3, 2) == [] and window_spans(0, 3, 2) == []


def test_one_pass_hand_computed():
    # order [0 1 2 3 4]; window (2,5) -> [0 1 4 3 2]; window (0,3) on [0 1 4] -> [4 1 0]
    backend = ScriptedBackend(RELEVANCE)
    r = make(backend, window=3, stride=2)
    ranked = r.rank("q", DOCS)
    assert [x.index for x in ranked] == [4, 1, 0, 3, 2]
    assert [x.score for x in ranked] == [5.0, 4.0, 3.0, 2.0, 1.0]
    assert backend.windows == [["p2", "p3", "p4"], ["p0", "p1", "p4"]]
    assert r.stats["windows"] == 2 and r.stats["parse_failures"] == 0
    assert r.score_type == "rank"


def test_two_passes_sort_further():
    # pass 2 on [4 1 0 3 2]: window (2,5) [0 3 2] -> [3 2 0]; window (0,3) [4 1 3] -> [4 3 1]
    r = make(ScriptedBackend(RELEVANCE), window=3, stride=2, passes=2)
    assert [x.index for x in r.rank("q", DOCS)] == [4, 3, 1, 2, 0]
    assert r.stats["windows"] == 4


def test_window_covering_everything_sorts_fully():
    r = make(ScriptedBackend(RELEVANCE), window=20, stride=10)
    assert [x.index for x in r.rank("q", DOCS)] == [4, 3, 2, 1, 0]


def test_top_k_only_reranks_the_head():
    docs = [f"p{i}" for i in range(6)]
    rel = {f"p{i}": float(i) for i in range(6)}
    r = make(ScriptedBackend(rel), window=20, top_k=4)
    # the first 4 are sorted among themselves; p4, p5 stay below in their order
    assert [x.index for x in r.rank("q", docs)] == [3, 2, 1, 0, 4, 5]


def test_parse_failures_leave_the_window_and_are_counted():
    backend = ScriptedBackend(answers=["I cannot rank these.", "[3] > [1]"])
    r = make(backend, window=3, stride=2)
    ranked = r.rank("q", DOCS)
    # window (2,5) unchanged; window (0,3): [3] > [1] then missing [2] -> [2 0 1]
    assert [x.index for x in ranked] == [2, 0, 1, 3, 4]
    assert r.stats["parse_failures"] == 1 and r.stats["windows"] == 2


@pytest.mark.parametrize(
    ("text", "count", "expected", "ok"),
    [
        ("[2] > [1] > [3]", 3, [1, 0, 2], True),
        ("[3] > [3] > [1]", 3, [2, 0, 1], True),  # duplicates dropped, [2] appended
        ("[9] > [0] > [2]", 3, [1, 0, 2], True),  # out of range ignored
        ("Sure! The ranking is [2] > [3]. Hope it helps", 4, [1, 2, 0, 3], True),
        ("2 > 1 > 3", 3, [1, 0, 2], True),  # bare numbers when nothing is bracketed
        ("[ 2 ]>[1]", 2, [1, 0], True),
        ("", 3, [0, 1, 2], False),
        ("none are relevant", 2, [0, 1], False),
        ("[7] > [8]", 2, [0, 1], False),
        ("3.5 stars", 3, [0, 1, 2], False),
    ],
)
def test_parse_permutation(text, count, expected, ok):
    assert parse_permutation(text, count) == (expected, ok)


def test_parse_letters():
    assert parse_permutation("[C] > [a] > [B]", 3, "letters") == ([2, 0, 1], True)
    assert parse_permutation("B > A", 3, "letters") == ([1, 0, 2], True)


def test_windows_of_different_queries_share_batches():
    backend = ScriptedBackend(RELEVANCE | {f"x{i}": float(-i) for i in range(3)})
    r = make(backend, window=3, stride=2)
    ranked = r.rank_many(["q0", "q1", "q2", "q3"], [DOCS, ["x0", "x1", "x2"], ["p1"], DOCS])
    # q0, q3: two windows each; q1: one; q2: none (a single document)
    assert backend.batch_sizes == [3, 2]
    assert r.stats["batches"] == 2 and r.stats["windows"] == 5
    assert [x.index for x in ranked[0]] == [4, 1, 0, 3, 2] == [x.index for x in ranked[3]]
    assert [x.index for x in ranked[1]] == [0, 1, 2]
    assert [(x.index, x.score) for x in ranked[2]] == [(0, 1.0)]


def test_score_pairs_groups_by_query():
    r = make(ScriptedBackend(RELEVANCE), window=20)
    pairs = [("a", "p0"), ("b", "p3"), ("a", "p2"), ("b", "p1"), ("a", "p4")]
    scores = r.score_pairs(pairs)
    # query a: p4 > p2 > p0 -> 3, 2, 1 ; query b: p3 > p1 -> 2, 1
    assert scores.tolist() == [1.0, 2.0, 2.0, 1.0, 3.0]
    assert r.score_pairs([]).shape == (0,)


def test_first_mode_orders_by_identifier_logits():
    backend = ScriptedBackend(RELEVANCE)
    r = make(backend, window=3, stride=2, mode="first")
    assert [x.index for x in r.rank("q", DOCS)] == [4, 1, 0, 3, 2]
    assert r.stats["windows"] == 2
    with pytest.raises(ConfigError, match="at most 26"):
        make(backend, window=30, mode="first")


def test_long_passages_cut_and_flagged():
    backend = ScriptedBackend(RELEVANCE)
    r = make(backend, window=20, max_passage_words=3)
    long = "wing " * 50
    ranked = r.rank("q", ["p1", long])
    flags = {x.index: (x.truncated, x.num_tokens) for x in ranked}
    assert flags == {0: (False, 1), 1: (True, 3)}
    assert backend.windows[0][1] == "wing wing wing"


def test_bad_options():
    for opts in ({"window": 1}, {"stride": 0}, {"stride": 30}, {"passes": 0}, {"mode": "x"}):
        with pytest.raises(ConfigError):
            make(None, **opts)


def test_prompt_lists_passages_with_identifiers():
    messages = listwise_messages("what is lift", ["a wing", "bread"])
    user = messages[-1]["content"]
    assert "[1] a wing\n[2] bread" in user and "what is lift" in user
    assert shown_passages(messages) == ["a wing", "bread"]


def test_backend_object_through_load_reranker(fresh_cache):
    backend = ScriptedBackend(RELEVANCE)
    r = winnow.load_reranker("scripted-model", "llm-listwise", device="cpu", backend=backend)
    assert [x.index for x in r.rank("q", DOCS)] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("mode", ["generate", "first"])
def test_hf_backend_runs_batched(tiny_llama, mode):
    """The real transformers path: batched left-padded generate / first-token logits on a tiny LM."""
    r = winnow.load_reranker(
        tiny_llama, "llm-listwise", device="cpu", window=3, stride=2, mode=mode, max_new_tokens=8
    )
    queries = ["what is lift", "heat transfer"]
    docs = [["lift wing", "bread", "heat flow", "drag", "jet"], ["plate", "shock", "heat"]]
    ranked = r.rank_many(queries, docs)
    for result, d in zip(ranked, docs):
        assert sorted(x.index for x in result) == list(range(len(d)))
        assert [x.score for x in result] == list(np.arange(len(d), 0, -1, dtype=float))
    assert r.stats["windows"] == 3 and r.stats["batches"] == 2
    if mode == "generate":  # a random model answers junk: the failures are counted, not fatal
        assert 0 <= r.stats["parse_failures"] <= 3
    # batch composition does not change first-mode logits: one query alone ranks the same
    if mode == "first":
        alone = winnow.load_reranker(
            tiny_llama,
            "llm-listwise",
            device="cpu",
            window=3,
            stride=2,
            mode=mode,
            passes=1,
            max_batch_size=1,
        )
        assert [x.index for x in alone.rank(queries[0], docs[0])] == [x.index for x in ranked[0]]


def test_hf_backend_batch_invariant_and_exact(tiny_qwen2):
    """Left-padded batches give what one unpadded prompt at a time gives, for both backend calls."""
    import torch
    from transformers import AutoModelForCausalLM

    r = winnow.load_reranker(tiny_qwen2, "llm-listwise", device="cpu", window=4).load()
    backend = r.backend
    messages = [
        listwise_messages("what is lift", ["lift wing", "bread", "heat flow"]),
        listwise_messages("heat", ["a plate", "shock wave on a cone surface", "heat", "jet"]),
        listwise_messages("drag", ["drag"] * 2),
    ]
    batched = backend.generate_batch(messages, 6)
    assert batched == [backend.generate_batch([m], 6)[0] for m in messages]

    labels = [["A", "B", "C"], ["A", "B", "C", "D"], ["A", "B"]]
    logits = backend.first_token_logits(messages, "[", labels)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2).eval()
    for m, labs, row in zip(messages, labels, logits):
        ids = backend._encode([backend.render(m, "[")])[0]
        with torch.no_grad():
            full = model(input_ids=torch.tensor([ids])).logits[0, -1]
        expected = full[backend.identifier_token_ids(labs)].numpy()
        np.testing.assert_allclose(row, expected, atol=1e-4)
