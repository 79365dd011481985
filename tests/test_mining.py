"""Hard-negative mining: positives excluded, filters on the judge's scale, sampling, formats that
match sentence-transformers column for column, the per-pair judge cache, the CLI and its errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import winnow
from winnow.cli import main
from winnow.data import load_dataset
from winnow.errors import ConfigError, ModelLoadError
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.training import MiningSummary, mine_hard_negatives
from winnow.training._formats import FORMATS
from winnow.types import Dataset, Document


class TableJudge(Reranker):
    """A judge whose score of a pair is looked up by document text (default ``default``): lets a
    test place candidates exactly around a threshold. Counts every pair that reaches ``_score``."""

    kind = "table"

    def __init__(self, table: dict[str, float], default: float = -9.0):
        super().__init__(
            RerankerConfig(model="table-judge", kind="table", device="cpu", dtype="float32")
        )
        self.table = table
        self.default = default
        self.pairs_scored = 0
        self.calls = 0

    def _load(self) -> None:
        pass

    def _score(self, pairs):
        self.calls += 1
        self.pairs_scored += len(pairs)
        scores = np.array([self.table.get(d, self.default) for _, d in pairs], dtype=np.float32)
        return PairScores(scores, np.zeros(len(pairs), bool), np.zeros(len(pairs), np.int32))


class RankOnlyJudge(TableJudge):
    score_type = "rank"


def toy(n_docs: int = 12, qrels=None) -> Dataset:
    """Documents d0..d11 (text "doc N"), queries q1, q2; q1's positives d0 and d1 by default."""
    corpus = {f"d{i}": Document(f"d{i}", f"doc {i}") for i in range(n_docs)}
    return Dataset(
        name="toy",
        corpus=corpus,
        queries={"q1": "first query", "q2": "second query", "q3": "unjudged"},
        qrels=qrels if qrels is not None else {"q1": {"d0": 2, "d1": 1, "d2": 0}},
    )


def ranked(*doc_ids: str) -> dict[str, float]:
    """A run ranking ``doc_ids`` in this order."""
    return {d: float(len(doc_ids) - i) for i, d in enumerate(doc_ids)}


ALL = [f"d{i}" for i in range(12)]


def test_every_positive_is_excluded_and_the_window_is_positive_free():
    judge = TableJudge({"doc 0": 5.0, "doc 1": 4.0})
    run = {"q1": ranked("d1", "d3", "d0", "d2", "d4", "d5", "d6")}
    result = mine_hard_negatives(toy(), judge, run, num_negatives=2, range_min=1, range_max=4)
    # positive-free ranking: d3 d2 d4 d5 d6 -> window ranks 1..3 = d2 d4 d5 (d2 has grade 0:
    # judged non-relevant, a true negative)
    assert [d for d, _ in result.negatives["q1"]] == ["d2", "d4"]
    s = result.summary
    assert (s.queries, s.positives, s.positives_excluded, s.candidates) == (1, 2, 2, 3)
    assert result.positive_scores == {"q1": {"d0": 5.0, "d1": 4.0}}


def test_a_document_with_a_positives_text_is_never_a_negative():
    ds = toy()
    corpus = dict(ds.corpus)
    corpus["copy"] = Document("copy", "doc 0")  # the text of positive d0
    corpus["twin"] = Document("twin", "doc 3")  # a second copy of candidate d3
    ds = Dataset("toy", corpus, ds.queries, ds.qrels)
    run = {"q1": ranked("copy", "d3", "twin", "d4", "d5")}
    result = mine_hard_negatives(ds, TableJudge({}), run, num_negatives=3, range_max=5)
    assert [d for d, _ in result.negatives["q1"]] == ["d3", "d4", "d5"]
    assert result.summary.positives_excluded == 1 and result.summary.duplicates_skipped == 1


def test_blank_texts_are_never_written(tmp_path):
    """A blank positive, candidate or query (Cranfield has two empty documents, one judged
    relevant) is left out and counted: the trainers refuse empty texts."""
    ds = toy()
    corpus = dict(ds.corpus)
    corpus["empty"] = Document("empty", "")
    corpus["spaces"] = Document("spaces", "  ")
    queries = {**ds.queries, "q4": " "}
    qrels = {"q1": {"d0": 1, "empty": 1}, "q4": {"d1": 1}}
    ds = Dataset("toy", corpus, queries, qrels)
    run = {"q1": ranked("spaces", "d3", "d4"), "q4": ranked("d3")}
    out = tmp_path / "mined.jsonl"
    result = mine_hard_negatives(
        ds,
        TableJudge({}),
        run,
        num_negatives=2,
        range_max=5,
        output_format="labeled-pair",
        output=out,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["positive"], r["label"]) for r in rows] == [("doc 0", 1), ("doc 3", 0), ("doc 4", 0)]
    assert result.summary.blank_skipped == 3  # the blank query, positive and candidate
    assert result.positive_scores == {"q1": {"d0": -9.0}}
    winnow.training.read_mined(out)  # the trainers' reader accepts the file


def test_relative_margin_with_negative_logits_keeps_the_threshold_below_the_positive():
    """Positive -2.0, margin 0.05: threshold -2.1. The naive pos * (1 - m) = -1.9 would keep -1.95
    (scored ABOVE the positive) and -2.05 (within 5 %)."""
    table = {"doc 0": -2.0, "doc 1": -1.0, "doc 3": -1.95, "doc 4": -2.05, "doc 5": -2.2}
    table |= {"doc 6": -2.1, "doc 7": -3.0}
    ds = toy(qrels={"q1": {"d0": 1, "d1": 1}})
    run = {"q1": ranked("d3", "d4", "d5", "d6", "d7")}
    result = mine_hard_negatives(
        ds, TableJudge(table), run, num_negatives=5, range_max=5, relative_margin=0.05
    )
    # the weakest positive (-2.0, not -1.0) is the reference; -2.1 is not strictly below -2.1
    assert result.negatives["q1"] == [("d5", pytest.approx(-2.2)), ("d7", -3.0)]
    assert result.summary.dropped["relative_margin"] == 3
    naive = -2.0 * (1 - 0.05)
    assert naive > -1.95  # what the naive formula would have let through


def test_relative_margin_with_positive_scores():
    table = {"doc 0": 10.0, "doc 1": 20.0, "doc 3": 9.6, "doc 4": 9.4, "doc 5": 11.0}
    run = {"q1": ranked("d3", "d4", "d5")}
    result = mine_hard_negatives(
        toy(), TableJudge(table), run, num_negatives=3, range_max=3, relative_margin=0.05
    )
    assert [d for d, _ in result.negatives["q1"]] == ["d4"]  # 9.4 < 10 - 0.5; 9.6 and 11 dropped


@pytest.mark.parametrize(
    ("options", "kept", "dropped"),
    [
        ({"absolute_margin": 1.0}, ["d5", "d6"], {"absolute_margin": 2}),  # < 4 - 1 = 3
        ({"absolute_margin": 0.0}, ["d4", "d5", "d6"], {"absolute_margin": 1}),  # < 4
        ({"max_score": 2.0}, ["d5", "d6"], {"max_score": 2}),
        ({"min_score": 2.0}, ["d3", "d4", "d5"], {"min_score": 1}),
        (
            {"absolute_margin": 0.5, "min_score": 1.0},
            ["d5"],
            {"absolute_margin": 2, "min_score": 1},
        ),
    ],
)
def test_absolute_margin_and_score_bounds(options, kept, dropped):
    table = {"doc 0": 4.0, "doc 1": 6.0, "doc 3": 5.0, "doc 4": 3.5, "doc 5": 2.0, "doc 6": -1.0}
    run = {"q1": ranked("d3", "d4", "d5", "d6")}
    result = mine_hard_negatives(
        toy(), TableJudge(table), run, num_negatives=4, range_max=4, **options
    )
    assert [d for d, _ in result.negatives["q1"]] == kept
    s = result.summary
    assert {k: v for k, v in s.dropped.items() if v} == dropped
    assert s.candidates == s.kept + sum(s.dropped.values()) + s.dropped_not_finite


def test_top_sampling_orders_by_judge_score_ties_by_rank():
    table = {"doc 3": 1.0, "doc 4": 3.0, "doc 5": 1.0, "doc 6": 2.0}
    run = {"q1": ranked("d3", "d4", "d5", "d6")}
    result = mine_hard_negatives(toy(), TableJudge(table), run, num_negatives=3, range_max=4)
    assert [d for d, _ in result.negatives["q1"]] == ["d4", "d6", "d3"]


def test_random_sampling_is_seeded_per_query():
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 1}}
    table = {f"doc {i}": -float(i) for i in range(12)}
    run = {"q1": ranked(*ALL), "q2": ranked(*ALL)}
    kwargs = {"num_negatives": 3, "range_max": 10, "sampling": "random"}
    a = mine_hard_negatives(toy(qrels=qrels), TableJudge(table), run, seed=1, **kwargs)
    b = mine_hard_negatives(toy(qrels=qrels), TableJudge(table), run, seed=1, **kwargs)
    alone = mine_hard_negatives(
        toy(qrels={"q2": {"d1": 1}}), TableJudge(table), run, seed=1, **kwargs
    )
    assert a.negatives == b.negatives
    assert alone.negatives["q2"] == a.negatives["q2"]  # independent of the other queries
    draws = {
        tuple(
            mine_hard_negatives(
                toy(qrels=qrels), TableJudge(table), run, seed=s, **kwargs
            ).negatives["q1"]
        )
        for s in range(6)
    }
    assert len(draws) > 1  # the seed matters
    for negatives in (a.negatives["q1"], a.negatives["q2"]):
        scores = [s for _, s in negatives]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_queries_without_positives_or_enough_negatives_are_counted():
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 0}}
    run = {"q1": ranked("d0", "d3", "d4")}
    result = mine_hard_negatives(
        toy(qrels=qrels), TableJudge({}), run, num_negatives=3, range_max=5, output_format="n-tuple"
    )
    s = result.summary
    assert (s.queries, s.queries_without_positives, s.short_queries, s.rows) == (1, 1, 1, 0)
    assert result.columns == {
        "anchor": [],
        "positive": [],
        "negative_1": [],
        "negative_2": [],
        "negative_3": [],
    }


def test_all_pairs_of_all_queries_go_through_one_score_pairs_call():
    qrels = {"q1": {"d0": 1, "d1": 1}, "q2": {"d2": 1}}
    judge = TableJudge({})
    run = {"q1": ranked(*ALL), "q2": ranked(*ALL)}
    result = mine_hard_negatives(toy(qrels=qrels), judge, run, num_negatives=2, range_max=4)
    assert judge.calls == 1
    assert judge.pairs_scored == result.summary.judge_pairs == (2 + 4) + (1 + 4)


# -- formats -------------------------------------------------------------------------------


def _st_columns(tiny_bi_encoder, output_format, output_scores):
    """Column names sentence-transformers' own mine_hard_negatives gives for a format."""
    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives as st_mine

    model = SentenceTransformer(tiny_bi_encoder, device="cpu")
    pairs = HFDataset.from_dict(
        {
            "anchor": ["wheat harvest", "stock prices"],
            "positive": ["grain and chaff", "market shares"],
        }
    )
    corpus = [f"filler text number {i}" for i in range(10)]
    out = st_mine(
        pairs,
        model,
        corpus=corpus,
        num_negatives=2,
        range_max=6,
        output_format=output_format,
        output_scores=output_scores,
        verbose=False,
        batch_size=8,
    )
    return out.column_names


@pytest.mark.parametrize(
    ("output_format", "scores"),
    [(f, s) for f in FORMATS if f != "n-tuple-scores" for s in (False, True)],
)
def test_columns_are_exactly_sentence_transformers(tiny_bi_encoder, output_format, scores):
    run = {"q1": ranked(*ALL)}
    result = mine_hard_negatives(
        toy(),
        TableJudge({}),
        run,
        num_negatives=2,
        range_max=6,
        output_format=output_format,
        output_scores=scores,
    )
    assert list(result.columns) == _st_columns(tiny_bi_encoder, output_format, scores)


def test_n_tuple_scores_is_n_tuple_with_scores():
    run = {"q1": ranked(*ALL)}
    a = mine_hard_negatives(
        toy(), TableJudge({}), run, num_negatives=2, output_format="n-tuple-scores"
    )
    b = mine_hard_negatives(
        toy(), TableJudge({}), run, num_negatives=2, output_format="n-tuple", output_scores=True
    )
    assert a.columns == b.columns and "scores" in a.columns


def test_rows_per_positive_as_sentence_transformers():
    """q1 has 2 positives and gets 2 negatives."""
    table = {"doc 0": 5.0, "doc 1": 4.0, "doc 2": 1.0, "doc 3": 0.5}
    run = {"q1": ranked(*ALL)}

    def mine(fmt, scores=False):
        return mine_hard_negatives(
            toy(),
            TableJudge(table),
            run,
            num_negatives=2,
            range_max=2,
            output_format=fmt,
            output_scores=scores,
        ).columns

    triplet = mine("triplet", True)
    assert list(zip(triplet["positive"], triplet["negative"])) == [
        ("doc 0", "doc 2"),
        ("doc 0", "doc 3"),
        ("doc 1", "doc 2"),
        ("doc 1", "doc 3"),
    ]
    assert triplet["scores"] == [[5.0, 1.0], [5.0, 0.5], [4.0, 1.0], [4.0, 0.5]]
    ntuple = mine("n-tuple", True)
    assert ntuple["positive"] == ["doc 0", "doc 1"] and ntuple["negative_2"] == ["doc 3", "doc 3"]
    assert ntuple["scores"] == [[5.0, 1.0, 0.5], [4.0, 1.0, 0.5]]
    pair = mine("labeled-pair")
    assert list(zip(pair["positive"], pair["label"])) == [
        ("doc 0", 1),
        ("doc 1", 1),
        ("doc 2", 0),
        ("doc 3", 0),
    ]
    assert mine("labeled-pair", True)["score"] == [5.0, 4.0, 1.0, 0.5]
    lists = mine("labeled-list")
    assert lists["positive"] == [["doc 0", "doc 2", "doc 3"], ["doc 1", "doc 2", "doc 3"]]
    assert lists["labels"] == [[1, 0, 0], [1, 0, 0]]
    assert mine("labeled-list", True)["scores"] == [[5.0, 1.0, 0.5], [4.0, 1.0, 0.5]]
    assert set(triplet["anchor"]) == {"first query"}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("output_format", ["n-tuple-scores", "labeled-list"])
def test_written_files_load_with_datasets(tmp_path, suffix, output_format):
    import datasets

    run = {"q1": ranked(*ALL)}
    out = tmp_path / f"mined{suffix}"
    table = {f"doc {i}": -float(i) for i in range(12)}
    result = mine_hard_negatives(
        toy(), TableJudge(table), run, num_negatives=3, output_format=output_format, output=out
    )
    assert result.summary.output == str(out) and result.summary.rows == 2
    loaded = datasets.load_dataset(
        "json" if suffix == ".jsonl" else "parquet",
        data_files=str(out),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert loaded.column_names == list(result.columns)
    assert loaded.to_dict() == result.columns
    assert result.to_dataset().to_dict() == result.columns


# -- judge cache ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory):
    """A 40-document, 8-query BEIR collection (4 topics), 4 positives per query."""
    topics = {
        "grain": "wheat grain chaff threshing winnowing harvest barley",
        "market": "stock market shares trading prices investors bonds",
        "search": "search engine ranking documents queries retrieval index",
        "ocean": "ocean waves tides currents salt water coral",
    }
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("beir") / "tiny"
    (root / "qrels").mkdir(parents=True)
    docs, rows, queries = [], [], []
    for t, (topic, words) in enumerate(topics.items()):
        vocab = words.split()
        for i in range(10):
            text = " ".join(rng.choice(vocab) for _ in range(8 + 2 * i))
            docs.append({"_id": f"{topic}{i}", "title": f"{topic} {i}", "text": text})
        for j in range(2):
            qid = f"q{2 * t + j}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(vocab, 3))})
            rows += [f"{qid}\t{topic}{i}\t{rng.randint(1, 2)}" for i in rng.sample(range(10), 4)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n"
    )
    return root


def _count_model_pairs(monkeypatch, reranker) -> list[int]:
    """Pairs that reach the model's ``_score`` from now on (the real ``_score`` still runs)."""
    seen: list[int] = []
    real = reranker._score

    def spy(pairs):
        seen.append(len(pairs))
        return real(pairs)

    monkeypatch.setattr(reranker, "_score", spy)
    return seen


def test_second_run_with_other_thresholds_costs_no_model_call(
    beir_folder, tiny_bert, tmp_path, monkeypatch
):
    dataset = load_dataset(beir_folder, split="train@0.5")
    judge = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    seen = _count_model_pairs(monkeypatch, judge)
    cache = tmp_path / "cache"
    first = mine_hard_negatives(
        dataset, judge, "bm25", num_negatives=3, range_max=20, cache_dir=cache, output_scores=True
    )
    assert sum(seen) == first.summary.judge_pairs == first.summary.judge_scored > 0
    seen.clear()
    second = mine_hard_negatives(
        dataset,
        judge,
        "bm25",
        num_negatives=2,
        range_max=10,
        absolute_margin=0.0,
        cache_dir=cache,
        output_scores=True,
    )
    assert seen == []  # no pair reached the model
    assert second.summary.judge_scored == 0
    assert second.summary.judge_cached == second.summary.judge_pairs > 0
    # cached scores are exactly the model's: same positive scores, and the negatives of the
    # second run are a re-filtering of the first run's scores
    assert second.positive_scores == first.positive_scores
    fresh = judge.score_pairs(
        [
            (dataset.queries[q], dataset.corpus[d].full_text)
            for q, ds in second.negatives.items()
            for d, _ in ds
        ]
    )
    assert [s for ds in second.negatives.values() for _, s in ds] == pytest.approx(
        [float(x) for x in fresh], rel=1e-5, abs=1e-6
    )


def test_cache_key_is_the_texts_not_the_ids(tiny_bert, tmp_path, monkeypatch):
    judge = winnow.load_reranker(tiny_bert, "cross-encoder", device="cpu")
    seen = _count_model_pairs(monkeypatch, judge)
    run = {"q1": ranked(*ALL)}
    mine_hard_negatives(toy(), judge, run, num_negatives=2, cache_dir=tmp_path)
    seen.clear()
    changed = toy()
    corpus = dict(changed.corpus)
    corpus["d3"] = Document("d3", "a changed text")
    changed = Dataset("toy", corpus, changed.queries, changed.qrels)
    result = mine_hard_negatives(changed, judge, run, num_negatives=2, cache_dir=tmp_path)
    assert seen == [1] and result.summary.judge_scored == 1  # only the changed pair


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_negatives": 0}, "num_negatives must be an integer >= 1"),
        ({"relative_margin": 1.0}, "relative_margin must be in [0, 1)"),
        ({"relative_margin": -0.1}, "relative_margin must be in [0, 1)"),
        ({"absolute_margin": -1.0}, "absolute_margin must be >= 0"),
        ({"max_score": float("nan")}, "max_score must be a finite number"),
        ({"min_score": 3.0, "max_score": 1.0}, "min_score (3.0) is above max_score (1.0)"),
        ({"range_min": 5, "range_max": 5}, "range_max (5) must be above range_min (5)"),
        ({"num_negatives": 5, "range_max": 3}, "num_negatives=5 does not fit"),
        ({"sampling": "best"}, "sampling 'best' is not one of top, random"),
        ({"output_format": "pairs"}, "output format 'pairs' is not one of"),
        ({"output": "x.csv"}, "the suffix must be one of .jsonl, .json, .parquet"),
    ],
)
def test_bad_settings_are_refused_before_any_work(options, message):
    judge = TableJudge({})
    with pytest.raises(ConfigError) as err:
        mine_hard_negatives(toy(), judge, "bm25", **options)
    assert message in str(err.value)
    assert judge.calls == 0


def test_unwritable_output_is_refused_before_the_judge_loads(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        mine_hard_negatives(
            toy(), str(tmp_path / "no-model"), "bm25", output=tmp_path / "file" / "out.jsonl"
        )
    with pytest.raises(ConfigError, match="is a folder"):
        mine_hard_negatives(toy(), str(tmp_path / "no-model"), "bm25", output=tmp_path)


def test_judge_that_cannot_load_and_unknown_system(tmp_path):
    with pytest.raises(ModelLoadError, match=r"judge .*no-model.* cannot be loaded"):
        mine_hard_negatives(toy(), str(tmp_path / "no-model"), "bm25")
    with pytest.raises(ConfigError, match="unknown name 'bm26'"):
        mine_hard_negatives(toy(), TableJudge({}), "bm26")
    with pytest.raises(ConfigError, match="only encode an order"):
        mine_hard_negatives(toy(), RankOnlyJudge({}), "bm25")


# -- CLI -----------------------------------------------------------------------------------


def test_cli_mine_writes_training_data_and_a_summary(beir_folder, tiny_bert, tmp_path, capsys):
    import datasets

    out = tmp_path / "negatives.jsonl"
    args = [
        "mine",
        "--dataset",
        str(beir_folder),
        "--split",
        "train@0.5",
        "--candidates",
        "bm25",
        "--judge",
        f"cross-encoder:{tiny_bert}",
        "--num-negatives",
        "2",
        "--range-max",
        "8",
        "--format",
        "n-tuple",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == set(MiningSummary("x").as_dict())
    assert summary["queries"] == 4 and summary["judge_scored"] > 0
    assert set(summary["seconds"]) == {"retrieve", "judge", "filter", "write"}
    loaded = datasets.load_dataset(
        "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert loaded.num_rows == summary["rows"] == 4 * 4  # 4 queries x 4 positives
    train_queries = set(load_dataset(beir_folder, split="train@0.5").queries.values())
    assert set(loaded["anchor"]) == train_queries  # only the train part's queries
    # a stricter filter over the same window: every score comes from the cache
    assert main([*args, "--relative-margin", "0.05"]) == 0
    printed = capsys.readouterr().out
    assert "0 scored by the model" in printed and "queries without enough negatives" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-negatives", "0"], "--num-negatives must be an integer >= 1"),
        (["--relative-margin", "2"], "--relative-margin must be in [0, 1)"),
        (["--range-min", "4", "--range-max", "2"], "--range-max (2) must be above --range-min (4)"),
        (["--output", "out.txt"], "--output 'out.txt': the suffix must be one of"),
        (["--candidates", "bm26"], "--candidates: system spec 'bm26'"),
        (["--split", "train@1.5"], "--split: split 'train@1.5'"),
        (["--judge", "/no/such/model"], "--judge: judge '/no/such/model' cannot be loaded"),
    ],
)
def test_cli_mine_errors_name_the_option(beir_folder, tmp_path, capsys, extra, message):
    args = [
        "mine",
        "--dataset",
        str(beir_folder),
        "--split",
        "train@0.5",
        "--judge",
        "/no/such/model",
        "--output",
        str(tmp_path / "o.jsonl"),
        "--cache-dir",
        str(tmp_path / "c"),
        *extra,
    ]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_importing_winnow_training_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, winnow, winnow.training; "
        "assert winnow.training.__all__; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'winnow.training.mining' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
