"""TREC runs and qrels: exact round trips, canonical ordering, atomic writes, errors with file:line."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest

from winnow.data import read_qrels, read_run, write_qrels, write_run
from winnow.errors import DatasetError, InputError


def test_run_round_trip_is_exact(tmp_path):
    run = {
        "q1": {"d1": 0.1 + 0.2, "d2": float(np.float32(1 / 3)), "d3": -2.5e-17},
        "10": {"a": 1e300, "b": 0.0},
        "2": {"x": 7.0},
    }
    path = tmp_path / "run.trec"
    write_run(run, path)
    assert read_run(path) == run


def test_run_ranks_by_score_then_doc_id(tmp_path):
    path = tmp_path / "run.trec"
    write_run(
        {"q": {"b": 1.0, "a": 1.0, "c": 3.0, "d": -1.0}, "10": {"z": 1}, "2": {"y": 1}},
        path,
        tag="bm25",
    )
    lines = [line.split() for line in path.read_text().splitlines()]
    assert [(f[0], f[2], f[3]) for f in lines] == [
        ("2", "y", "1"),
        ("10", "z", "1"),
        ("q", "c", "1"),
        ("q", "a", "2"),
        ("q", "b", "3"),
        ("q", "d", "4"),
    ]
    assert {f[1] for f in lines} == {"Q0"} and {f[5] for f in lines} == {"bm25"}


def test_run_written_by_us_reads_in_ir_measures(tmp_path):
    path = tmp_path / "run.trec"
    run = {"q1": {"d1": 2.0, "d2": 1.0}}
    write_run(run, path)
    got = {(r.query_id, r.doc_id): r.score for r in ir_measures.read_trec_run(str(path))}
    assert got == {("q1", "d1"): 2.0, ("q1", "d2"): 1.0}


def test_write_run_is_atomic(tmp_path):
    path = tmp_path / "run.trec"
    write_run({"q": {"d": 1.0}}, path)
    before = path.read_text()
    with pytest.raises(InputError, match="NaN"):
        write_run({"q": {"d": 1.0, "e": float("nan")}}, path)
    assert path.read_text() == before  # old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]  # no temp file left


@pytest.mark.parametrize(
    ("run", "tag"),
    [({"q 1": {"d": 1.0}}, "t"), ({"q": {"": 1.0}}, "t"), ({"q": {"d": 1.0}}, "my tag")],
)
def test_write_run_rejects_ids_with_whitespace(tmp_path, run, tag):
    with pytest.raises(InputError, match="whitespace"):
        write_run(run, tmp_path / "r", tag=tag)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
        ("q1 Q0 d1 1 high t\n", 1, "score must be a number"),
        ("q1 Q0 d1 first 1.0 t\n", 1, "rank must be an integer"),
        ("q1 Q0 d1 1 nan t\n", 1, "NaN"),
        (
            "q1 Q0 d1 1 2.0 t\n\nq1 Q0 d1 2 1.0 t\n",
            3,
            "appears twice for query 'q1' (first on line 1)",
        ),
    ],
)
def test_read_run_errors(tmp_path, text, line, fragment):
    path = tmp_path / "bad.run"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_run(path)
    assert info.value.line == line and info.value.path == str(path)
    assert fragment in str(info.value) and f"bad.run:{line}:" in str(info.value)


def test_read_run_accepts_tabs_and_same_doc_in_other_queries(tmp_path):
    path = tmp_path / "r"
    path.write_text("q1\tQ0\td1\t1\t2\tt\nq2 Q0 d1 1 3.5 t\n")
    assert read_run(path) == {"q1": {"d1": 2.0}, "q2": {"d1": 3.5}}


def test_read_run_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_run(tmp_path / "nope")


def test_qrels_trec_and_beir_formats(tmp_path):
    trec, beir = tmp_path / "q.trec", tmp_path / "q.tsv"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\n\nq2 Q0 d3 -1\n")
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t-1\n")
    expected = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": -1}}
    assert read_qrels(trec) == expected
    assert read_qrels(beir) == expected


@pytest.mark.parametrize("fmt", ["trec", "beir"])
def test_qrels_round_trip(tmp_path, fmt):
    qrels = {"q10": {"d2": 1, "d10": 3}, "q2": {"x": 0}}
    path = tmp_path / "qrels"
    write_qrels(qrels, path, format=fmt)
    assert read_qrels(path) == qrels
    if fmt == "trec":  # cross-check with the reference reader
        ref = {(q.query_id, q.doc_id): q.relevance for q in ir_measures.read_trec_qrels(str(path))}
        assert ref == {(q, d): r for q, docs in qrels.items() for d, r in docs.items()}


def test_shared_qrels_match_ir_measures(shared_datasets, tmp_path):
    beir = read_qrels(shared_datasets / "cranfield" / "qrels" / "test.tsv")
    trec = tmp_path / "cranfield.qrels"
    write_qrels(beir, trec)
    ref: dict[str, dict[str, int]] = {}
    for q in ir_measures.read_trec_qrels(str(trec)):
        ref.setdefault(q.query_id, {})[q.doc_id] = q.relevance
    assert ref == beir and sum(map(len, beir.values())) == 1612


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 columns, got 3"),
        ("q1 0 d1 yes\n", 1, "relevance must be an integer"),
        ("q1 0 d1 1 extra stuff\n", 1, "expected 4 columns (TREC"),
        ("q1 0 d1 1\nq1 0 d1 2\n", 2, "conflicting judgment"),
        ("q1\td1\t1.5\nq1\td2\t1\n", 1, "relevance must be an integer"),  # not a header
    ],
)
def test_read_qrels_errors(tmp_path, text, line, fragment):
    path = tmp_path / "qrels"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_qrels(path)
    assert info.value.line == line and fragment in str(info.value)


def test_write_qrels_rejects_bad_values(tmp_path):
    with pytest.raises(InputError, match="integer"):
        write_qrels({"q": {"d": 1.5}}, tmp_path / "q")
    with pytest.raises(InputError, match="format"):
        write_qrels({"q": {"d": 1}}, tmp_path / "q", format="csv")
    assert not (tmp_path / "q").exists()
