"""Rerank stages: re-score the top ``depth`` documents of the incoming run with any winnow reranker.

:class:`Rerank` sends the pairs of all queries through ``reranker.rank_many`` (in groups of
all queries at once by default, or ``batch_queries`` at a time, so the engine batches across
queries);
:class:`ChunkedRerank` splits long documents into overlapping token windows, scores the windows
and aggregates them per document (``winnow.rerankers.chunking.rank_chunked``).

Documents below ``depth`` are kept under the reranked ones, in their incoming order, so recall at
deep cut-offs is unchanged; cut them with ``% depth`` when they are not wanted. With a cache folder
the scores of a stage are stored on disk under a sha256 of everything they depend on (model files,
reranker settings, stage settings, corpus content, query texts and candidate ids), so a second run
of the same experiment re-scores nothing and a changed input can never hit a stale entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from winnow._fs import read_json_entry, write_json_atomic
from winnow.errors import ConfigError, DatasetError
from winnow.pipeline.base import Context, Stage, top_docs
from winnow.rerankers.base import Reranker
from winnow.types import Document, Run

logger = logging.getLogger(__name__)


def short_model_name(model: str) -> str:
    """``/x/y/all-MiniLM-L6-v2`` or ``bi-encoder:org/all-MiniLM-L6-v2`` -> ``all-MiniLM-L6-v2``."""
    from winnow.rerankers.registry import parse_model_spec

    model = parse_model_spec(model)[1]
    return Path(model.rstrip("/")).name or model


def reranker_identity(reranker: Reranker) -> list[Any]:
    """What a reranker's scores depend on: class, model files, precision, settings."""
    from winnow.retrieval.dense import model_fingerprint

    c = reranker.config
    model = model_fingerprint(c.model) if Path(c.model).is_dir() else c.model
    return [
        type(reranker).__name__,
        model,
        c.kind,
        c.device,
        c.dtype,
        c.max_length,
        c.activation,
        # options that cannot change a score (progress bars) stay out of the cache key
        [[k, repr(v)] for k, v in c.options if k != "show_progress"],
        # choices made when the model loads (llm-pointwise's prompt): a cached score made with one
        # prompt is never served for another
        reranker.score_identity(),
    ]


def stack_tail(head: Mapping[str, float], tail: Sequence[str]) -> dict[str, float]:
    """``head`` scores, then ``tail`` documents in order, scored below the lowest head score."""
    out = dict(head)
    floor = min(head.values()) if head else 0.0
    for i, doc_id in enumerate(tail):
        out[doc_id] = floor - 1.0 - i
    return out


class RescoreStage(Stage):
    """Shared machinery: pick the top ``depth``, look up texts, cache scores, keep the tail."""

    phase = "rerank"
    #: The name the stage's cache entries are filed under (None: its class's name). A stage run
    #: on another engine (``winnow.distributed``) keeps its local twin's, so both share entries.
    cache_name: str | None = None

    def __init__(self, reranker: Reranker, depth: int | None, batch_queries: int | None):
        if not isinstance(reranker, Reranker):
            raise ConfigError(f"expected a winnow Reranker, got {type(reranker).__name__}")
        for name, value in (("depth", depth), ("batch_queries", batch_queries)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        self.reranker = reranker
        self.depth = depth
        self.batch_queries = batch_queries

    def settings(self, reranker: Reranker | None = None) -> list[Any]:
        """Stage settings that change the scores (part of the cache key); ``reranker``: the one
        that scores this call (default: the stage's own)."""
        from winnow import __version__

        name = self.cache_name or type(self).__name__
        return [name, __version__, reranker_identity(reranker or self.reranker)]

    def score(
        self,
        texts: list[str],
        docs: list[list[Document]],
        ctx: Context,
        reranker: Reranker | None = None,
    ) -> list[list[float]]:
        """Scores of each query's documents, in the given order, by ``reranker`` (default: the
        stage's own)."""
        raise NotImplementedError

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        if run is None:
            raise ConfigError(f"{self.label} re-scores a run: put a retrieval stage before it")
        corpus = ctx.dataset.corpus
        qids = [qid for qid in queries if qid in run]
        heads: dict[str, list[str]] = {}
        tails: dict[str, list[str]] = {}
        for qid in qids:
            ranked = [doc_id for doc_id, _ in top_docs(run[qid])]
            depth = len(ranked) if self.depth is None else self.depth
            heads[qid], tails[qid] = ranked[:depth], ranked[depth:]
            for doc_id in heads[qid]:
                if doc_id not in corpus:
                    raise DatasetError(
                        f"the run ranks document {doc_id!r} for query {qid!r}, but it is not in "
                        f"the corpus of {ctx.dataset.name!r}"
                    )
        # the reranker of this call, never stored on the stage (a stage may run in two threads)
        reranker = self._reranker_for(queries, qids, heads, ctx)
        pairs = sum(len(h) for h in heads.values())
        with ctx.timed(self.label, self.phase, len(qids)) as record:
            record.pairs = pairs
            cache_path = self._cache_path(queries, qids, heads, ctx, reranker)
            scores = read_json_entry(cache_path)
            record.cached = scores is not None
            if scores is None:
                texts = [queries[qid] for qid in qids]
                docs = [[corpus[d] for d in heads[qid]] for qid in qids]
                lists = self.score(texts, docs, ctx, reranker)
                scores = {qid: dict(zip(heads[qid], map(float, s))) for qid, s in zip(qids, lists)}
                if cache_path is not None:
                    write_json_atomic(cache_path, scores)
        return {qid: stack_tail(scores[qid], tails[qid]) for qid in qids}

    def _reranker_for(
        self, queries: Mapping[str, str], qids: list[str], heads: dict[str, list[str]], ctx: Context
    ) -> Reranker:
        """The reranker that scores this call: the stage's own. :class:`Rerank` calibrates a
        static int8 one asked with no sample on the call's pairs; other stages leave it as given
        (it then refuses with the message that asks for ``calibration=``)."""
        return self.reranker

    # -- cache ---------------------------------------------------------------------------------
    def _cache_path(
        self,
        queries: Mapping[str, str],
        qids: list[str],
        heads: dict[str, list[str]],
        ctx: Context,
        reranker: Reranker | None = None,
    ) -> Path | None:
        if ctx.cache_dir is None:
            return None
        h = hashlib.sha256()
        h.update(json.dumps(self.settings(reranker), default=str).encode())
        h.update(ctx.corpus_fingerprint().encode())
        for qid in qids:
            h.update(json.dumps([qid, queries[qid], heads[qid]]).encode())
        return ctx.cache_dir / "rerank" / f"{h.hexdigest()}.json"

    def _groups(self, n: int, ctx: Context, desc: str):
        size = self.batch_queries or max(n, 1)
        starts = range(0, n, size)
        if ctx.progress and n > size:
            from tqdm.auto import tqdm

            return tqdm(starts, desc=desc, unit="batch", leave=False)
        return starts


class Rerank(RescoreStage):
    """Re-score the top ``depth`` documents of each query with ``reranker`` (full_text of each doc).

    ``batch_queries`` queries go to ``reranker.rank_many`` together (None: all at once); the
    reranker's engine batches their pairs by token budget.
    """

    def __init__(
        self,
        reranker: Reranker,
        depth: int | None = 100,
        batch_queries: int | None = None,
        *,
        name: str | None = None,
    ):
        super().__init__(reranker, depth, batch_queries)
        self.label = f"rerank:{short_model_name(name or reranker.name)}"

    def settings(self, reranker: Reranker | None = None) -> list[Any]:
        return [*super().settings(reranker), "full_text"]

    def _reranker_for(
        self, queries: Mapping[str, str], qids: list[str], heads: dict[str, list[str]], ctx: Context
    ) -> Reranker:
        """Static int8 (onnx / openvino) asked with no sample, in an experiment: a seeded draw of
        the pairs this call scores calibrates it (the same pairs, the same sample and model)."""
        from winnow.rerankers.backends.calibration import needs_calibration, sample_from_pairs
        from winnow.rerankers.loading import _freeze, reranker_from_config

        c = self.reranker.config
        if not ctx.calibrate_on_pairs or not needs_calibration(
            c.option("backend"), c.dtype, c.option("calibration")
        ):
            return self.reranker
        corpus = ctx.dataset.corpus
        pairs = [(queries[qid], corpus[d].full_text) for qid in qids for d in heads[qid]]
        if not pairs:  # nothing to score: the model is never asked
            return self.reranker
        sample = sample_from_pairs(pairs, f"the (query, document) pairs {self.label} scores")
        # the given configuration with the sample added: nothing re-resolved, nothing lost
        options = _freeze({**dict(c.options), "calibration": sample})
        reranker = reranker_from_config(dataclasses.replace(c, options=options))
        logger.info("%s: int8 calibrated on %s of %s", self.label, sample, ctx.dataset.name)
        return reranker

    def score(
        self,
        texts: list[str],
        docs: list[list[Document]],
        ctx: Context,
        reranker: Reranker | None = None,
    ) -> list[list[float]]:
        reranker = reranker or self.reranker
        out: list[list[float]] = []
        for start in self._groups(len(texts), ctx, self.label):
            stop = start + (self.batch_queries or len(texts))
            ranked = reranker.rank_many(
                texts[start:stop],
                [[d.full_text for d in ds] for ds in docs[start:stop]],
                return_documents=False,
            )
            for ds, hits in zip(docs[start:stop], ranked):
                scores = [0.0] * len(ds)
                for hit in hits:
                    scores[hit.index] = hit.score
                out.append(scores)
        return out


class ChunkedRerank(RescoreStage):
    """Document-then-chunk reranking of the top ``depth`` documents.

    Each document is split into windows of ``window`` tokens every ``stride`` tokens (defaults:
    the model's window after the query, 25% overlap), its title prepended to every window; the
    windows are scored by ``reranker`` and aggregated per document (``max``, ``first``, ``mean``,
    ``kmax`` = mean of the ``k`` best). With ``rerank_chunks`` (a second, usually stronger,
    reranker) the windows of the ``chunk_depth`` best documents are scored again by it, and those
    documents are re-ordered by their best window's new score, above the others.
    """

    def __init__(
        self,
        reranker: Reranker,
        window: int | None = None,
        stride: int | None = None,
        aggregate: str = "max",
        max_chunks_per_doc: int | None = None,
        *,
        k: int = 3,
        depth: int | None = 100,
        batch_queries: int | None = None,
        rerank_chunks: Reranker | None = None,
        chunk_depth: int = 10,
        name: str | None = None,
    ):
        from winnow.rerankers.chunking import AGGREGATIONS

        super().__init__(reranker, depth, batch_queries)
        if aggregate not in AGGREGATIONS:
            raise ConfigError(f"aggregate={aggregate!r} is not one of {', '.join(AGGREGATIONS)}")
        if rerank_chunks is not None and not isinstance(rerank_chunks, Reranker):
            raise ConfigError(
                f"rerank_chunks must be a Reranker, got {type(rerank_chunks).__name__}"
            )
        self.window, self.stride, self.aggregate = window, stride, aggregate
        self.max_chunks_per_doc, self.k = max_chunks_per_doc, k
        self.rerank_chunks, self.chunk_depth = rerank_chunks, chunk_depth
        self.label = f"chunked:{short_model_name(name or reranker.name)}"
        if rerank_chunks is not None:
            self.label += f">>chunks:{short_model_name(rerank_chunks.name)}"

    def settings(self, reranker: Reranker | None = None) -> list[Any]:
        second = reranker_identity(self.rerank_chunks) if self.rerank_chunks else None
        return [
            *super().settings(reranker),
            [self.window, self.stride, self.aggregate, self.max_chunks_per_doc, self.k],
            [second, self.chunk_depth],
            # windows cut at whitespace, sized per query for cross-encoders and to the whole input
            # for bi-encoders (older cache entries were sized per query for every kind)
            "windows-at-whitespace-bi-encoder-whole-input",
        ]

    def score(
        self,
        texts: list[str],
        docs: list[list[Document]],
        ctx: Context,
        reranker: Reranker | None = None,
    ) -> list[list[float]]:
        from winnow.rerankers.chunking import rank_chunked

        reranker = reranker or self.reranker
        out: list[list[float]] = []
        for start in self._groups(len(texts), ctx, self.label):
            stop = start + (self.batch_queries or len(texts))
            group_docs = docs[start:stop]
            ranked = rank_chunked(
                reranker,
                texts[start:stop],
                [[d.text for d in ds] for ds in group_docs],
                titles=[[d.title for d in ds] for ds in group_docs],
                window=self.window,
                stride=self.stride,
                max_chunks_per_doc=self.max_chunks_per_doc,
                aggregate=self.aggregate,
                k=self.k,
                return_documents=False,
            )
            for ds, hits in zip(group_docs, ranked):
                scores = [0.0] * len(ds)
                for hit in hits:
                    scores[hit.index] = hit.score
                out.append(scores)
        if self.rerank_chunks is not None:
            out = self._second_stage(texts, docs, out)
        return out

    def _second_stage(
        self, texts: list[str], docs: list[list[Document]], first: list[list[float]]
    ) -> list[list[float]]:
        """Re-score the windows of each query's ``chunk_depth`` best documents with the second model."""
        from winnow.rerankers.chunking import rank_chunked

        best = [
            sorted(range(len(s)), key=lambda i, s=s: (-s[i], i))[: self.chunk_depth] for s in first
        ]
        ranked = rank_chunked(
            self.rerank_chunks,
            texts,
            [[ds[i].text for i in idx] for ds, idx in zip(docs, best)],
            titles=[[ds[i].title for i in idx] for ds, idx in zip(docs, best)],
            max_chunks_per_doc=self.max_chunks_per_doc,
            aggregate="max",
            return_documents=False,
        )
        out = []
        for s, idx, hits in zip(first, best, ranked):
            new = {idx[h.index]: h.score for h in hits}
            rest = [i for i in sorted(range(len(s)), key=lambda i, s=s: (-s[i], i)) if i not in new]
            floor = min(new.values()) if new else 0.0
            scores = [0.0] * len(s)
            for i, score in new.items():
                scores[i] = score
            for r, i in enumerate(rest):
                scores[i] = floor - 1.0 - r
            out.append(scores)
        return out
