"""Static int8 in a pipeline with no sample given: ``dense`` calibrates on the collection's own
documents and queries, ``rerank`` on the pairs it scores; seeded, so the same collection always
gives the same sample (and the same cache keys). Tiny models built locally."""

from __future__ import annotations

import pytest

from winnow.errors import ConfigError
from winnow.pipeline import Context
from winnow.pipeline.spec import parse_system
from winnow.rerankers.backends.calibration import (
    AUTO_ITEMS,
    HOLD_OUT_EVERY,
    needs_calibration,
    sample_from_pairs,
    sample_from_texts,
)
from winnow.testing import sample_corpus
from winnow.types import Dataset, Document

pytest.importorskip("onnxruntime")

TEXTS = sample_corpus(60, seed=11)
CORPUS = {f"d{i}": Document(f"d{i}", t, title=f"title {i}") for i, t in enumerate(TEXTS)}
QUERIES = {f"q{i}": f"{TEXTS[i * 3].split('.')[0][:40]} question {i}" for i in range(12)}


def dataset() -> Dataset:
    return Dataset("tiny", CORPUS, QUERIES, {"q0": {"d0": 1}})


def test_needs_calibration_only_for_static_int8_without_a_sample():
    assert needs_calibration("onnx", "int8", None)
    assert needs_calibration("openvino", "int8", None)
    assert not needs_calibration("onnx", "int8", ["given"])
    assert not needs_calibration("onnx", "float32", None)
    assert not needs_calibration("torch", "int8", None)  # torch's int8 is dynamic
    assert not needs_calibration(None, "int8", None)


def test_text_sample_is_seeded_mixed_and_sized():
    docs = [f"document number {i}" for i in range(2000)] + ["", "   "]
    queries = [f"query {i}" for i in range(300)]
    a = sample_from_texts(docs, queries, "the tiny collection")
    b = sample_from_texts(list(reversed(docs)), list(reversed(queries)), "elsewhere")
    assert a.digest == b.digest and a == b  # the input's order does not matter, only its content
    assert len(a.items) == AUTO_ITEMS and len(set(a.items)) == AUTO_ITEMS
    assert "" not in a.items and "   " not in a.items
    assert sum(t.startswith("query") for t in a.items) == AUTO_ITEMS // 4
    assert a.source == "the tiny collection"
    _, held = a.split()
    # the guard's held-out part has documents and queries both
    assert any(t.startswith("query") for t in held) and any(t.startswith("doc") for t in held)
    assert len(held) == AUTO_ITEMS // HOLD_OUT_EVERY
    other = sample_from_texts(docs[:-10], queries, "the tiny collection")
    assert other.digest != a.digest  # another corpus, another sample


def test_a_small_collection_is_used_whole_and_a_tiny_one_is_refused():
    small = sample_from_texts([f"doc {i}" for i in range(30)], ["q a", "q b"], "small")
    assert sorted(small.items) == sorted([f"doc {i}" for i in range(30)] + ["q a", "q b"])
    with pytest.raises(
        ConfigError, match=r"calibrates on 'x', which has 3 distinct texts.*at least 10"
    ):
        sample_from_texts(["a", "b", "a"], ["c"], "'x'")
    pairs = [("q", f"d{i}") for i in range(5)] * 3
    with pytest.raises(ConfigError, match=r"5 distinct .query, document. pairs.*calibration=PATH"):
        sample_from_pairs(pairs, "the pairs")


def test_pair_sample_is_seeded_and_distinct():
    pairs = [(f"q{i % 7}", f"doc {i}") for i in range(1500)] + [("q", " ")]
    a = sample_from_pairs(pairs, "here")
    assert a.pairs and len(a.items) == AUTO_ITEMS and len(set(a.items)) == AUTO_ITEMS
    assert ("q", " ") not in a.items
    assert sample_from_pairs(list(reversed(pairs)), "there").digest == a.digest


def test_dense_int8_in_a_pipeline_calibrates_on_the_collection(
    fresh_cache, tiny_bi_encoder, tmp_path
):
    stage = parse_system(f"dense:{tiny_bi_encoder}?backend=onnx&dtype=int8&export_dir={tmp_path}")
    ctx = Context(dataset())
    run = stage.transform(QUERIES, None, ctx)
    assert set(run) == set(QUERIES) and all(len(r) == len(CORPUS) for r in run.values())
    encoder = stage.retriever(ctx).encoder
    sample = encoder.config.option("calibration")
    expected = sample_from_texts(
        [d.full_text for d in CORPUS.values()], list(QUERIES.values()), "-"
    )
    assert sample.digest == expected.digest
    assert "'tiny'" in sample.source
    guard = encoder.backend_info["guard"]  # the guard ran on the held-out fifth of that sample
    assert guard["held_out"] == len(expected.split()[1])
    # the user's own sample still wins over the automatic one
    calib = tmp_path / "texts.jsonl"
    calib.write_text("\n".join(f'{{"text": "text {i}"}}' for i in range(20)))
    given = parse_system(
        f"dense:{tiny_bi_encoder}?backend=onnx&dtype=int8&calibration={calib}&export_dir={tmp_path}"
    )
    ctx2 = Context(dataset())
    given.transform(QUERIES, None, ctx2)
    assert given.retriever(ctx2).encoder.config.option("calibration").source == str(calib)


def _spy_rerankers(monkeypatch) -> list:
    """The reranker each ``Rerank.score`` call is given, in order."""
    from winnow.pipeline.rerank import Rerank

    seen: list = []
    score = Rerank.score

    def spy(self, texts, docs, ctx, reranker=None):
        seen.append(reranker)
        return score(self, texts, docs, ctx, reranker)

    monkeypatch.setattr(Rerank, "score", spy)
    return seen


def test_rerank_int8_in_a_pipeline_calibrates_on_its_own_pairs(
    fresh_cache, tiny_bert, tmp_path, monkeypatch
):
    seen = _spy_rerankers(monkeypatch)
    spec = f"bm25 % 20 >> rerank:cross-encoder:{tiny_bert}?backend=onnx&dtype=int8&export_dir={tmp_path}"
    stage = parse_system(spec)
    rerank = stage.stages[-1]
    given = rerank.reranker
    assert given.config.option("calibration") is None
    run = stage.transform(QUERIES, None, Context(dataset(), cache_dir=tmp_path / "cache"))
    assert set(run) == set(QUERIES)
    used = seen[-1]
    sample = used.config.option("calibration")
    assert sample is not None and sample.pairs and "pairs rerank:" in sample.source
    assert used.backend_info["guard"]["held_out"] == len(sample.split()[1])
    assert used.config.name == given.config.name  # the name the user gave, kept
    assert (used.config.max_length, used.config.activation) == (
        given.config.max_length,
        given.config.activation,
    )
    assert rerank.reranker is given  # the stage itself is never changed (threads share it)
    # the same pairs again: the same sample, the same model, and the score cache is hit
    stage.transform(QUERIES, None, Context(dataset(), cache_dir=tmp_path / "cache"))
    assert len(seen) == 1
    stage.transform(QUERIES, None, Context(dataset()))
    assert seen[-1] is used
    # other queries: their own pairs, drawn from the reranker as given
    stage.transform(dict(list(QUERIES.items())[:4]), None, Context(dataset()))
    assert seen[-1].config.option("calibration").digest != sample.digest


def test_rerank_with_no_candidates_asks_for_no_sample(fresh_cache, tiny_bert, tmp_path):
    from winnow.pipeline.rerank import Rerank
    from winnow.rerankers.loading import load_spec

    stage = Rerank(
        load_spec(f"cross-encoder:{tiny_bert}?backend=onnx&dtype=int8&export_dir={tmp_path}")
    )
    assert stage.transform({"q0": QUERIES["q0"]}, {"q0": {}}, Context(dataset())) == {"q0": {}}


def test_a_bound_pipeline_takes_the_users_sample(fresh_cache, tiny_bert, tmp_path):
    """One query a call: a sample per call would make a new int8 model per query, so a bound
    pipeline asks for calibration= (and fails at index(), not at some later query)."""
    spec = f"bm25 % 20 >> rerank:cross-encoder:{tiny_bert}?backend=onnx&dtype=int8&export_dir={tmp_path}"
    bound = parse_system(spec).bind(dataset())
    with pytest.raises(ConfigError, match=r"needs a sample of your own .*calibration="):
        bound.index()
    calib = tmp_path / "pairs.jsonl"
    calib.write_text(
        "\n".join(f'{{"query": "q {i}", "document": "{TEXTS[i]}"}}' for i in range(20))
    )
    bound = parse_system(spec + f"&calibration={calib}").bind(dataset())
    hits = bound.index().search(QUERIES["q1"], top_k=5)
    assert len(hits) == 5


def test_collection_sample_reads_only_what_it_draws():
    from winnow.rerankers.backends.calibration import sample_from_collection

    class Counting(dict):
        reads = 0

        def __getitem__(self, key):
            Counting.reads += 1
            return dict.__getitem__(self, key)

    corpus = Counting(
        {f"d{i:05d}": Document(f"d{i:05d}", f"text {i}", title="t") for i in range(5000)}
    )
    a = sample_from_collection(corpus, ["a query", "another query"], "big")
    assert Counting.reads == 2 * AUTO_ITEMS  # not the 5,000 documents
    assert len(a.items) == AUTO_ITEMS and {"a query", "another query"} <= set(a.items)
    assert sample_from_collection(corpus, ["another query", "a query"], "again").digest == a.digest
