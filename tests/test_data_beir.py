"""BEIR folders and load_dataset: valid input loads exactly; every malformation names file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from winnow.data import load_beir, load_dataset
from winnow.errors import ConfigError, DatasetError
from winnow.types import Document

CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift on a wing"},
    {"_id": "d2", "text": "boundary layer flow"},
    {"_id": "d3", "title": "", "text": "shock waves"},
]
QUERIES = [
    {"_id": "q1", "text": "wing lift"},
    {"_id": "q2", "text": "shock"},
    {"_id": "q3", "text": "x"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n"


def write_beir(root: Path, corpus=None, queries=None, qrels=QRELS, split="test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus or CORPUS), ("queries.jsonl", queries or QUERIES)):
        text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
        (root / name).write_text(text)
    (root / "qrels" / f"{split}.tsv").write_text(qrels)
    return root


def test_load_beir_reads_everything(tmp_path):
    ds = load_beir(write_beir(tmp_path / "toy"))
    assert ds.name == "toy"
    assert ds.corpus["d1"] == Document("d1", "lift on a wing", "Wings")
    assert ds.corpus["d2"].title == ""
    assert list(ds.corpus) == ["d1", "d2", "d3"]
    assert ds.queries == {"q1": "wing lift", "q2": "shock", "q3": "x"}
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert "q3" in ds.queries and "q3" not in ds.qrels  # unjudged queries are kept
    assert ds.source == str(tmp_path / "toy")


def test_integer_ids_and_blank_lines_accepted(tmp_path):
    corpus = '{"_id": 7, "text": "a"}\n\n{"_id": "8", "text": "b"}\n'
    ds = load_beir(write_beir(tmp_path / "t", corpus=corpus, qrels="q1 0 7 1\n"))
    assert list(ds.corpus) == ["7", "8"] and ds.qrels == {"q1": {"7": 1}}


def test_other_split(tmp_path):
    write_beir(tmp_path / "t", qrels="query-id\tcorpus-id\tscore\nq2\td1\t1\n", split="dev")
    assert load_beir(tmp_path / "t", split="dev").qrels == {"q2": {"d1": 1}}


@pytest.mark.parametrize(
    ("corpus", "line", "fragment"),
    [
        ('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"\n', 2, "invalid JSON"),
        ('{"_id": "d1", "text": "a"}\n{"text": "b"}\n', 2, '"_id"'),
        (
            '{"_id": "d1", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n',
            3,
            "duplicate document id 'd1' (first on line 1)",
        ),
        ('{"_id": "d1"}\n', 1, 'missing "text"'),
        ('{"_id": "d1", "text": 5}\n', 1, '"text" must be a string'),
        ('{"_id": "d 1", "text": "a"}\n', 1, "whitespace"),
        ('["d1", "a"]\n', 1, "expected a JSON object"),
        ('{"_id": true, "text": "a"}\n', 1, '"_id" must be a string'),
    ],
)
def test_malformed_corpus(tmp_path, corpus, line, fragment):
    root = write_beir(tmp_path / "t", corpus=corpus)
    with pytest.raises(DatasetError) as info:
        load_beir(root)
    assert info.value.path == str(root / "corpus.jsonl")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert f"corpus.jsonl:{line}:" in str(info.value)


def test_empty_corpus(tmp_path):
    root = write_beir(tmp_path / "t", corpus="\n")
    with pytest.raises(DatasetError, match="no documents"):
        load_beir(root)


def test_invalid_utf8_names_line(tmp_path):
    root = write_beir(tmp_path / "t")
    (root / "corpus.jsonl").write_bytes(
        b'{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "\xff"}\n'
    )
    with pytest.raises(DatasetError, match="UTF-8") as info:
        load_beir(root)
    assert info.value.line == 2


def test_duplicate_query(tmp_path):
    root = write_beir(
        tmp_path / "t", queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]
    )
    with pytest.raises(DatasetError, match="duplicate query id") as info:
        load_beir(root)
    assert info.value.path.endswith("queries.jsonl") and info.value.line == 2


@pytest.mark.parametrize(
    ("qrels", "line", "fragment"),
    [
        (
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n",
            3,
            "query id 'q9' is not in queries.jsonl",
        ),
        ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", 2, "document id 'd9' is not in corpus.jsonl"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, "expected 3 columns, got 2"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\textra\n", 2, "expected 3 columns, got 4"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", 2, "relevance must be an integer"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1.5\n", 2, "relevance must be an integer"),
        ("q1\td1\n", 1, "expected 4 columns"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n", 3, "conflicting judgment"),
    ],
)
def test_malformed_qrels(tmp_path, qrels, line, fragment):
    root = write_beir(tmp_path / "t", qrels=qrels)
    with pytest.raises(DatasetError) as info:
        load_beir(root)
    assert info.value.path == str(root / "qrels" / "test.tsv")
    assert info.value.line == line
    assert fragment in str(info.value)


def test_repeated_identical_judgment_is_kept_once(tmp_path, caplog):
    root = write_beir(tmp_path / "t", qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\n")
    assert load_beir(root).qrels == {"q1": {"d1": 1}}
    assert "repeated judgment" in caplog.text


def test_missing_files(tmp_path):
    root = write_beir(tmp_path / "t")
    with pytest.raises(DatasetError, match="available splits: test"):
        load_beir(root, split="dev")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"queries\.jsonl is missing"):
        load_beir(root)
    with pytest.raises(DatasetError, match="not found"):
        load_beir(tmp_path / "nothing")


def test_load_dataset_by_path_and_data_dir(tmp_path):
    write_beir(tmp_path / "b" / "toy")
    assert load_dataset(tmp_path / "b" / "toy").name == "toy"
    data_dir = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    ds = load_dataset("toy", data_dir=data_dir, download=False)
    assert ds.name == "toy" and len(ds.corpus) == 3


def test_load_dataset_unknown_lists_where_it_looked(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("nosuch", data_dir=str(tmp_path / "a"), cache_dir=tmp_path / "c")
    message = str(info.value)
    assert str(tmp_path / "a" / "nosuch") in message
    assert str(tmp_path / "c" / "nosuch") in message
    assert "scifact" in message  # names that can be downloaded
    with pytest.raises(DatasetError, match="downloads disabled"):
        load_dataset("scifact", cache_dir=tmp_path / "c", download=False)


def test_shared_datasets_load(shared_datasets):
    for name, docs, queries in (("cranfield", 1400, 225), ("cisi", 1460, 76), ("adi", 82, 35)):
        ds = load_dataset(name, data_dir=str(shared_datasets), download=False)
        assert (len(ds.corpus), len(ds.queries)) == (docs, queries)
        assert set(ds.qrels) <= set(ds.queries)


def test_cli_check_and_list(tmp_path, capsys, monkeypatch):
    from winnow.cli import main

    write_beir(tmp_path / "data" / "toy")
    monkeypatch.setenv("WINNOW_DATA", str(tmp_path / "data"))
    assert main(["data", "check", "toy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "name": "toy",
        "source": str(tmp_path / "data" / "toy"),
        "split": "test",
        "documents": 3,
        "queries": 3,
        "judged_queries": 2,
        "judgments": 3,
        "relevance": {"0": 1, "1": 1, "2": 1},
        "empty_documents": 0,
    }
    assert main(["data", "list", "--json", "--cache-dir", str(tmp_path / "cache")]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert (
        listing["local"] == {"toy": str(tmp_path / "data" / "toy")}
        and "scifact" in listing["public"]
    )
    (tmp_path / "data" / "toy" / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{oops\n')
    assert main(["data", "check", "toy"]) == 2
    assert "corpus.jsonl:2: invalid JSON" in capsys.readouterr().err


def test_unknown_ids_can_be_dropped_with_a_warning(tmp_path, caplog):
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq2\td9\t1\n"
    root = write_beir(tmp_path / "t", qrels=qrels)
    ds = load_dataset(root, unknown_ids="drop")
    assert ds.qrels == {"q1": {"d1": 1}}
    assert "dropped 2 judgment(s)" in caplog.text and "lines 3, 4" in caplog.text
    with pytest.raises(ConfigError, match="unknown_ids"):
        load_beir(root, unknown_ids="ignore")
