"""A pipeline bound to a collection: call it on queries, or ``search`` one query for hits.

``stage.bind(collection)`` (or ``BoundPipeline(stage, collection)``) holds one
:class:`~winnow.pipeline.base.Context` for the collection, so the corpus is indexed once, on first
use (or on ``index()``), and every later call reuses the index::

    pipe = (BM25() % 100 >> Rerank(reranker) % 10).bind(load_dataset("cranfield"))
    hits = pipe.search("boundary layer on a flat plate", top_k=5)  # doc_id, score, rank, title, text
    run = pipe({"1": "what is lift?", "2": "heat transfer"})          # {query_id: {doc_id: score}}

A bound pipeline is safe to share between threads (calls run one at a time) and does not grow with
the queries it answers: per-query results are dropped from its context after each call, only the
indexes are kept.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnow.errors import ConfigError, InputError
from winnow.pipeline.base import Context, Stage, StageTiming, top_docs
from winnow.types import Dataset, Document, Run

#: Context memo entries that hold one call's results (retrieval and feedback), dropped after it.
_PER_CALL = ("search", "feedback")


@dataclass(frozen=True)
class SearchHit:
    """One document found for a query: its id, score, rank (1 = best), title and text."""

    doc_id: str
    score: float
    rank: int
    text: str
    title: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "score": self.score,
            "rank": self.rank,
            "title": self.title,
            "text": self.text,
        }


def as_dataset(
    collection: Any, where: str = "collection", data_dir: str | os.PathLike | None = None
) -> Dataset:
    """A :class:`Dataset` from one, a dataset name or folder (``load_dataset``, looking in
    ``data_dir``, else ``$WINNOW_DATA`` as the command line does), a ``{doc_id: text or Document}``
    mapping, or a list of texts (ids ``"0"``, ``"1"``...)."""
    if isinstance(collection, Dataset):
        return collection
    if isinstance(collection, (str, os.PathLike)):
        from winnow.data.loading import load_dataset

        if data_dir is None:
            data_dir = os.environ.get("WINNOW_DATA")
        return load_dataset(collection, data_dir=data_dir)
    if isinstance(collection, Mapping):
        items = list(collection.items())
    elif isinstance(collection, Sequence) and not isinstance(collection, bytes):
        items = [(str(i), text) for i, text in enumerate(collection)]
    else:
        raise InputError(
            f"{where} must be a Dataset, a dataset name or folder, a {{doc_id: text}} mapping or "
            f"a list of texts; got {type(collection).__name__}"
        )
    corpus: dict[str, Document] = {}
    for doc_id, value in items:
        if isinstance(value, Document):
            corpus[str(doc_id)] = value
        elif isinstance(value, str):
            corpus[str(doc_id)] = Document(str(doc_id), value)
        else:
            raise InputError(
                f"{where}[{doc_id!r}] is {type(value).__name__}, expected str or winnow Document"
            )
    if not corpus:
        raise InputError(f"{where} has no documents")
    return Dataset(name="collection", corpus=corpus, queries={})


class BoundPipeline:
    """A stage (or pipeline) with the collection it searches; see the module docstring."""

    def __init__(
        self,
        stage: Stage,
        collection: Any,
        *,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        data_dir: str | os.PathLike | None = None,
    ):
        if not isinstance(stage, Stage):
            raise ConfigError(f"bind needs a pipeline stage, got {type(stage).__name__}")
        self.stage = stage
        self.dataset = as_dataset(collection, data_dir=data_dir)
        # one query a call: a sample drawn from each call's pairs would make a new int8 model per
        # query, so static int8 here takes the user's calibration=
        self.context = Context(
            self.dataset, cache_dir=cache_dir, progress=progress, calibrate_on_pairs=False
        )
        self._lock = threading.Lock()
        #: the stage timings of the last call
        self.last_timings: list[StageTiming] = []

    def __repr__(self) -> str:
        return f"BoundPipeline({self.stage.label!r}, {self.dataset!r})"

    def __call__(self, queries: Mapping[str, str] | Sequence[str] | str) -> Run:
        """The run for ``queries`` (``{query_id: text}``; a list of texts gets ids "0", "1"...)."""
        if isinstance(queries, str):
            raise InputError("queries must be a {query_id: text} mapping or a list; use search()")
        if isinstance(queries, Mapping):
            checked = {str(k): v for k, v in queries.items()}
        elif isinstance(queries, Sequence):
            checked = {str(i): q for i, q in enumerate(queries)}
        else:
            raise InputError(
                f"queries must be a {{query_id: text}} mapping or a list of texts, "
                f"got {type(queries).__name__}"
            )
        for qid, text in checked.items():
            if not isinstance(text, str):
                raise InputError(f"queries[{qid!r}] is {type(text).__name__}, expected str")
        return self._run(checked)

    def _run(self, queries: dict[str, str]) -> Run:
        with self._lock:
            ctx = self.context
            before, mark = set(ctx.memo), len(ctx.timings)
            try:
                run = self.stage.transform(queries, None, ctx)
            finally:
                for key in set(ctx.memo) - before:
                    if isinstance(key, tuple) and key and key[0] in _PER_CALL:
                        del ctx.memo[key]
                self.last_timings = ctx.timings[mark:]
                del ctx.timings[mark:]
        return run

    def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        """The ``top_k`` best documents for ``query``, best first, with their titles and texts."""
        if not isinstance(query, str):
            raise InputError(f"query is {type(query).__name__}, expected str")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        ranking = self._run({"q": query}).get("q", {})
        corpus = self.dataset.corpus
        return [
            SearchHit(doc_id, float(score), rank, corpus[doc_id].text, corpus[doc_id].title)
            for rank, (doc_id, score) in enumerate(top_docs(ranking, top_k), start=1)
        ]

    def index(self) -> BoundPipeline:
        """Index the collection now (a first query does it otherwise); returns self."""
        self._run({"warmup": "index"})
        return self
