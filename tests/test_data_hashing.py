"""Content hashes behind the caches: equal content, equal hash; any change, a different one."""

from __future__ import annotations

from winnow._hashing import corpus_hash, params_hash
from winnow.types import Document


def corpus(*docs: tuple[str, str, str]) -> dict[str, Document]:
    return {d: Document(d, text, title) for d, title, text in docs}


def test_corpus_hash_tracks_ids_titles_texts_and_order():
    base = corpus(("a", "T", "one two"), ("b", "", "three"))
    assert corpus_hash(base) == corpus_hash(corpus(("a", "T", "one two"), ("b", "", "three")))
    variants = [
        corpus(("a", "T", "one two!"), ("b", "", "three")),  # text
        corpus(("a", "U", "one two"), ("b", "", "three")),  # title
        corpus(("x", "T", "one two"), ("b", "", "three")),  # id
        corpus(("b", "", "three"), ("a", "T", "one two")),  # order
        corpus(("a", "T", "one two")),  # a document less
        corpus(("a", "T one", " two"), ("b", "", "three")),  # same concatenation, other split
        corpus(("a", "", "T one two"), ("b", "", "three")),
    ]
    hashes = {corpus_hash(v) for v in variants}
    assert len(hashes) == len(variants) and corpus_hash(base) not in hashes


def test_params_hash_is_key_order_independent():
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 1.5})
