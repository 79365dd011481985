"""Pseudo-relevance feedback: RM3 / Bo1 weights in closed form, Rocchio on toy vectors, stages."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from winnow.errors import ConfigError
from winnow.pipeline import BM25, Context, Pipeline, QueryExpansion, Rocchio, parse_system
from winnow.pipeline.spec import SpecOptions
from winnow.retrieval import BM25Index
from winnow.retrieval.prf import (
    ExpansionOptions,
    TermStatistics,
    bo1_query,
    rm3_query,
    rocchio,
)
from winnow.types import Dataset, Document

# No stemming, no stopwords: every word is its own term, so the weights can be worked out by hand.
TOY = {
    "d1": Document("d1", "apple banana apple"),
    "d2": Document("d2", "banana cherry"),
    "d3": Document("d3", "cherry date elder"),
    "d4": Document("d4", "fig grape cherry"),
    "d5": Document("d5", "grape fig kiwi lemon"),
}


@pytest.fixture(scope="module")
def toy_stats():
    index = BM25Index(stemmer=None, stopwords=None).index(TOY)
    return TermStatistics(index, TOY)


def named(stats, weights):
    return {term: pytest.approx(w) for term, w in stats.named(weights).items()}


def test_term_statistics_count_the_documents(toy_stats):
    vocab = toy_stats.bm25._retriever.vocab_dict
    assert toy_stats.counts[toy_stats.row["d1"], vocab["apple"]] == 2
    assert toy_stats.df[vocab["cherry"]] == 3 and toy_stats.cf[vocab["apple"]] == 2
    assert toy_stats.query_terms("apple apple kiwi unknown") == Counter(
        {vocab["apple"]: 2, vocab["kiwi"]: 1}
    )


def test_rm3_weights_in_closed_form(toy_stats):
    query = toy_stats.query_terms("apple")
    feedback = [("d1", 2.0), ("d2", 1.0)]
    # RM1: d1 gives apple 2/3 * 2, banana 1/3 * 2; d2 gives banana 1/2 * 1, cherry 1/2 * 1.
    # The 2 best (apple 4/3, banana 7/6) sum to 5/2; half of that mass, half the query's.
    weights = rm3_query(toy_stats, query, feedback, fb_terms=2, max_df=1.0)
    assert named(toy_stats, weights) == {
        "apple": 0.5 + 0.5 * (4 / 3) / (5 / 2),
        "banana": 0.5 * (7 / 6) / (5 / 2),
    }
    # max_df 0.25 of 5 documents keeps terms of one document only: banana, cherry go; d2 is empty.
    weights = rm3_query(toy_stats, query, feedback, fb_terms=2, max_df=0.25)
    assert named(toy_stats, weights) == {"apple": 1.0}
    # the query alone when it gets all the weight
    weights = rm3_query(toy_stats, query, feedback, original_query_weight=1.0, max_df=1.0)
    assert named(toy_stats, weights) == {"apple": 1.0}


def test_bo1_weights_in_closed_form(toy_stats):
    query = toy_stats.query_terms("apple")
    feedback = [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]

    def bo1(tf_x, cf, n=5):
        pn = cf / n
        return tf_x * math.log2((1 + pn) / pn) + math.log2(1 + pn)

    # candidates are in >= 2 feedback documents: banana (tf_x 2, cf 2), cherry (tf_x 2, cf 3)
    banana, cherry = bo1(2, 2), bo1(2, 3)
    assert banana > cherry
    weights = bo1_query(toy_stats, query, feedback, fb_terms=10)
    assert named(toy_stats, weights) == {"apple": 1.0, "banana": 1.0, "cherry": cherry / banana}
    weights = bo1_query(toy_stats, query, feedback, fb_terms=1)
    assert named(toy_stats, weights) == {"apple": 1.0, "banana": 1.0}


def test_weighted_scores_equal_bm25s_per_term(toy_stats):
    vocab = toy_stats.bm25._retriever.vocab_dict
    weights = {vocab["banana"]: 0.7, vocab["cherry"]: 0.2}
    expected = 0.7 * toy_stats.bm25.get_scores("banana") + 0.2 * toy_stats.bm25.get_scores("cherry")
    np.testing.assert_allclose(toy_stats.score(weights), expected, rtol=1e-6)
    top = toy_stats.top(toy_stats.score(weights), 10)
    assert list(top) == ["d2", "d1", "d3", "d4"]  # d5 shares no term: not returned


def test_rm3_with_all_weight_on_the_query_ranks_as_bm25():
    from winnow.testing import sample_corpus

    texts = sample_corpus(200, seed=3)
    corpus = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}
    queries = {f"q{i}": " ".join(texts[i * 7].split()[:4]) for i in range(12)}
    ctx = Context(Dataset("sample", corpus, queries))
    bm25 = BM25(top_k=50).transform(queries, None, ctx)
    stage = QueryExpansion("rm3", top_k=50, original_query_weight=1.0)
    same = stage.transform(queries, bm25, ctx)
    stats = stage.expansion(ctx).stats
    assert any(len(r) > 10 for r in bm25.values())
    for qid in queries:
        assert list(same[qid]) == list(bm25[qid])
        q_len = sum(stats.query_terms(queries[qid]).values())
        np.testing.assert_allclose(
            [same[qid][d] * q_len for d in bm25[qid]], list(bm25[qid].values()), rtol=1e-5
        )
    # with feedback the ranking changes (expansion terms reach new documents)
    rm3 = QueryExpansion("rm3", top_k=50).transform(queries, bm25, ctx)
    assert any(list(rm3[q]) != list(bm25[q]) for q in queries)


def test_rocchio_closed_form():
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    docs = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    moved = rocchio(q, docs, alpha=0.4, beta=0.6)
    np.testing.assert_allclose(moved, np.array([0.4, 0.3, 0.3]) / math.sqrt(0.34), rtol=1e-6)
    np.testing.assert_allclose(rocchio(q, docs[:0]), q)


def test_rocchio_stage_searches_with_the_moved_query(tiny_bi_encoder):
    corpus = {d: TOY[d] for d in TOY}
    queries = {"q1": "apple banana", "q2": "grape"}
    ctx = Context(Dataset("toy", corpus, queries))
    stage = Rocchio(tiny_bi_encoder, k=2, alpha=0.5, beta=1.0, top_k=3)
    first = {"q1": {"d3": 2.0, "d4": 1.0, "d1": 0.5}, "q2": {"d5": 1.0}}
    out = stage.transform(queries, first, ctx)
    index = stage.dense.retriever(ctx)
    emb = dict(zip(index.doc_ids, index.embeddings))
    q = index.encoder.encode_queries(list(queries.values()))
    for i, (qid, fb) in enumerate((("q1", ["d3", "d4"]), ("q2", ["d5"]))):
        moved = 0.5 * q[i] + 1.0 * np.mean([emb[d] for d in fb], axis=0)
        moved /= np.linalg.norm(moved)
        expected = sorted(((float(emb[d] @ moved), d) for d in emb), key=lambda x: (-x[0], x[1]))
        assert list(out[qid]) == [d for _, d in expected[:3]]
        np.testing.assert_allclose(list(out[qid].values()), [s for s, _ in expected[:3]], rtol=1e-5)


def test_feedback_words_in_system_specs(tiny_bi_encoder):
    options = SpecOptions(dense_model=tiny_bi_encoder, device="cpu")
    rm3 = parse_system("bm25+rm3", options)
    assert isinstance(rm3, Pipeline) and isinstance(rm3.stages[-1], QueryExpansion)
    assert rm3.stages[-1].options.fb_docs == 10 and rm3.label == "bm25 >> rm3"
    assert parse_system("bm25+bo1", options).stages[-1].options == ExpansionOptions("bo1", 3)
    prf = parse_system("dense+prf", options).stages[-1]
    assert isinstance(prf, Rocchio) and (prf.k, prf.alpha, prf.beta) == (5, 0.4, 0.6)
    assert parse_system(f"bm25 % 100 >> rocchio:{tiny_bi_encoder}", options).stages[-1].k == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ExpansionOptions("rm4"), "unknown query expansion 'rm4'; choose one of rm3, bo1"),
        (lambda: ExpansionOptions(fb_docs=0), "fb_docs must be a positive integer"),
        (lambda: ExpansionOptions(original_query_weight=1.5), "between 0 and 1"),
        (lambda: Rocchio("m", alpha=-1), "alpha must be a number >= 0"),
        (lambda: Rocchio("m", k=0), "k must be a positive integer"),
    ],
)
def test_bad_feedback_settings_are_clear_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_feedback_stage_needs_a_first_ranking():
    ctx = Context(Dataset("toy", TOY, {"q": "apple"}))
    with pytest.raises(ConfigError, match="write bm25 >> rm3"):
        parse_system("rm3").transform({"q": "apple"}, None, ctx)


def test_feedback_document_outside_the_corpus_is_named(toy_stats):
    from winnow.errors import InputError

    with pytest.raises(InputError, match="feedback document 'nope'"):
        rm3_query(toy_stats, toy_stats.query_terms("apple"), [("nope", 1.0)])


def _judged_sample(n_queries=12):
    from winnow.testing import sample_corpus

    texts = sample_corpus(150, seed=5)
    corpus = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}
    queries = {f"q{i}": " ".join(texts[i * 11].split()[1:5]) for i in range(n_queries)}
    qrels = {f"q{i}": {f"d{i * 11}": 1, f"d{i * 11 + 1}": 1} for i in range(n_queries)}
    return Dataset("sample", corpus, queries, qrels)


def test_tune_scores_each_fold_with_parameters_chosen_on_the_others():
    from winnow.evaluation.metrics import Evaluator
    from winnow.evaluation.tune import folds_of, parse_grid, tune

    ds = _judged_sample()
    grid = parse_grid("bm25", "k1=0.3,1.2,3.0;b=0.1,0.9")
    result = tune(ds, "bm25", grid, metric="nDCG@10", folds=3, seed=1)
    evaluator = Evaluator(ds.qrels, ["nDCG@10"])
    per = {}
    for k1 in grid["k1"]:
        for b in grid["b"]:
            run = BM25(k1=k1, b=b).transform(ds.queries, None, Context(ds))
            per[(k1, b)] = evaluator.per_query(run)["nDCG@10"]
    folds = folds_of(list(ds.queries), 3, seed=1)
    assert sorted(q for f in folds for q in f) == sorted(ds.queries)
    cv = {}
    for fold, test in zip(result.folds, folds):
        train = [q for q in ds.queries if q not in test]
        best = max(sum(per[p][q] for q in train) for p in per)
        chosen = (fold["params"]["k1"], fold["params"]["b"])
        assert sum(per[chosen][q] for q in train) == pytest.approx(best)
        assert fold["test"] == pytest.approx(sum(per[chosen][q] for q in test) / len(test))
        cv.update({q: per[chosen][q] for q in test})
    assert result.cross_validated == pytest.approx(sum(cv.values()) / len(cv))
    untuned = BM25().transform(ds.queries, None, Context(ds))
    assert result.untuned == pytest.approx(evaluator.aggregate(untuned)["nDCG@10"])


def test_tune_command_saves_a_system_eval_can_use(tmp_path, monkeypatch, capsys):
    from winnow.cli import main

    ds = _judged_sample()
    folder = tmp_path / "sample"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for d in ds.corpus.values():
            f.write(json.dumps({"_id": d.doc_id, "text": d.text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for q, t in ds.queries.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, docs in ds.qrels.items():
            f.writelines(f"{q}\t{d}\t{r}\n" for d, r in docs.items())
    saved = tmp_path / "tuned.json"
    argv = ["tune", "--dataset", str(folder), "--no-cache", "--system", "bm25+rm3", "--folds", "3"]
    argv += ["--grid", "fb_terms=2,20;original_query_weight=0.3,1.0", "--save", str(saved)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 3 (4 queries)" in out and "cross-validated" in out
    data = json.loads(saved.read_text())
    stage = parse_system(f"tuned:{saved}")
    expansion = stage.stages[-1]
    assert expansion.options.fb_terms == data["best"]["fb_terms"]
    assert expansion.options.original_query_weight == data["best"]["original_query_weight"]
    assert main([*argv[:-4], "--grid", "fb_term=2"]) == 2
    assert "bm25+rm3 has no parameter 'fb_term'; its parameters: k1, b," in capsys.readouterr().err
    saved.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a file written by winnow tune"):
        parse_system(f"tuned:{saved}")


def test_feedback_results_are_cached_by_content(tmp_path):
    ds = Dataset("toy", TOY, {"q1": "apple", "q2": "grape"})
    first = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d5": 1.0}}
    ctx = Context(ds, cache_dir=tmp_path)
    out = QueryExpansion("bo1").transform(ds.queries, first, ctx)
    assert [t.cached for t in ctx.timings if t.stage == "bo1"] == [False]
    again_ctx = Context(ds, cache_dir=tmp_path)
    assert QueryExpansion("bo1").transform(ds.queries, first, again_ctx) == out
    assert [(t.stage, t.cached) for t in again_ctx.timings] == [("bo1", True)]  # no index loaded
    # other feedback, or other settings: computed again
    changed = {"q1": {"d2": 2.0, "d1": 1.0}, "q2": {"d5": 1.0}}
    QueryExpansion("bo1").transform(ds.queries, changed, again_ctx)
    QueryExpansion("bo1", fb_terms=1).transform(ds.queries, first, again_ctx)
    assert [t.cached for t in again_ctx.timings if t.stage == "bo1"] == [True, False, False]
