"""Collections that used to pass ``winnow data check`` and then crash a stage: each is refused at
load (or by the stage) with an error naming the file, line and field."""

from __future__ import annotations

import json
import logging

import pytest

from test_data_beir import write_beir
from winnow.cli import main
from winnow.data import load_beir, read_qrels, read_run
from winnow.errors import DatasetError
from winnow.retrieval import BM25Index
from winnow.types import Document


@pytest.mark.parametrize(
    ("file", "text", "line", "field"),
    [
        ("corpus", '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "ok \\ud800"}\n', 2, "text"),
        ("corpus", '{"_id": "d1", "title": "\\udfff x", "text": "a"}\n', 1, "title"),
        ("corpus", '{"_id": "d\\ud83d", "text": "a"}\n', 1, "_id"),
        (
            "queries",
            '{"_id": "q1", "text": "wing"}\n\n{"_id": "q2", "text": "\\uDC00"}\n',
            3,
            "text",
        ),
    ],
)
def test_lone_surrogate_is_refused_naming_file_line_and_field(tmp_path, file, text, line, field):
    root = write_beir(tmp_path / "t", **{file: text})
    with pytest.raises(DatasetError) as info:
        load_beir(root)
    assert info.value.path == str(root / f"{file}.jsonl") and info.value.line == line
    assert f'"{field}" holds a lone surrogate' in str(info.value)


def test_surrogate_pair_is_a_character_and_loads(tmp_path):
    corpus = '{"_id": "d1", "text": "smile \\ud83d\\ude00"}\n{"_id": "d2", "text": "a \\\\ud800"}\n'
    ds = load_beir(write_beir(tmp_path / "t", corpus=corpus, qrels="q1 0 d1 1\n"))
    assert ds.corpus["d1"].text == "smile \U0001f600"
    assert ds.corpus["d2"].text == "a \\ud800"  # an escaped backslash, not an escape


def test_cli_check_refuses_a_surrogate(tmp_path, capsys):
    root = write_beir(tmp_path / "t", corpus='{"_id": "d1", "text": "x \\ud800"}\n')
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert f'{root / "corpus.jsonl"}:1: "text" holds a lone surrogate' in err


@pytest.mark.parametrize("reader", [read_run, read_qrels])
def test_encoded_surrogate_in_trec_files_is_invalid_utf8(tmp_path, reader):
    path = tmp_path / "f.txt"
    good = b"q1 Q0 d1 1 1.0 x\n" if reader is read_run else b"q1 0 d1 1\n"
    path.write_bytes(good + good.replace(b"d1", b"d\xed\xa0\x80"))
    with pytest.raises(DatasetError, match="not valid UTF-8") as info:
        reader(path)
    assert info.value.line == 2


@pytest.mark.parametrize(
    "qrels", ["", "\n\n", "query-id\tcorpus-id\tscore\n", "query-id\tcorpus-id\tscore\n\n"]
)
def test_empty_or_header_only_qrels_is_an_error(tmp_path, qrels, capsys):
    root = write_beir(tmp_path / "t", qrels=qrels)
    with pytest.raises(DatasetError, match="no judgments") as info:
        load_beir(root)
    assert info.value.path == str(root / "qrels" / "test.tsv")
    assert main(["data", "check", str(root)]) == 2
    assert f"{root / 'qrels' / 'test.tsv'}: the qrels file has no judgments" in (
        capsys.readouterr().err
    )


def test_qrels_with_only_unknown_ids_dropped_is_an_error(tmp_path):
    root = write_beir(tmp_path / "t", qrels="q9 0 d1 1\nq1 0 d9 1\n")
    with pytest.raises(DatasetError, match="all 2 judgment"):
        load_beir(root, unknown_ids="drop")


EMPTY = [{"_id": "d1", "title": "", "text": ""}, {"_id": "d2", "title": " ", "text": "\t "}]


def test_check_refuses_a_corpus_of_empty_documents(tmp_path, capsys):
    root = write_beir(tmp_path / "t", corpus=EMPTY, qrels="q1 0 d1 1\n")
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'corpus.jsonl'}: all 2 documents are empty" in err


def test_check_warns_about_some_empty_documents(tmp_path, capsys, caplog):
    corpus = [*EMPTY, {"_id": "d3", "title": "  ", "text": "wing"}]
    root = write_beir(tmp_path / "t", corpus=corpus, qrels="q1 0 d1 1\n")
    with caplog.at_level(logging.WARNING, logger="winnow.data.commands"):
        assert main(["data", "check", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["empty_documents"] == 2  # d3 has text
    assert "2 of 3 documents are empty" in caplog.text


@pytest.mark.parametrize(
    "texts",
    [["", "  "], ["the of and", "a is"], ["", "it was the", "x y z"]],
    ids=["empty", "stopwords", "mixed"],
)
def test_bm25_without_any_indexable_term_is_a_clear_error(texts):
    corpus = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}
    with pytest.raises(DatasetError, match="no document has any indexable term"):
        BM25Index().index(corpus)


def test_eval_on_stopword_only_corpus_is_a_clear_error(tmp_path, capsys):
    corpus = [{"_id": "d1", "text": "the of"}, {"_id": "d2", "text": "and it was"}]
    root = write_beir(tmp_path / "t", corpus=corpus, qrels="q1 0 d1 1\n")
    assert main(["eval", "--dataset", str(root), "--systems", "bm25", "--no-cache"]) == 2
    assert "no document has any indexable term" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (
            '{"_id": ' + "9" * 5000 + ', "text": "x"}',
            "invalid JSON (Exceeds the limit (4300 digits)",
        ),
        ('{"_id": "d9", "text": "x", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
    ],
    ids=["huge-int-id", "deep-nesting"],
)
def test_json_that_python_cannot_decode_names_the_line(tmp_path, line, fragment):
    corpus = '{"_id": "d1", "text": "a"}\n' + line + "\n"
    root = write_beir(tmp_path / "t", corpus=corpus, qrels="q1 0 d1 1\n")
    with pytest.raises(DatasetError, match="invalid JSON") as info:
        load_beir(root)
    assert info.value.line == 2 and fragment in str(info.value)


@pytest.mark.parametrize("grade", [2**31, -(2**31) - 1, 10**20])
def test_relevance_beyond_32_bits_is_refused(tmp_path, grade, capsys):
    qrels = f"q1 0 d1 1\nq1 0 d2 {grade}\n"
    path = tmp_path / "q.txt"
    path.write_text(qrels)
    with pytest.raises(DatasetError, match="out of range") as info:
        read_qrels(path)
    assert info.value.line == 2
    root = write_beir(tmp_path / "t", qrels=qrels)
    assert main(["eval", "--dataset", str(root), "--systems", "bm25", "--no-cache"]) == 2
    assert "test.tsv:2: relevance" in capsys.readouterr().err


def test_relevance_at_the_32_bit_limits_is_accepted(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(f"q1 0 d1 {2**31 - 1}\nq1 0 d2 {-(2**31)}\n")
    assert read_qrels(path) == {"q1": {"d1": 2**31 - 1, "d2": -(2**31)}}


def test_check_warns_about_queries_without_relevant_documents(tmp_path, caplog):
    root = write_beir(tmp_path / "t", qrels="q1 0 d1 0\nq2 0 d2 -1\nq2 0 d1 0\nq3 0 d3 1\n")
    with caplog.at_level(logging.WARNING, logger="winnow.data.commands"):
        assert main(["data", "check", str(root)]) == 0
    assert "2 of 3 judged queries have no relevant document" in caplog.text
    assert "q1, q2" in caplog.text
