"""The README's "first five minutes", each snippet taken from README.md and run as written (on the
shared collections, with all-MiniLM-L6-v2 where the README names it): a reranker, a pipeline on a
collection with search, an evaluation, the server, one integration."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## First five minutes"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    """(language, code) of each fenced block of the section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return [(m[1], m[2]) for m in FENCE.finditer(text[start:end])]


def python_snippets() -> list[str]:
    return [code for lang, code in snippets() if lang == "python"]


@pytest.fixture
def data(shared_datasets, monkeypatch):
    monkeypatch.setenv("WINNOW_DATA", str(shared_datasets))  # as the README's `export` does
    return shared_datasets


def run_snippet(code: str) -> dict:
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"{README}:{SECTION}", "exec"), namespace)
    return namespace


def test_the_section_has_the_five_snippets():
    langs = [lang for lang, _ in snippets()]
    assert langs == ["python", "python", "python", "bash", "python", "python"]
    assert "import winnow" in python_snippets()[0]
    assert ".bind(" in python_snippets()[1] and ".search(" in python_snippets()[1]
    assert "experiment(" in python_snippets()[2]
    assert "/v1/rerank" in python_snippets()[3]
    assert "winnow.integrations" in python_snippets()[4]


def test_1_a_reranker(capsys):
    ns = run_snippet(python_snippets()[0])
    assert ns["hits"][0].id == "b" and ns["hits"][0].metadata == {"p": 3}
    printed = capsys.readouterr().out.split()
    assert printed[0] == "b" and printed[2:] == ["{'p':", "3}"]


def test_2_a_pipeline_on_a_collection(data, capsys):
    ns = run_snippet(python_snippets()[1])
    run = ns["run"]
    assert set(run) == {"1", "2"} and all(len(r) == 10 for r in run.values())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert [line.split()[1] for line in lines] == [
        h.doc_id for h in ns["pipe"].search("boundary layer on a flat plate", top_k=3)
    ]


def test_3_an_evaluation(data):
    ns = run_snippet(python_snippets()[2])
    comparison = ns["result"].comparison
    assert set(comparison.means) == {"bm25", "bm25+bo1"}
    assert comparison.means["bm25"]["nDCG@10"] == pytest.approx(0.3730, abs=5e-5)  # SOURCE.md
    assert {"delta", "p", "p_adjusted"} <= set(comparison.tests["bm25+bo1"]["nDCG@10"])


def test_4_the_server(capsys):
    """The README's `winnow serve` line, parsed by the real command line and served on a free
    port; the request snippet runs against it (the README's port 8000 replaced by that port)."""
    from winnow.cli import build_parser
    from winnow.server.commands import build_config
    from winnow.server.testing import running_server

    [command] = [code for lang, code in snippets() if lang == "bash"]
    argv = shlex.split(command)
    assert argv[:2] == ["winnow", "serve"]
    args = build_parser().parse_args(argv[1:])
    config = build_config(args, {})
    assert args.port == 8000 and [m.model for m in config.models] == [
        "sentence-transformers/all-MiniLM-L6-v2"
    ]
    code = python_snippets()[3]
    assert "http://127.0.0.1:8000" in code
    with running_server(config) as server:
        ns = run_snippet(code.replace("http://127.0.0.1:8000", server.url))
    reply = ns["reply"]
    assert reply.status_code == 200 and reply.json()["results"][0]["index"] == 1
    assert "'index': 1" in capsys.readouterr().out


def test_5_an_integration():
    ns = run_snippet(python_snippets()[4])
    best = ns["best"]
    assert best[0].page_content == "Wings make lift." and best[0].metadata["n"] == 2
    assert "relevance_score" in best[0].metadata
