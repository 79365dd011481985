"""CLI rough edges: no Hugging Face progress bars off a terminal or with --no-progress, --model /
--reranker accepted by every command that takes a reranker, --aggregate choices, the report extra
checked before any work, and py.typed shipped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_data_beir import write_beir
from winnow.cli import build_parser, main

CORPUS = [{"_id": f"d{i}", "text": f"wing lift drag number {i}"} for i in range(6)]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "drag"}]
QRELS = "q1 0 d1 1\nq2 0 d2 1\n"


@pytest.fixture
def collection(tmp_path):
    return write_beir(tmp_path / "toy", corpus=CORPUS, queries=QUERIES, qrels=QRELS)


def _env():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    return env


def test_no_loading_weights_bars_when_stderr_is_not_a_terminal(tiny_bert):
    # before: transformers' "Loading weights: 100%|...| 41/41" bar reached a redirected stderr
    cmd = [sys.executable, "-m", "winnow.cli", "score", "--model", tiny_bert, "q", "a doc"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Loading weights" not in out.stderr
    assert out.stdout.strip()


def test_no_progress_silences_the_bars_on_a_terminal(tiny_bert, collection, tmp_path):
    import pty

    run = tmp_path / "in.trec"
    run.write_text("".join(f"q1 Q0 d{i} {i + 1} {10 - i} bm25\n" for i in range(6)))

    def stderr_on_a_tty(*flags):
        master, slave = pty.openpty()
        cmd = [sys.executable, "-m", "winnow.cli", "rerank", "--dataset", str(collection)]
        cmd += ["--run", str(run), "--model", tiny_bert, "--output", str(tmp_path / "o.trec")]
        proc = subprocess.Popen(
            [*cmd, "--no-cache", *flags], stderr=slave, stdout=subprocess.DEVNULL, env=_env()
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(timeout=300) == 0
        return b"".join(chunks).decode(errors="replace")

    assert "Loading weights" in stderr_on_a_tty()  # a person at a terminal sees the bar
    assert "Loading weights" not in stderr_on_a_tty("--no-progress")


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--dataset", "d", "--model", "X"],
        ["eval", "--dataset", "d", "--reranker", "X"],
        ["rerank", "--dataset", "d", "--run", "r", "--output", "o", "--reranker", "X"],
        ["rerank", "--dataset", "d", "--run", "r", "--output", "o", "--model", "X"],
        ["score", "--reranker", "X", "q"],
        ["score", "--model", "X", "q"],
    ],
)
def test_model_and_reranker_flags_are_one_flag(argv):
    args = build_parser().parse_args(argv)
    assert (args.reranker if argv[0] == "eval" else args.model) == "X"


def test_rerank_help_describes_its_own_model_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rerank", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the reranker that re-scores the run" in text
    assert "'+rerank' systems" not in text  # that was eval's help


def test_aggregate_has_choices_and_they_match_the_code(capsys):
    from winnow.rerankers.chunking import AGGREGATIONS as CODE
    from winnow.rerankers.commands import AGGREGATIONS

    assert AGGREGATIONS == CODE
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["rerank", "--run", "r", "--output", "o", "--aggregate", "median"]
        )
    assert "invalid choice: 'median'" in capsys.readouterr().err


def test_eval_without_the_report_extra_fails_before_any_work(
    collection, tmp_path, monkeypatch, capsys
):
    # before: every system ran, then the plot failed (exit 2, nothing written)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as when it is not installed
    out = tmp_path / "out"
    code = main(["eval", "--dataset", str(collection), "--systems", "bm25", "--no-cache",
                 "--output", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'winnow[report]'" in err
    assert not (out / "metrics.json").exists() and not (out / "runs").exists()
    # not even the dataset is read: a missing one is not what the error is about
    code = main(["eval", "--dataset", str(tmp_path / "missing"), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "winnow[report]" in err and "not found" not in err
    # --no-plot needs no matplotlib: the rest is written
    assert main(["eval", "--dataset", str(collection), "--systems", "bm25", "--no-cache",
                 "--output", str(out), "--no-plot"]) == 0  # fmt: skip
    assert (out / "metrics.json").is_file()


def test_package_ships_py_typed():
    from importlib.resources import files

    assert files("winnow").joinpath("py.typed").is_file()
