"""The CLI on bad models and bad run files: one clean error line (exit 2) naming the file, never a
traceback."""

from __future__ import annotations

import shutil

import pytest

from test_data_beir import write_beir
from winnow.cli import main

CORPUS = [{"_id": f"d{i}", "text": f"wing lift drag number {i}"} for i in range(6)]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "drag"}]
QRELS = "q1 0 d1 1\nq2 0 d2 1\n"


@pytest.fixture
def collection(tmp_path):
    return write_beir(tmp_path / "toy", corpus=CORPUS, queries=QUERIES, qrels=QRELS)


def damaged_copy(model: str, dest, how: str):
    """A copy of ``model`` whose ``model.safetensors`` is truncated or has a garbled header."""
    shutil.copytree(model, dest)
    weights = dest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:
        data[10:40] = b"\xff\x00garbage" * 3
    weights.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_score_with_damaged_weights_names_the_file(tiny_bert, tmp_path, how, capsys):
    bad = damaged_copy(tiny_bert, tmp_path / "bad", how)
    assert main(["score", "--model", str(bad), "--device", "cpu", "q", "a doc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("winnow score: error: cannot load cross-encoder model")
    assert f"damaged file {bad / 'model.safetensors'}: Error while deserializing header" in err
    assert "Traceback" not in err


def test_eval_with_damaged_dense_or_reranker_weights(
    tiny_bi_encoder, tiny_bert, collection, tmp_path, capsys
):
    bad_bi = damaged_copy(tiny_bi_encoder, tmp_path / "bad-bi", "truncated")
    bad_ce = damaged_copy(tiny_bert, tmp_path / "bad-ce", "garbled")
    common = ["eval", "--dataset", str(collection), "--no-cache", "--device", "cpu"]
    assert main([*common, "--systems", "bm25,dense", "--dense-model", str(bad_bi)]) == 2
    err = capsys.readouterr().err
    assert f"cannot load bi-encoder model {str(bad_bi)!r}: damaged file" in err
    systems = ["--systems", "bm25,bm25+rerank", "--reranker", f"cross-encoder:{bad_ce}"]
    assert main([*common, *systems]) == 2
    err = capsys.readouterr().err
    assert f"damaged file {bad_ce / 'model.safetensors'}" in err


def test_rerank_with_damaged_weights(tiny_bert, collection, tmp_path, capsys):
    bad = damaged_copy(tiny_bert, tmp_path / "bad", "truncated")
    run = tmp_path / "in.trec"
    run.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\n")
    args = ["rerank", "--dataset", str(collection), "--run", str(run), "--no-cache"]
    code = main([*args, "--model", f"cross-encoder:{bad}", "--output", str(tmp_path / "o.trec")])
    assert code == 2
    assert f"damaged file {bad / 'model.safetensors'}" in capsys.readouterr().err
    assert not (tmp_path / "o.trec").exists()


def test_model_with_broken_json_names_the_file(tiny_bert, tmp_path, capsys):
    for name in ("config.json", "tokenizer.json"):
        bad = tmp_path / name
        shutil.copytree(tiny_bert, bad)
        (bad / name).write_text('{"oops')
        assert main(["score", "--model", str(bad), "--kind", "cross-encoder", "q", "d"]) == 2
        err = capsys.readouterr().err
        assert str(bad / name) in err and "Traceback" not in err
        assert main(["score", "--model", str(bad), "q", "d"]) == 2  # kind inferred from config
        assert str(bad / name) in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_rerank_refuses_an_empty_run_file(collection, tmp_path, text, capsys):
    run = tmp_path / "empty.trec"
    run.write_text(text)
    out = tmp_path / "out.trec"
    args = ["rerank", "--dataset", str(collection), "--run", str(run), "--model", "unused"]
    assert main([*args, "--output", str(out), "--no-cache"]) == 2
    assert f"{run}: the run file holds no lines: nothing to rerank" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (["q1 Q0 d1 1 2.0 x", "", "q7 Q0 d1 1 1.0 x"], 3, "query 'q7' is not a query"),
        (["q1 Q0 d1 1 2.0 x", "q2 Q0 d1 1 2.0 x", "q2 Q0 zz 2 1.0 x"], 3, "document 'zz'"),
    ],
)
def test_rerank_unknown_ids_name_file_and_line(collection, tmp_path, lines, line, message, capsys):
    run = tmp_path / "in.trec"
    run.write_text("\n".join(lines) + "\n")
    args = ["rerank", "--dataset", str(collection), "--run", str(run), "--model", "unused"]
    assert main([*args, "--output", str(tmp_path / "o.trec"), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert f"{run}:{line}: {message}" in err


def _stdin(monkeypatch, data: bytes) -> None:
    """stdin as Python opens it on a UTF-8 terminal: bytes that are not UTF-8 become surrogates."""
    import io
    import sys

    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stream)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["q", "doc \udcff"],
            b"",
            "document argument 1 is not valid UTF-8 (byte 0xff at character 4)",
        ),
        (["q\udce9"], b"doc\n", "QUERY is not valid UTF-8 (byte 0xe9 at character 1)"),
        (["q"], b"good doc\n\n\xff\xfe bad\n", "stdin line 3 is not valid UTF-8 (byte 0xff"),
        (["q"], b"\n  \n", "no documents to rank"),
        (["--top-k", "0", "q", "d"], b"", "--top-k must be >= 1, got 0"),
    ],
    ids=["argument", "query", "stdin", "no-documents", "top-k"],
)
def test_score_refuses_bad_text_before_the_model_sees_it(
    tiny_bert, monkeypatch, args, stdin, message, capsys
):
    _stdin(monkeypatch, stdin)
    assert main(["score", "--model", tiny_bert, "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert f"winnow score: error: {message}" in err and "Traceback" not in err


def test_score_reads_crlf_stdin(tiny_bert, monkeypatch, capsys):
    import json

    _stdin(monkeypatch, b"wing lift\r\nheat\r\n")
    assert main(["score", "--model", tiny_bert, "--device", "cpu", "--json", "q"]) == 0
    assert sorted(h["document"] for h in json.loads(capsys.readouterr().out)) == [
        "heat",
        "wing lift",
    ]


def test_output_into_a_closed_pipe_exits_quietly(tiny_bert):
    """`winnow score ... | head -1`: the reader leaves early; no error message, no traceback."""
    import subprocess
    import sys

    # 1000 lines of ~125 characters: about twice what a pipe buffers
    docs = "".join(f"document number {i} {'word ' * 20}\n" for i in range(1000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "winnow.cli", "score", "--model", tiny_bert, "--device", "cpu", "q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    proc.stdin.write(docs.encode())
    proc.stdin.close()
    assert proc.stdout.readline().strip().startswith(b"1 ")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert "Broken pipe" not in err and "Traceback" not in err
