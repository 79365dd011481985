"""BM25 on bm25s: closed-form scores, stemming, edge cases, on-disk cache, reference figures."""

from __future__ import annotations

import math

import ir_measures
import pytest

from winnow.data import load_dataset
from winnow.errors import ConfigError, InputError
from winnow.retrieval import BM25Index
from winnow.types import Document


def docs(**texts: str) -> dict[str, Document]:
    return {k: Document(k, v) for k, v in texts.items()}


CORPUS = docs(
    a="wing lift wing",
    b="lift drag",
    c="boundary layer over the wing surface",
    d="heat transfer",
)


def lucene_bm25(corpus_tokens: dict[str, list[str]], query: list[str], k1=1.5, b=0.75):
    """Closed-form Lucene BM25 (idf = ln(1 + (N - df + 0.5) / (df + 0.5)))."""
    n = len(corpus_tokens)
    avgdl = sum(map(len, corpus_tokens.values())) / n
    out = {}
    for doc_id, toks in corpus_tokens.items():
        score = 0.0
        for term in query:
            df = sum(term in t for t in corpus_tokens.values())
            tf = toks.count(term)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(toks) / avgdl))
        if score > 0:
            out[doc_id] = score
    return out


def test_scores_match_closed_form():
    bm25 = BM25Index(stemmer=None, stopwords=None, k1=1.2, b=0.6).index(CORPUS)
    run = bm25.search({"q": "wing lift"}, top_k=10)
    tokens = {k: [t for t in d.full_text.lower().split() if len(t) > 1] for k, d in CORPUS.items()}
    expected = lucene_bm25(tokens, ["wing", "lift"], k1=1.2, b=0.6)
    assert run["q"].keys() == expected.keys()  # "d" shares no term: not retrieved
    for doc_id, score in expected.items():
        assert run["q"][doc_id] == pytest.approx(score, rel=1e-5)
    assert list(run["q"]) == sorted(expected, key=lambda d: -expected[d])


def test_title_is_indexed_with_text():
    corpus = {"x": Document("x", "nothing here", title="Supersonic"), "y": Document("y", "other")}
    assert list(BM25Index().index(corpus).search({"q": "supersonic"})["q"]) == ["x"]


def test_stemming_and_stopwords():
    corpus = docs(a="the runner runs quickly", b="a walking dog")
    bm25 = BM25Index().index(corpus)
    assert list(bm25.search({"q": "running"})["q"]) == ["a"]  # Snowball: running, runs -> run
    assert BM25Index(stemmer=None).index(corpus).search({"q": "running"})["q"] == {}


def test_empty_stopword_only_and_unknown_queries_get_empty_rankings():
    bm25 = BM25Index().index(CORPUS)
    run = bm25.search({"empty": "", "stop": "the of and a", "unknown": "zebra", "ok": "wing"})
    assert run["empty"] == {} and run["stop"] == {} and run["unknown"] == {}
    assert set(run["ok"]) == {"a", "c"}
    assert list(run) == ["empty", "stop", "unknown", "ok"]


def test_top_k_clamped_and_cut():
    bm25 = BM25Index(stopwords=None).index(CORPUS)
    assert len(bm25.search({"q": "wing lift drag heat"}, top_k=1000)["q"]) == 4
    assert len(bm25.search({"q": "wing lift drag heat"}, top_k=2)["q"]) == 2
    with pytest.raises(ConfigError, match="top_k"):
        bm25.search({"q": "wing"}, top_k=0)


def test_ties_ordered_by_doc_id():
    corpus = docs(z="same words", m="same words", a="same words", q="other")
    run = BM25Index().index(corpus).search({"q": "same"})
    assert list(run["q"]) == ["a", "m", "z"]
    assert len(set(run["q"].values())) == 1
    # documents tied at the cut: the smallest doc_ids are kept, whatever their positions
    corpus = {k: Document(k, "same words") for k in ("z", "y", "m", "b", "a", "c")}
    corpus["top"] = Document("top", "same same words")
    bm25 = BM25Index().index(corpus)
    assert list(bm25.search({"q": "same"}, top_k=3)["q"]) == ["top", "a", "b"]
    assert list(bm25.search({"q": "same"}, top_k=1)["q"]) == ["top"]


def test_bad_use():
    with pytest.raises(InputError, match="empty corpus"):
        BM25Index().index({})
    with pytest.raises(InputError, match="before index"):
        BM25Index().search({"q": "x"})
    with pytest.raises(ConfigError, match="unknown BM25 method"):
        BM25Index(method="okapi")
    with pytest.raises(ConfigError, match="unknown stemmer"):
        BM25Index(stemmer="klingon")
    with pytest.raises(InputError, match="must be a string"):
        BM25Index().index(CORPUS).search({"q": 3})


def test_index_cache(tmp_path):
    first = BM25Index(cache_dir=tmp_path).index(CORPUS)
    assert first.timings["cache_hit"] == 0
    run = first.search({"q": "wing lift"})
    entries = list((tmp_path / "bm25").iterdir())
    assert len(entries) == 1
    names = {p.name for p in entries[0].iterdir()}
    assert {"params.index.json", "vocab.index.json", "data.csc.index.npy", "doc_ids.json"} <= names
    assert not any(p.name.startswith(".") for p in (tmp_path / "bm25").iterdir())  # no temp dirs

    second = BM25Index(cache_dir=tmp_path).index(CORPUS)
    assert second.timings["cache_hit"] == 1
    assert second.search({"q": "wing lift"}) == run

    changed = dict(CORPUS, b=Document("b", "lift drag lift"))  # one document's text changed
    third = BM25Index(cache_dir=tmp_path).index(changed)
    assert third.timings["cache_hit"] == 0
    assert third.search({"q": "wing lift"}) != run
    assert BM25Index(cache_dir=tmp_path, k1=0.9).index(CORPUS).timings["cache_hit"] == 0
    assert BM25Index(cache_dir=tmp_path, stemmer=None).index(CORPUS).timings["cache_hit"] == 0
    retitled = dict(CORPUS, d=Document("d", "heat transfer", title="x"))
    assert BM25Index(cache_dir=tmp_path).index(retitled).timings["cache_hit"] == 0
    assert len(list((tmp_path / "bm25").iterdir())) == 5


REFERENCE = {"cranfield": 0.3730, "cisi": 0.3956, "adi": 0.4938}  # SOURCE.md, "stem" rows


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reproduces_reference_ndcg(shared_datasets, name):
    ds = load_dataset(name, data_dir=str(shared_datasets), download=False)
    run = BM25Index().index(ds.corpus).search(ds.queries, top_k=1000)
    got = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], ds.qrels, run)[ir_measures.nDCG @ 10]
    assert got == pytest.approx(REFERENCE[name], abs=0.01)


def test_damaged_or_unwritable_cache_falls_back(tmp_path, caplog):
    BM25Index(cache_dir=tmp_path).index(CORPUS)
    [entry] = (tmp_path / "bm25").iterdir()
    (entry / "data.csc.index.npy").unlink()  # damaged by hand
    again = BM25Index(cache_dir=tmp_path).index(CORPUS)
    assert again.timings["cache_hit"] == 0 and "rebuilding" in caplog.text
    assert (entry / "data.csc.index.npy").is_file()  # rewritten
    assert BM25Index(cache_dir=tmp_path).index(CORPUS).timings["cache_hit"] == 1

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    bm25 = BM25Index(cache_dir=not_a_dir).index(CORPUS)
    assert "could not write cache entry" in caplog.text
    assert set(bm25.search({"q": "wing"})["q"]) == {"a", "c"}


def test_corpus_must_hold_documents():
    with pytest.raises(InputError, match=r"corpus\['a'\] must be a winnow.types.Document"):
        BM25Index().index({"a": "plain text"})


def test_threaded_retrieval_gives_the_same_run(shared_datasets):
    ds = load_dataset("adi", data_dir=str(shared_datasets), download=False)
    single = BM25Index().index(ds.corpus).search(ds.queries, top_k=50)
    threaded = BM25Index(n_threads=2).index(ds.corpus).search(ds.queries, top_k=50)
    assert threaded == single
    assert [list(d) for d in threaded.values()] == [list(d) for d in single.values()]
