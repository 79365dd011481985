"""The system-expression parser's word registry: every word one entry, "did you mean" for typos,
and errors that name where in the expression the bad word is."""

from __future__ import annotations

import pytest

from winnow.errors import ConfigError
from winnow.pipeline import BM25, Cutoff, Pipeline, SpecOptions, parse_system
from winnow.pipeline.spec import MODEL_WORDS, PRIMITIVES, SYSTEMS, WORDS, model_word_forms


def no_loader(model, kind, **options):
    raise AssertionError("no reranker should load for a refused spec")


OPTIONS = SpecOptions(loader=no_loader)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # a misspelled primitive, named system or fusion word
        ("bm26", r"character 1: unknown name 'bm26'; valid names: .*; did you mean bm25\b"),
        ("hybird", r"unknown name 'hybird'; .*; did you mean hybrid\b"),
        (
            "(bm25 | dense) >> combsun",
            r"character 19: unknown name 'combsun'.*did you mean combsum",
        ),
        ("bm25 >> rerenk", r"character 9: unknown name 'rerenk'.*did you mean rerank\b"),
        ("bm25 >> rerenk@5", r"character 9: unknown name 'rerenk'.*did you mean rerank\b"),
        ("bm25 | densee % 10", r"character 8: unknown name 'densee'.*did you mean dense\b"),
        # a bare kind: the MODEL is missing
        ("bm25 >> cross-encoder", r"did you mean cross-encoder:MODEL\b"),
        # a misspelled stage kind
        (
            "bm25 >> cross-encodr:m",
            r"character 9: unknown stage kind 'cross-encodr'.*did you mean cross-encoder\b",
        ),
        (
            "maxpp:m",
            r"unknown stage kind 'maxpp' in 'maxpp:m'; valid: dense:MODEL.*did you mean maxp",
        ),
        # a misspelled option of a maxp word
        (
            "maxp:m?windw=30",
            r"character 1: 'maxp:m\?windw=30': unknown option 'windw'.*did you mean window\b",
        ),
        # positions of other errors
        ("bm25 dense", r"character 6: unexpected 'dense' after a complete expression"),
        ("bm25 % x", r"character 8: '%' must be followed by a positive integer, got 'x'"),
        ("(bm25 | dense", r"character 1: missing '\)'"),
        ("bm25 >> | dense", r"character 9: expected a name or '\(' but got '\|'"),
        ("bm25 | dense >> rrf", r"character 8: rrf fuses several runs: put a parallel stage"),
        (
            "bm25 >> dense:m?x=1",
            r"character 9: 'dense:m\?x=1': unknown option 'x'; a dense stage takes backend",
        ),
        ("bm25@3", r"character 1: 'bm25@3': a depth applies to rerank and chunked stages only"),
    ],
)
def test_errors_suggest_and_point_at_the_word(spec, message):
    # the closest word comes first; others may follow (tests register kinds of their own)
    with pytest.raises(ConfigError, match=message) as info:
        parse_system(spec, OPTIONS)
    assert str(info.value).startswith(f"system spec {spec!r}")


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ConfigError) as info:
        parse_system("zzzzzz", OPTIONS)
    assert "did you mean" not in str(info.value)


def test_every_word_has_one_factory_and_one_description():
    assert list(WORDS) == list(PRIMITIVES)
    assert not set(WORDS) & set(SYSTEMS)
    forms = model_word_forms()
    assert forms[: len(MODEL_WORDS)] == [f"{p}:{arg}" for p, (arg, _) in MODEL_WORDS.items()]
    assert {"tuned:FILE", "rerank:MODEL", "llm:MODEL", "cross-encoder:MODEL"} <= set(forms)


def test_a_registered_word_parses_like_the_built_in_ones(monkeypatch):
    """Adding a system is one registry line (what a parallel branch adding `colbert` did)."""
    monkeypatch.setitem(WORDS, "bm25-strict", lambda o: BM25(k1=0.9, b=0.4))
    stage = parse_system("bm25-strict % 3", OPTIONS)
    assert isinstance(stage, Pipeline) and isinstance(stage.stages[1], Cutoff)
    assert stage.stages[0].params["k1"] == 0.9 and stage.label == "bm25 % 3"
    with pytest.raises(ConfigError, match="did you mean bm25-strict"):
        parse_system("bm25-strict2", OPTIONS)
