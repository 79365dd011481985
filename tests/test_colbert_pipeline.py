"""The ColBERT first stage and pipeline: exact search equals brute-force MaxSim, the index is kept
in the content-keyed cache, spec words and named systems, and ``winnow eval`` end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import winnow
from winnow.cli import main
from winnow.errors import ConfigError, InputError
from winnow.pipeline import Context
from winnow.pipeline.retrieval import ColBERT as ColBERTStage
from winnow.pipeline.spec import SYSTEMS, parse_system
from winnow.retrieval.colbert import ColBERTIndex
from winnow.testing import sample_corpus
from winnow.types import Dataset, Document

CORPUS = {f"d{i:03d}": Document(f"d{i:03d}", t) for i, t in enumerate(sample_corpus(80, seed=7))}
QUERIES = {
    "q1": "wing lift at high mach number",
    "q2": "library catalog search",
    "q3": "bread flour mill",
    "blank": "   ",
}


def _brute_force(tiny_colbert, queries, k, **options):
    """Every (query, document) pair through the reranker kind (= similarity_pairwise), sorted."""
    rr = winnow.load_reranker(tiny_colbert, "late-interaction", **options)
    ids = list(CORPUS)
    out = {}
    for qid, text in queries.items():
        scores = rr.score_pairs([(text, CORPUS[d].full_text) for d in ids])
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
        out[qid] = [(ids[i], float(scores[i])) for i in order]
    return out


def test_exact_first_stage_equals_brute_force_maxsim(tiny_colbert):
    retriever = ColBERTIndex(tiny_colbert, index="exact").index(CORPUS)
    run = retriever.search(QUERIES, top_k=10)
    assert run["blank"] == {}
    expected = _brute_force(tiny_colbert, {q: t for q, t in QUERIES.items() if t.strip()}, 10)
    for qid, hits in expected.items():
        assert list(run[qid]) == [d for d, _ in hits]
        np.testing.assert_allclose(list(run[qid].values()), [s for _, s in hits], atol=1e-5)
    assert {"encode", "retrieve", "search"} <= set(retriever.timings)


def test_length_normalised_first_stage_equals_the_reranker(tiny_colbert):
    run = ColBERTIndex(tiny_colbert, index="exact", length_normalize=True).index(CORPUS)
    got = run.search({"q1": QUERIES["q1"]}, top_k=5)["q1"]
    expected = _brute_force(tiny_colbert, {"q1": QUERIES["q1"]}, 5, length_normalize=True)["q1"]
    assert list(got) == [d for d, _ in expected]
    np.testing.assert_allclose(list(got.values()), [s for _, s in expected], atol=1e-6)


def test_plaid_index_is_cached_by_content(tiny_colbert, tmp_path):
    first = ColBERTIndex(tiny_colbert, cache_dir=tmp_path, index="plaid").index(CORPUS)
    assert first.timings["cache_hit"] == 0.0 and first.timings["encode"] > 0
    assert first.multi_vector_index.kind == "plaid"
    run = first.search(QUERIES, top_k=20)
    again = ColBERTIndex(tiny_colbert, cache_dir=tmp_path, index="plaid").index(CORPUS)
    assert again.timings["cache_hit"] == 1.0 and again.timings["encode"] == 0.0
    assert again.search(QUERIES, top_k=20) == run
    # another corpus, another index kind or knob: another entry, never a stale hit
    changed = dict(CORPUS, d000=Document("d000", "an entirely different text"))
    changed_run = ColBERTIndex(tiny_colbert, cache_dir=tmp_path, index="plaid").index(changed)
    assert changed_run.timings["cache_hit"] == 0.0
    exact = ColBERTIndex(tiny_colbert, cache_dir=tmp_path, index="exact").index(CORPUS)
    assert exact.timings["cache_hit"] == 0.0
    nbits = ColBERTIndex(tiny_colbert, cache_dir=tmp_path, index_options={"nbits": 8}).index(CORPUS)
    assert nbits.timings["cache_hit"] == 0.0
    assert len(list((tmp_path / "late-interaction").iterdir())) == 4


def test_encoding_in_chunks_resumes_from_its_checkpoints(tiny_colbert, tmp_path, monkeypatch):
    """A run stopped after two of four chunks leaves them in the cache; the next run encodes
    only the other two and builds the same index as an uninterrupted run."""
    options = {"index": "plaid", "checkpoint_every": 20, "memo_mb": 0}
    reference = ColBERTIndex(tiny_colbert, **options).index(CORPUS).search(QUERIES, top_k=10)
    calls: list[int] = []

    def counting(retriever, stop_after=None):
        encoder = retriever.encoder  # one instance per model, shared by the three retrievers
        encode = type(encoder).encode_documents.__get__(encoder)  # not an earlier wrapper

        def wrapper(texts, **kwargs):
            if stop_after is not None and len(calls) == stop_after:
                raise RuntimeError("stopped")
            calls.append(len(texts))
            return encode(texts, **kwargs)

        monkeypatch.setattr(encoder, "encode_documents", wrapper)
        return retriever

    first = counting(ColBERTIndex(tiny_colbert, cache_dir=tmp_path, **options), stop_after=2)
    with pytest.raises(RuntimeError, match="stopped"):
        first.index(CORPUS)
    assert calls == [20, 20]
    assert len(list((tmp_path / "late-interaction-chunks").iterdir())) == 2
    calls.clear()
    second = counting(ColBERTIndex(tiny_colbert, cache_dir=tmp_path, **options)).index(CORPUS)
    assert calls == [20, 20]  # chunks 3 and 4 only
    assert second.search(QUERIES, top_k=10) == reference
    assert list((tmp_path / "late-interaction-chunks").iterdir()) == []  # the index holds them
    calls.clear()
    third = counting(ColBERTIndex(tiny_colbert, cache_dir=tmp_path, **options)).index(CORPUS)
    assert calls == [] and third.timings["cache_hit"] == 1.0


def test_exact_search_is_the_same_whatever_the_chunks(tiny_colbert):
    whole = ColBERTIndex(tiny_colbert, index="exact").index(CORPUS)
    chunked = ColBERTIndex(tiny_colbert, index="exact", checkpoint_every=7).index(CORPUS)
    np.testing.assert_array_equal(
        chunked.multi_vector_index.tokens, whole.multi_vector_index.tokens
    )
    assert chunked.multi_vector_index.tokens.dtype == np.float32  # exact keeps float32 vectors
    assert chunked.search(QUERIES, top_k=10) == whole.search(QUERIES, top_k=10)
    plaid = ColBERTIndex(tiny_colbert, index="plaid", checkpoint_every=7).index(CORPUS)
    assert plaid.token_dtype("plaid") == "float16" and plaid.resolved_kind == "plaid"


def test_auto_index_is_exact_for_small_corpora(tiny_colbert, monkeypatch):
    from winnow.retrieval import late_interaction

    auto = ColBERTIndex(tiny_colbert).index(CORPUS)
    assert auto.index_kind == "auto" and auto.resolved_kind == "exact"
    exact = ColBERTIndex(tiny_colbert, index="exact").index(CORPUS)
    assert auto.search(QUERIES, top_k=10) == exact.search(QUERIES, top_k=10)
    knob = ColBERTIndex(tiny_colbert, index_options={"nprobe": 2}).index(CORPUS)
    assert knob.resolved_kind == "plaid"  # a PLAID knob asks for PLAID
    monkeypatch.setattr(late_interaction, "AUTO_EXACT_DOCUMENTS", 50)
    assert ColBERTIndex(tiny_colbert).index(CORPUS).resolved_kind == "plaid"


def test_bad_inputs(tiny_colbert, tiny_bi_encoder):
    with pytest.raises(InputError, match="empty corpus"):
        ColBERTIndex(tiny_colbert, index="exact").index({})
    with pytest.raises(InputError, match="before index"):
        ColBERTIndex(tiny_colbert, index="exact").search({"q": "wing"})
    with pytest.raises(ConfigError, match="index must be one of auto, plaid, exact"):
        ColBERTIndex(tiny_colbert, index="faiss")
    with pytest.raises(ConfigError, match=r"unknown option.*nprob.*valid: .*nprobe"):
        ColBERTIndex(tiny_colbert, index_options={"nprob": 4})
    with pytest.raises(ConfigError, match="not a ColBERT checkpoint"):
        ColBERTIndex(tiny_bi_encoder, index="exact")


def test_spec_words(tiny_colbert, tiny_bi_encoder):
    stage = parse_system(f"colbert:{tiny_colbert}?index=exact&max_tokens=512")
    assert isinstance(stage, ColBERTStage) and stage.index == "exact"
    assert stage.options == {"max_tokens": 512}
    stage = parse_system(f"colbert:{tiny_colbert}?nprobe=4&length_normalize=true")
    assert stage.index == "auto" and stage.index_options == {"nprobe": 4}
    assert stage.options == {"length_normalize": True}
    assert parse_system("colbert").label == "colbert"
    pipeline = parse_system("colbert-hybrid")
    assert "rrf" in pipeline.label and "rerank" in pipeline.label
    with pytest.raises(ConfigError, match=r"index option nprobe"):
        parse_system(f"colbert:{tiny_colbert}?nprobe=many")
    with pytest.raises(ConfigError, match=r"unknown option 'bogus'.*knob of the plaid index"):
        parse_system(f"colbert:{tiny_colbert}?bogus=1")
    with pytest.raises(ConfigError, match="not a ColBERT checkpoint"):
        parse_system(f"colbert:{tiny_bi_encoder}")
    assert parse_system(f"colbert:{tiny_bi_encoder}?backbone=true&index=exact").index == "exact"
    assert "colbert-hybrid" in SYSTEMS and "bm25+colbert" in SYSTEMS


def test_a_cut_after_the_colbert_stage_is_its_search_depth(tiny_colbert, tmp_path):
    stage = ColBERTStage(tiny_colbert, index="exact")
    pipeline = stage % 5
    first = pipeline.stages[0]
    assert first.top_k == 5 and stage.top_k == 1000  # a new stage; the given one is unchanged
    assert (stage % 2000).stages[0] is stage  # a deeper cut reads no more than top_k
    hybrid = parse_system("colbert-hybrid")
    colbert = next(s for s in hybrid.stages[0].branches if "colbert" in s.label).stages[0]
    assert isinstance(colbert, ColBERTStage) and colbert.top_k == 100
    # the stage searches for 5 and returns the same 5 documents as the cut of a top-1000 run
    dataset = Dataset("tiny", CORPUS, {q: t for q, t in QUERIES.items() if t.strip()}, {})
    ctx = Context(dataset, cache_dir=tmp_path)
    shallow = first.transform(dataset.queries, None, ctx)
    deep = pipeline.transform(dataset.queries, None, Context(dataset, cache_dir=tmp_path))
    assert all(len(r) == 5 for r in shallow.values()) and shallow == deep
    full = stage.transform(dataset.queries, None, ctx)
    assert all(len(r) == len(CORPUS) for r in full.values())
    for qid, ranking in shallow.items():
        assert list(ranking) == list(full[qid])[:5]


def test_pipeline_stages_time_encode_index_retrieve_and_rerank(tiny_colbert, tmp_path):
    dataset = Dataset("tiny", CORPUS, {q: t for q, t in QUERIES.items() if t.strip()}, {})
    spec = (
        f"(bm25 % 20 | colbert:{tiny_colbert}?index=exact % 20) >> rrf "
        f">> rerank:colbert:{tiny_colbert}"
    )
    ctx = Context(dataset, cache_dir=tmp_path)
    run = parse_system(spec).transform(dataset.queries, None, ctx)
    assert set(run) == set(dataset.queries) and all(len(r) <= 40 for r in run.values())
    phases = {(t.stage.split(":")[0].split("?")[0], t.phase) for t in ctx.timings}
    assert {("colbert", "index"), ("colbert", "retrieve"), ("bm25", "retrieve")} <= phases
    assert any(t.phase == "rerank" and t.pairs > 0 for t in ctx.timings)
    index = next(t for t in ctx.timings if t.phase == "index" and "colbert" in t.stage)
    assert index.parts["encode"] > 0 and "build" in index.parts
    # the rerank stage's scores are the kind's MaxSim of each fused candidate
    rr = winnow.load_reranker(tiny_colbert)
    for qid, ranking in run.items():
        ids = list(ranking)
        scores = rr.score_pairs([(dataset.queries[qid], CORPUS[d].full_text) for d in ids])
        np.testing.assert_allclose([ranking[d] for d in ids], scores, atol=1e-5)


TOPICS = {
    "grain": "wheat grain chaff harvest barley flour mill bread",
    "flight": "aircraft wing lift drag flow supersonic mach shock",
    "search": "library information retrieval search index query document ranking",
}


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    """A 30-document, 6-query BEIR collection: each query is about one topic."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs, qrels, queries = [], [], []
    for t, (topic, words) in enumerate(TOPICS.items()):
        vocab = words.split()
        for i in range(10):
            text = " ".join(rng.choice(vocab) for _ in range(10 + 2 * i))
            docs.append({"_id": f"{topic}{i}", "title": topic, "text": text})
        for j in range(2):
            qid = f"q{2 * t + j}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(vocab, 3))})
            qrels += [f"{qid}\t{topic}{i}\t1" for i in rng.sample(range(10), 4)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n"
    )
    return root


def test_winnow_eval_with_the_colbert_systems(beir_folder, tmp_path, tiny_colbert, capsys):
    out = tmp_path / "out"
    systems = [
        "bm25",
        f"colbert:{tiny_colbert}?index=exact",
        f"(bm25 % 10 | colbert:{tiny_colbert} % 10) >> rrf >> rerank:colbert:{tiny_colbert}",
        "colbert-hybrid",
    ]
    args = ["eval", "--dataset", str(beir_folder), "--systems", ",".join(systems)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "colbert-hybrid" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["systems"]) == {*systems[:3], "colbert-hybrid"}
    for name in systems[1:]:
        entry = doc["systems"][name]
        assert 0.0 <= entry["nDCG@10"] <= 1.0
        assert {"index", "retrieve", "encode"} <= set(entry["seconds"])
    assert doc["systems"]["colbert-hybrid"]["pairs"] > 0
    assert "rerank" in doc["systems"]["colbert-hybrid"]["seconds"]
    # a second run reads the runs and the scores from the cache: the model is not even loaded
    from winnow.rerankers.cache import model_loads

    winnow.clear_cache()
    loads = model_loads(tiny_colbert)
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    assert model_loads(tiny_colbert) == loads
    again = json.loads((out / "metrics.json").read_text())
    for name in systems:
        assert again["systems"][name]["nDCG@10"] == doc["systems"][name]["nDCG@10"]


def test_eval_help_lists_the_colbert_systems(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    printed = capsys.readouterr().out
    assert "colbert-hybrid" in printed and "colbert" in printed
