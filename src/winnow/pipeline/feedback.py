"""Pseudo-relevance feedback stages: ``>> rm3`` / ``>> bo1`` (BM25) and ``>> rocchio`` (dense).

Each takes the top documents of the incoming run as feedback, builds a new query and searches the
whole corpus again (the methods themselves are in :mod:`winnow.retrieval.prf`). They reuse the
context's BM25 index or dense embeddings, so ``bm25 >> rm3`` next to ``bm25`` indexes once and
``dense >> rocchio`` embeds only the queries again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from winnow._fs import read_json_entry, write_json_atomic
from winnow.errors import ConfigError
from winnow.pipeline.base import Context, Stage, StageTiming, top_docs
from winnow.pipeline.retrieval import BM25, DEFAULT_DENSE_MODEL, Dense
from winnow.types import Run


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class QueryExpansion(Stage):
    """RM3 or Bo1 from the incoming run's top ``fb_docs``, re-querying the context's BM25 index.

    ``bm25`` is the BM25 stage whose index is searched (the default one when omitted).
    """

    def __init__(
        self,
        method: str = "rm3",
        top_k: int = 1000,
        *,
        fb_docs: int | None = None,
        fb_terms: int = 10,
        original_query_weight: float = 0.5,
        bm25: BM25 | None = None,
    ):
        from winnow.retrieval.prf import ExpansionOptions

        self.top_k = _positive("top_k", top_k)
        self.options = ExpansionOptions(
            method,
            fb_docs=fb_docs,
            fb_terms=fb_terms,
            original_query_weight=original_query_weight,
        )
        self.bm25 = bm25 if bm25 is not None else BM25()
        self.label = method

    def expansion(self, ctx: Context):
        """The feedback model over the context's indexed corpus (term statistics built once)."""
        from winnow.retrieval.prf import QueryExpansion as Expansion
        from winnow.retrieval.prf import TermStatistics

        key = ("prf-stats", *self.bm25._key(), str(ctx.cache_dir))
        if key not in ctx.memo:
            index = self.bm25.retriever(ctx)
            started = time.perf_counter()
            ctx.memo[key] = TermStatistics(index, ctx.dataset.corpus)
            ctx.memo[(*key, "seconds")] = time.perf_counter() - started
        return Expansion(ctx.memo[key], self.options)

    def _identity(self, ctx: Context) -> list[Any]:
        return [self.bm25._identity(self.bm25._built(ctx)), asdict(self.options)]

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        if run is None:
            raise ConfigError(
                f"{self.label} expands queries from a first ranking: write bm25 >> {self.label}"
            )

        def compute() -> Run:
            with ctx.timed(self.label, "retrieve", len(queries)) as record:
                expansion = self.expansion(ctx)
                result = expansion.search(queries, run, top_k=self.top_k)
            record.parts = dict(expansion.timings)
            built = ctx.memo.pop(
                ("prf-stats", *self.bm25._key(), str(ctx.cache_dir), "seconds"), None
            )
            if built is not None:
                record.parts["term_statistics"] = built
            return result

        return _cached(self, queries, run, ctx, self.options.fb_docs, compute)


def _cached(stage, queries: Mapping[str, str], run: Run, ctx: Context, depth: int, compute) -> Run:
    """``compute()``, or its earlier result for the same inputs (context memo, then disk).

    The key is a sha256 of the stage's settings, the corpus, the query texts and the feedback
    (each query's top ``depth`` documents and scores), the only part of the incoming run used.
    """
    from winnow import __version__

    feedback = {q: top_docs(run.get(q, {}), depth) for q in queries}
    h = hashlib.sha256()
    identity = [type(stage).__name__, __version__, stage._identity(ctx), stage.top_k]
    h.update(json.dumps(identity, default=str).encode())
    h.update(ctx.corpus_fingerprint().encode())
    h.update(json.dumps([list(queries.items()), feedback]).encode())
    digest = h.hexdigest()
    key = ("feedback", digest)
    path = ctx.cache_dir / "search" / f"{digest}.json" if ctx.cache_dir is not None else None
    if key not in ctx.memo:
        started = time.perf_counter()
        result = read_json_entry(path)
        if result is not None:
            seconds = time.perf_counter() - started
            ctx.timings.append(
                StageTiming(stage.label, "retrieve", seconds, len(queries), cached=True)
            )
        else:
            result = compute()
            if path is not None:
                write_json_atomic(path, result)
        ctx.memo[key] = result
    else:
        ctx.timings.append(StageTiming(stage.label, "retrieve", 0.0, len(queries), cached=True))
    return {qid: dict(ranking) for qid, ranking in ctx.memo[key].items()}


class Rocchio(Stage):
    """Rocchio feedback on embeddings: the query vector moved toward its top ``k`` documents.

    ``q' = alpha q + beta mean(d_1..d_k)``, re-normalised, then exact search over the context's
    dense embeddings of ``model`` (defaults: Pyserini's vector-PRF setting, k=5, alpha=0.4,
    beta=0.6). The feedback documents are the incoming run's top ``k``, whatever ranked them.
    """

    def __init__(
        self,
        model: str = DEFAULT_DENSE_MODEL,
        top_k: int = 1000,
        *,
        k: int = 5,
        alpha: float = 0.4,
        beta: float = 0.6,
        device: str | None = None,
        dtype: str | None = None,
    ):
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"Rocchio {name} must be a number >= 0, got {value!r}")
        if alpha == 0 and beta == 0:
            raise ConfigError("Rocchio needs alpha or beta above 0")
        self.k = _positive("k", k)
        self.top_k = _positive("top_k", top_k)
        self.alpha, self.beta = float(alpha), float(beta)
        self.dense = Dense(model, device=device, dtype=dtype)
        self.label = "rocchio" if model == DEFAULT_DENSE_MODEL else f"rocchio:{model}"

    def transform(self, queries: Mapping[str, str], run: Run | None, ctx: Context) -> Run:
        import numpy as np

        from winnow.retrieval.prf import rocchio

        if run is None:
            raise ConfigError(
                f"{self.label} moves queries toward a first ranking: write dense >> {self.label}"
            )

        def compute() -> Run:
            index = self.dense.retriever(ctx)
            row = ctx.memo.setdefault(
                ("dense-rows", *self.dense._key(), str(ctx.cache_dir)),
                {d: i for i, d in enumerate(index.doc_ids)},
            )
            qids = [q for q in queries if queries[q].strip()]
            out: Run = {q: {} for q in queries}
            with ctx.timed(self.label, "retrieve", len(queries)) as record:
                t = time.perf_counter()
                q_emb = index.encoder.encode_queries(
                    [queries[q] for q in qids], show_progress=False
                )
                t2 = time.perf_counter()
                moved = np.empty_like(q_emb, dtype=np.float32)
                for i, qid in enumerate(qids):
                    feedback = [d for d, _ in top_docs(run.get(qid, {}), self.k)]
                    missing = [d for d in feedback if d not in row]
                    if missing:
                        raise ConfigError(
                            f"{self.label}: feedback document {missing[0]!r} of query {qid!r} "
                            "is not in the corpus"
                        )
                    vectors = index.embeddings[[row[d] for d in feedback]]
                    moved[i] = rocchio(q_emb[i], vectors, alpha=self.alpha, beta=self.beta)
                t3 = time.perf_counter()
                for qid, docs in zip(qids, index.top_k(moved, self.top_k)):
                    out[qid] = docs
                record.parts = {
                    "encode": t2 - t,
                    "expand": t3 - t2,
                    "retrieve": time.perf_counter() - t3,
                }
            return out

        return _cached(self, queries, run, ctx, self.k, compute)

    def _identity(self, ctx: Context) -> list[Any]:
        return [self.dense._identity(self.dense._built(ctx)), self.k, self.alpha, self.beta]
