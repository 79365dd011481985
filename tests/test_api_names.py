"""One name per thing: the retrieval indexes vs. the pipeline stages, the default model written
once, ``winnow rerank`` beside ``winnow score``."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import winnow
from winnow.defaults import DEFAULT_MODEL, DEFAULT_RERANKER


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("winnow.retrieval", "BM25", "BM25Index"),
        ("winnow.retrieval", "Dense", "DenseIndex"),
        ("winnow.retrieval.bm25", "BM25", "BM25Index"),
        ("winnow.retrieval.dense", "Dense", "DenseIndex"),
        ("winnow.retrieval.colbert", "ColBERT", "ColBERTIndex"),
    ],
)
def test_old_index_names_still_import_with_a_deprecation_warning(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is now {module}\.{new}"):
        value = getattr(mod, old)
    assert value is getattr(mod, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name is silent
        getattr(mod, new)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        mod.Nope  # noqa: B018


def test_indexes_and_stages_are_different_classes_with_different_names():
    from winnow import pipeline, retrieval

    assert retrieval.BM25Index is not pipeline.BM25 and retrieval.DenseIndex is not pipeline.Dense
    assert retrieval.ColBERTIndex.__name__ == "ColBERTIndex"
    assert retrieval.__all__ == ["BM25Index", "ColBERTIndex", "DenseIndex"]
    assert repr(retrieval.BM25Index()).startswith("BM25Index(")


def test_the_default_model_is_written_once_in_the_code():
    """Only winnow.defaults spells the default model's hub id (the offline-copy table names the ids it
    maps, and the testing helper loads that real model by its hub id)."""
    src = Path(winnow.__file__).parent
    allowed = {"defaults.py", "rerankers/hub.py", "testing.py"}
    found = []
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and DEFAULT_MODEL in node.value
            ):
                found.append(f"{path.relative_to(src).as_posix()}:{node.lineno}")
    outside = [f for f in found if f.rpartition(":")[0] not in allowed]
    assert outside == [], f"the default model is spelt out in {outside}; use winnow.defaults"
    assert f"bi-encoder:{DEFAULT_MODEL}" == DEFAULT_RERANKER


def test_cli_defaults_come_from_the_one_constant():
    from winnow.cli import build_parser
    from winnow.pipeline import Dense, SpecOptions

    parser = build_parser()
    args = parser.parse_args(["eval", "--dataset", "x"])
    assert args.reranker == DEFAULT_RERANKER and args.dense_model == DEFAULT_MODEL
    args = parser.parse_args(["rerank", "--dataset", "x", "--run", "r", "--output", "o"])
    assert args.model == DEFAULT_RERANKER
    assert SpecOptions().reranker == DEFAULT_RERANKER and Dense().model == DEFAULT_MODEL


def test_rerank_lives_beside_score():
    from winnow.cli import build_parser

    parser = build_parser()
    for command in ("score", "rerank", "info"):
        args = parser.parse_args(
            {
                "score": ["score", "--model", "m", "q"],
                "rerank": ["rerank", "--dataset", "x", "--run", "r", "--output", "o"],
                "info": ["info", "m"],
            }[command]
        )
        assert args.func.__module__ == "winnow.rerankers.commands", command
    assert parser.parse_args(["eval", "--dataset", "x"]).func.__module__ == (
        "winnow.evaluation.commands"
    )
