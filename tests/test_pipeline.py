"""Pipeline operators, cut-offs, immutability, rerank stages and the system spec language."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from winnow.errors import ConfigError, DatasetError
from winnow.pipeline import (
    RRF,
    Context,
    Cutoff,
    Fused,
    Parallel,
    Pipeline,
    Rerank,
    ScoreFusion,
    SpecOptions,
    Stage,
    parse_system,
    split_systems,
)
from winnow.types import Dataset, Document

CORPUS = {
    "d1": Document("d1", "wheat is threshed and winnowed to separate grain from chaff", "Harvest"),
    "d2": Document("d2", "the stock market fell sharply on tuesday", "Markets"),
    "d3": Document("d3", "a winnowing fan blows the chaff away from the grain"),
    "d4": Document("d4", "neural rerankers score query document pairs", "Search"),
    "d5": Document("d5", "bread is baked from flour milled from grain"),
}
QUERIES = {
    "q1": "how is grain separated from chaff",
    "q2": "reranking documents with neural models",
}


@pytest.fixture
def dataset():
    return Dataset("tiny", CORPUS, QUERIES, {"q1": {"d1": 2, "d3": 1}, "q2": {"d4": 1}})


class Static(Stage):
    """A first stage that returns a fixed run (stands in for a retriever in operator tests)."""

    def __init__(self, run, label="static"):
        self.run = run
        self.label = label

    def transform(self, queries, run, ctx):
        return {q: dict(self.run[q]) for q in queries if q in self.run}


RUN_A = {"q1": {"d1": 3.0, "d3": 2.0, "d5": 1.0, "d2": 0.5}, "q2": {"d4": 2.0, "d2": 1.0}}
RUN_B = {"q1": {"d3": 9.0, "d5": 8.0, "d1": 1.0}, "q2": {"d2": 5.0, "d4": 4.0}}


def test_cutoff_keeps_the_best_k_with_stable_ties(dataset):
    run = {"q1": {"d5": 1.0, "d1": 2.0, "d3": 2.0, "d2": 0.0}}
    ctx = Context(dataset)
    out = (Static(run) % 2).transform({"q1": "x"}, None, ctx)
    assert out == {"q1": {"d1": 2.0, "d3": 2.0}}
    assert [t.phase for t in ctx.timings] == ["cutoff"]
    with pytest.raises(ConfigError, match="positive integer"):
        Cutoff(0)
    with pytest.raises(ConfigError, match="no run to cut"):
        Cutoff(3).transform(QUERIES, None, ctx)


def test_operators_build_flat_pipelines_and_match_the_explicit_form(dataset):
    a, b = Static(RUN_A, "a"), Static(RUN_B, "b")
    composed = (a % 3 | b % 3) >> ScoreFusion("combsum") >> Cutoff(2)
    explicit = Pipeline(
        [Parallel([Pipeline([a, Cutoff(3)]), Pipeline([b, Cutoff(3)])]), ScoreFusion(), Cutoff(2)]
    )
    assert isinstance(composed, Pipeline) and len(composed.stages) == 2
    fused, cut = composed.stages
    assert isinstance(fused, Fused) and isinstance(fused.fusion, ScoreFusion)
    assert [s.label for s in fused.branches] == ["a % 3", "b % 3"] and cut.k == 2
    assert [type(s) for s in explicit.stages] == [Fused, Cutoff]
    assert composed.label == explicit.label == "(a % 3 | b % 3) >> combsum % 2"
    out1 = composed.transform(QUERIES, None, Context(dataset))
    out2 = explicit.transform(QUERIES, None, Context(dataset))
    assert out1 == out2
    assert all(len(r) <= 2 for r in out1.values())


def test_rrf_stage_gives_the_closed_form(dataset):
    a, b = Static(RUN_A, "a"), Static(RUN_B, "b")
    out = ((a | b) >> RRF(k=60)).transform({"q2": QUERIES["q2"]}, None, Context(dataset))
    # q2: d4 is 1st in A and 2nd in B; d2 is 2nd in A and 1st in B -> equal 1/61 + 1/62
    assert out["q2"]["d4"] == pytest.approx(1 / 61 + 1 / 62)
    assert out["q2"]["d2"] == pytest.approx(1 / 62 + 1 / 61)


def test_fusion_is_one_stage_built_at_composition_that_runs_alone(dataset):
    from winnow.fusion import rrf, score_fusion

    a, b, c = Static(RUN_A, "a"), Static(RUN_B, "b"), Static(RUN_A, "c")
    fused = (a | b) >> RRF()
    assert isinstance(fused, Fused) and fused.label == "(a | b) >> rrf"
    ctx = Context(dataset)
    out = fused.transform(QUERIES, None, ctx)
    assert out == rrf([RUN_A, RUN_B], k=60)  # the closed form, from the branch runs
    assert [(t.stage, t.phase) for t in ctx.timings] == [("rrf", "fuse")]
    # bound to a collection, the fused stage searches like any stage
    hits = fused.bind(dataset).search("anything", top_k=2)
    assert hits == []  # the static branches know q1 and q2 only
    run = fused.bind(dataset)({"q2": QUERIES["q2"]})
    assert run == {"q2": rrf([RUN_A, RUN_B], k=60)["q2"]}
    # written inside a longer pipeline, in any grouping, the same single stage is built
    for pipeline in (
        c % 3 >> (a | b) >> ScoreFusion("combmnz") % 2,
        (c % 3 >> (a | b)) >> (ScoreFusion("combmnz") >> Cutoff(2)),
        Pipeline([c, Cutoff(3), Parallel([a, b]), ScoreFusion("combmnz"), Cutoff(2)]),
    ):
        assert [type(s) for s in pipeline.stages] == [Static, Cutoff, Fused, Cutoff]
        assert pipeline.label == "c % 3 >> (a | b) >> combmnz % 2"
        expected = score_fusion([RUN_A, RUN_B], method="combmnz")
        expected = {
            q: dict(sorted(r.items(), key=lambda i: (-i[1], i[0]))[:2]) for q, r in expected.items()
        }
        assert pipeline.transform(QUERIES, None, Context(dataset)) == expected
    nested = ((a | b) >> RRF() | c) >> RRF(k=10)
    assert isinstance(nested, Fused) and isinstance(nested.branches[0], Fused)
    assert nested.transform(QUERIES, None, Context(dataset)) == rrf(
        [rrf([RUN_A, RUN_B], k=60), RUN_A], k=10
    )


def test_fusion_must_follow_a_parallel_stage():
    a, b = Static(RUN_A, "a"), Static(RUN_B, "b")
    with pytest.raises(ConfigError, match="must be followed by a fusion stage"):
        (a | b) >> Cutoff(3)
    with pytest.raises(ConfigError, match="put a parallel stage before it"):
        a >> RRF()
    with pytest.raises(ConfigError, match="follow it with a fusion stage"):
        (a | b).transform(QUERIES, None, None)
    with pytest.raises(ConfigError, match="combines pipeline stages"):
        a >> 3
    with pytest.raises(ConfigError, match="rrf fuses the runs of a parallel stage"):
        RRF().transform(QUERIES, None, None)
    with pytest.raises(ConfigError, match="put a parallel stage before it"):
        ((a | b) >> RRF()) >> RRF()
    with pytest.raises(ConfigError, match="follow it with a fusion stage"):
        (a >> (a | b)).transform(QUERIES, None, None)  # unfinished: the fusion is not written yet
    with pytest.raises(ConfigError, match="rrf fuses the runs of a parallel stage"):
        (RRF() % 2).transform(QUERIES, None, None)  # unfinished: no parallel stage before it


def test_stages_never_mutate_their_inputs(dataset, tiny_bert):
    import winnow

    reranker = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    queries = dict(QUERIES)
    run = copy.deepcopy(RUN_A)
    pipeline = Static(run) % 3 >> Rerank(reranker, depth=2) % 2
    frozen_q, frozen_run = copy.deepcopy(queries), copy.deepcopy(run)
    out = pipeline.transform(queries, None, Context(dataset))
    assert queries == frozen_q and run == frozen_run
    out2 = Rerank(reranker, depth=1).transform(queries, run, Context(dataset))
    assert run == frozen_run and out2 is not run and out2["q1"] is not run["q1"]
    assert all(len(v) == 2 for v in out.values())
    for fusion in (RRF(), ScoreFusion("combmnz")):
        fused = ((Cutoff(3) | Cutoff(2)) >> fusion).transform(queries, run, Context(dataset))
        assert run == frozen_run and set(fused["q1"]) == {"d1", "d3", "d5"}


def test_rerank_scores_the_top_depth_and_keeps_the_tail(dataset, tiny_bert):
    import winnow

    reranker = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    ctx = Context(dataset)
    out = Rerank(reranker, depth=3, batch_queries=1).transform(QUERIES, RUN_A, ctx)
    head = ["d1", "d3", "d5"]
    expected = reranker.score_pairs([(QUERIES["q1"], CORPUS[d].full_text) for d in head])
    np.testing.assert_allclose([out["q1"][d] for d in head], expected, rtol=1e-4, atol=1e-5)
    assert out["q1"]["d2"] < min(expected)  # below depth: kept, under the reranked ones
    assert set(out["q2"]) == {"d4", "d2"}
    record = ctx.timings[-1]
    assert record.phase == "rerank" and record.pairs == 5 and record.queries == 2
    with pytest.raises(ConfigError, match="put a retrieval stage before it"):
        Rerank(reranker).transform(QUERIES, None, ctx)
    with pytest.raises(DatasetError, match="'zz' for query 'q1'"):
        Rerank(reranker).transform(QUERIES, {"q1": {"zz": 1.0}}, ctx)


def test_rerank_cache_is_keyed_by_content(dataset, tiny_bert, tmp_path):
    import winnow

    reranker = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    stage = Rerank(reranker, depth=3)
    first_ctx = Context(dataset, cache_dir=tmp_path)
    first = stage.transform(QUERIES, RUN_A, first_ctx)
    assert not first_ctx.timings[-1].cached
    again_ctx = Context(dataset, cache_dir=tmp_path)
    assert stage.transform(QUERIES, RUN_A, again_ctx) == first
    assert again_ctx.timings[-1].cached
    # a changed document text is a different key: scored afresh, never a stale hit
    changed = dict(CORPUS)
    changed["d1"] = Document("d1", "completely different words about finance")
    other = Dataset("tiny", changed, QUERIES, dataset.qrels)
    ctx3 = Context(other, cache_dir=tmp_path)
    out3 = stage.transform(QUERIES, RUN_A, ctx3)
    assert not ctx3.timings[-1].cached
    assert out3["q1"]["d1"] != first["q1"]["d1"]


def test_chunked_rerank_aggregates_windows(dataset, tiny_bert):
    import winnow
    from winnow.pipeline import ChunkedRerank
    from winnow.rerankers.chunking import rank_chunked

    reranker = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    long_doc = Document("d9", " ".join(["grain chaff wind"] * 20 + ["stock market"] * 20), "Long")
    corpus = {**CORPUS, "d9": long_doc}
    ds = Dataset("tiny", corpus, QUERIES, {})
    run = {"q1": {"d9": 2.0, "d1": 1.0, "d2": 0.5}}
    stage = ChunkedRerank(reranker, window=24, stride=16, aggregate="kmax", k=2, depth=2)
    out = stage.transform({"q1": QUERIES["q1"]}, run, Context(ds))
    ref = rank_chunked(
        reranker,
        [QUERIES["q1"]],
        [[long_doc.text, CORPUS["d1"].text]],
        titles=[[long_doc.title, CORPUS["d1"].title]],
        window=24,
        stride=16,
        aggregate="kmax",
        k=2,
    )[0]
    by_index = {h.index: h.score for h in ref}
    assert out["q1"]["d9"] == pytest.approx(by_index[0])
    assert out["q1"]["d1"] == pytest.approx(by_index[1])
    assert out["q1"]["d2"] < min(by_index.values())
    # a second reranker re-scores the windows of the best document and puts it on top
    second = ChunkedRerank(
        reranker, window=24, stride=16, depth=2, rerank_chunks=reranker, chunk_depth=1
    )
    out2 = second.transform({"q1": QUERIES["q1"]}, run, Context(ds))
    best = max(by_index, key=lambda i: (by_index[i], -i))
    best_id = ["d9", "d1"][best]
    assert max(out2["q1"], key=out2["q1"].get) == best_id
    best_doc = corpus[best_id]
    rescored = rank_chunked(reranker, [QUERIES["q1"]], [[best_doc.text]], titles=[[best_doc.title]])
    assert out2["q1"][best_id] == pytest.approx(rescored[0][0].score)  # default windows, max
    others = [d for d in out2["q1"] if d != best_id]
    assert all(out2["q1"][d] < out2["q1"][best_id] for d in others)


def test_spec_language_parses_names_operators_and_models(tiny_bert, tiny_bi_encoder):
    options = SpecOptions(reranker=f"bi-encoder:{tiny_bi_encoder}", depth=7, device="cpu")
    hybrid = parse_system("hybrid", options)
    assert hybrid.label == "(bm25 >> bo1 % 1000 | dense % 1000) >> combsum"
    assert parse_system("hybrid-v1", options).label == "(bm25 % 1000 | dense % 1000) >> rrf"
    stage = parse_system(f"bm25 % 100 >> cross-encoder:{tiny_bert} % 10", options)
    assert isinstance(stage, Pipeline)
    rerank = stage.stages[2]
    assert isinstance(rerank, Rerank) and rerank.depth == 7
    assert rerank.reranker.config.kind == "cross-encoder"
    assert stage.stages[3].k == 10 and stage.stages[1].k == 100
    default = parse_system("hybrid+rerank", options).stages[-1]
    assert default.reranker.config.kind == "bi-encoder"
    assert parse_system("(bm25%5|dense%5|bm25%9)>>combmnz", options).stages[0].label.count("|") == 2
    same = parse_system(f"rerank:{tiny_bert}", options)
    assert same.reranker.config.kind == "cross-encoder"
    fused = parse_system("hybrid-v1", options)
    assert isinstance(fused, Fused) and isinstance(fused.fusion, RRF)
    cut = parse_system("(bm25 % 5 | dense % 5) >> rrf % 3", options)  # a cut right after fusion
    assert [type(s) for s in cut.stages] == [Fused, Cutoff]
    assert cut.label == "(bm25 % 5 | dense % 5) >> rrf % 3"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bm26", "unknown name 'bm26'; valid names: bm25, dense"),
        ("bm25 >>", "ends too early"),
        ("(bm25 | dense", "missing"),
        ("bm25 % x", "positive integer"),
        ("bm25 | dense >> rrf", "put a parallel stage before it"),
        ("foo:bar", "unknown stage kind 'foo'"),
        ("bm25 dense", "unexpected 'dense'"),
        ("", "is empty"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("|", r"\|")):
        parse_system(spec, SpecOptions(loader=lambda model, kind: None))


def test_split_systems_respects_parentheses():
    assert split_systems("bm25, (bm25|dense)>>rrf ,hybrid") == [
        "bm25",
        "(bm25|dense)>>rrf",
        "hybrid",
    ]
    with pytest.raises(ConfigError, match="empty entry"):
        split_systems("bm25,,dense")


def test_first_stage_results_are_cached_by_content(dataset, tmp_path):
    from winnow.pipeline import BM25

    first_ctx = Context(dataset, cache_dir=tmp_path)
    first = BM25(top_k=3).transform(QUERIES, None, first_ctx)
    assert [(t.phase, t.cached) for t in first_ctx.timings] == [
        ("index", False),
        ("retrieve", False),
    ]
    assert "grain" in CORPUS[next(iter(first["q1"]))].text
    # same context: the search is shared, a copy is returned
    again = BM25(top_k=3).transform(QUERIES, None, first_ctx)
    assert again == first and again["q1"] is not first["q1"]
    assert first_ctx.timings[-1].cached
    # a new process (new context) reads the result back without building the index
    ctx = Context(dataset, cache_dir=tmp_path)
    assert BM25(top_k=3).transform(QUERIES, None, ctx) == first
    assert [(t.phase, t.cached) for t in ctx.timings] == [("retrieve", True)]
    # other settings, other queries or another corpus are other keys
    for stage, queries, data in [
        (BM25(top_k=2), QUERIES, dataset),
        (BM25(top_k=3, k1=1.2), QUERIES, dataset),
        (BM25(top_k=3), {"q1": "bread flour"}, dataset),
        (
            BM25(top_k=3),
            QUERIES,
            Dataset("tiny", {**CORPUS, "d6": Document("d6", "grain")}, QUERIES),
        ),
    ]:
        ctx = Context(data, cache_dir=tmp_path)
        stage.transform(queries, None, ctx)
        assert not ctx.timings[-1].cached
