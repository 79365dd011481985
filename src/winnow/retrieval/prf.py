"""Pseudo-relevance feedback: RM3 and Bo1 for BM25, Rocchio for dense retrieval.

All three take a first ranking, treat its top documents as relevant, build a new query and search
the whole corpus again.

- **RM3** (Lavrenko & Croft, SIGIR 2001, relevance model RM1 interpolated with the query as in
  Abdul-Jaleel et al., TREC 2004), as Anserini / Pyserini implement it (``RM3Reranker``): each of
  the top ``fb_docs`` documents contributes ``P(w|D) * score(D)`` to term ``w``, with ``P(w|D)`` the
  term's share of the document's (kept) terms; terms found in more than ``max_df`` (10 %) of the
  collection are skipped (Anserini's stopword heuristic); the ``fb_terms`` best are kept and
  L1-normalised, then interpolated with the L1-normalised query:
  ``weight = original_query_weight * q(w) + (1 - original_query_weight) * rm(w)``.
  Defaults are Pyserini's: ``fb_terms=10, fb_docs=10, original_query_weight=0.5``.
- **Bo1** (Amati, PhD thesis 2003; Terrier's ``Bo1`` expansion model): ``w(t) = tf_x log2((1 +
  P_n) / P_n) + log2(1 + P_n)`` with ``tf_x`` the term's frequency in the top ``fb_docs`` documents
  and ``P_n = F / N`` (its collection frequency over the number of documents); only terms present
  in at least two feedback documents are candidates (Terrier's ``expansion.mindocuments``); the
  ``fb_terms`` best get ``w(t) / max w`` added to their query weight ``qtf / max qtf``. Defaults are
  Terrier's: ``fb_docs=3, fb_terms=10``.
- **Rocchio** on embeddings (Rocchio 1971; the vector PRF of Li et al., "Pseudo Relevance Feedback
  with Deep Language Models and Dense Retrievers: Successes and Pitfalls", TOIS 2023):
  ``q' = alpha q + beta mean(d_1..d_k)``, L2-normalised so scores stay cosines. Defaults are the
  setting Pyserini's vector-PRF guide reports (``Rocchio PRF 5 A0.4 B0.6``: k=5, alpha=0.4,
  beta=0.6).

bm25s has no weighted queries and keeps no term frequencies (its index stores each (document,
term) pair's precomputed BM25 score). So the feedback statistics come from a document-term count
matrix built here once per corpus with the BM25 index's own tokeniser (same lowercasing,
stopwords, stemming and vocabulary), and the weighted query is scored over bm25s's score matrix
directly: ``score(D) = sum_t weight(t) * bm25(D, t)``, which for unit weights is exactly what
bm25s computes.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from winnow._runs import check_top_k, tie_break_order
from winnow.errors import ConfigError, InputError
from winnow.types import Document, Run

#: Terms in more than this share of the documents are never feedback terms (Anserini's RM3).
MAX_DF = 0.1
METHODS = ("rm3", "bo1")
#: Feedback documents by default: Pyserini's RM3 and Terrier's Bo1.
DEFAULT_FB_DOCS = {"rm3": 10, "bo1": 3}


def _check_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def feedback_weights(scores: Sequence[float]) -> np.ndarray:
    """How much each feedback document counts in RM3: its score when all are positive (as BM25
    scores are); otherwise (reranker logits) ``exp(score - max)``, the likelihood the log-score
    stands for."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) and s.min() > 0:
        return s
    return np.exp(s - s.max()) if len(s) else s


class TermStatistics:
    """Document-term counts of a corpus over an indexed :class:`~winnow.retrieval.BM25Index`'s vocabulary.

    ``counts`` is a CSR matrix (documents in ``bm25.doc_ids`` order, columns the bm25s token ids);
    ``df`` and ``cf`` are each term's document and collection frequencies.
    """

    def __init__(self, bm25, corpus: Mapping[str, Document]):
        import scipy.sparse as sp

        retriever = bm25._retriever
        if retriever is None:
            raise InputError("TermStatistics needs an indexed BM25 (call index() first)")
        self.bm25 = bm25
        doc_ids = bm25.doc_ids
        missing = [d for d in doc_ids if d not in corpus]
        if missing:
            raise InputError(
                f"{len(missing)} indexed documents are not in the corpus: {missing[:3]}"
            )
        vocab = retriever.vocab_dict
        # bm25's own analyser (bm25s.tokenize with its stopwords and stemmer), so terms line up
        tokens = bm25._tokenize([corpus[d].full_text for d in doc_ids], return_ids=False)
        rows, cols, vals = [], [], []
        for i, doc in enumerate(tokens):
            for term, n in Counter(t for t in doc if t in vocab).items():
                rows.append(i)
                cols.append(vocab[term])
                vals.append(n)
        shape = (len(doc_ids), len(vocab))
        self.counts = sp.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=shape)
        self.df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=shape[1])
        self.cf = np.asarray(self.counts.sum(axis=0)).ravel()
        self.terms = {i: t for t, i in vocab.items()}
        self.row = {d: i for i, d in enumerate(doc_ids)}
        self.doc_ids = doc_ids
        self._doc_order = tie_break_order(doc_ids)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    def query_terms(self, query: str) -> Counter:
        """The query's term ids and counts (same analyser; terms outside the index dropped)."""
        vocab = self.bm25._retriever.vocab_dict
        tokens = self.bm25._tokenize([query], return_ids=False)[0]
        return Counter(vocab[t] for t in tokens if t in vocab and t)

    def rows(self, doc_ids: Sequence[str]) -> list[int]:
        try:
            return [self.row[d] for d in doc_ids]
        except KeyError as exc:
            raise InputError(
                f"feedback document {exc.args[0]!r} is not in the indexed corpus"
            ) from None

    def score(self, weights: Mapping[int, float]) -> np.ndarray:
        """``sum_t weight(t) * bm25(D, t)`` for every document (float64, ``doc_ids`` order).

        Computed over bm25s's precomputed score matrix (CSC: one column of document scores per
        token id) because bm25s scores only unit-weight queries.
        """
        r = self.bm25._retriever
        data, indices, indptr = r.scores["data"], r.scores["indices"], r.scores["indptr"]
        out = np.zeros(self.num_docs, dtype=np.float64)
        nonoccurrence = getattr(r, "nonoccurrence_array", None)
        for t, w in weights.items():
            lo, hi = indptr[t], indptr[t + 1]
            out[indices[lo:hi]] += w * data[lo:hi]
            if nonoccurrence is not None:  # bm25l / bm25+ give absent terms a score too
                out += w * float(nonoccurrence[t])
        return out

    def top(self, scores: np.ndarray, top_k: int) -> dict[str, float]:
        """The ``top_k`` documents with a positive score, best first, ties by ``doc_id``."""
        live = np.flatnonzero(scores > 0)
        best = live[np.lexsort((self._doc_order[live], -scores[live]))][:top_k]
        ids = self.doc_ids
        return {ids[i]: float(scores[i]) for i in best.tolist()}

    def named(self, weights: Mapping[int, float]) -> dict[str, float]:
        """Term ids -> stemmed terms, for showing an expanded query."""
        return {self.terms[t]: w for t, w in weights.items()}


def rm3_query(
    stats: TermStatistics,
    query: Counter,
    feedback: Sequence[tuple[str, float]],
    *,
    fb_terms: int = 10,
    original_query_weight: float = 0.5,
    max_df: float = MAX_DF,
) -> dict[int, float]:
    """RM3's weighted query (term id -> weight) from the query's term counts and feedback docs."""
    rm: dict[int, float] = {}
    if feedback:
        rows = stats.rows([d for d, _ in feedback])
        doc_weights = feedback_weights([s for _, s in feedback])
        limit = max_df * stats.num_docs
        for row, dw in zip(rows, doc_weights.tolist()):
            lo, hi = stats.counts.indptr[row], stats.counts.indptr[row + 1]
            terms = stats.counts.indices[lo:hi]
            tf = stats.counts.data[lo:hi]
            keep = stats.df[terms] <= limit
            terms, tf = terms[keep], tf[keep]
            norm = tf.sum()
            if norm <= 0:
                continue
            for t, p in zip(terms.tolist(), (tf / norm).tolist()):
                rm[t] = rm.get(t, 0.0) + p * dw
        best = sorted(rm.items(), key=lambda item: (-item[1], item[0]))[:fb_terms]
        total = sum(w for _, w in best)
        rm = {t: w / total for t, w in best} if total > 0 else {}
    q_total = sum(query.values())
    out: dict[int, float] = {}
    for t, n in query.items():
        out[t] = original_query_weight * n / q_total
    for t, w in rm.items():
        out[t] = out.get(t, 0.0) + (1.0 - original_query_weight) * w
    return {t: w for t, w in out.items() if w > 0}


def bo1_query(
    stats: TermStatistics,
    query: Counter,
    feedback: Sequence[tuple[str, float]],
    *,
    fb_terms: int = 10,
    min_docs: int = 2,
) -> dict[int, float]:
    """Bo1's weighted query: ``qtf / max qtf`` plus ``w(t) / max w`` for the best ``fb_terms``."""
    out = {t: n / max(query.values()) for t, n in query.items()}
    if not feedback:
        return out
    rows = stats.rows([d for d, _ in feedback])
    block = stats.counts[rows]
    tf_x = np.asarray(block.sum(axis=0)).ravel()
    in_docs = np.asarray((block > 0).sum(axis=0)).ravel()
    need = min(min_docs, len(rows))
    candidates = np.flatnonzero((tf_x > 0) & (in_docs >= need))
    if not len(candidates):
        return out
    pn = stats.cf[candidates] / stats.num_docs
    w = tf_x[candidates] * np.log2((1.0 + pn) / pn) + np.log2(1.0 + pn)
    order = np.lexsort((candidates, -w))[:fb_terms]
    w_max = w[order[0]]
    for i in order.tolist():
        t = int(candidates[i])
        out[t] = out.get(t, 0.0) + float(w[i] / w_max)
    return out


@dataclass(frozen=True)
class ExpansionOptions:
    """Settings of RM3 / Bo1 (``fb_docs`` defaults to 10 for RM3, 3 for Bo1)."""

    method: str = "rm3"
    fb_docs: int | None = None
    fb_terms: int = 10
    original_query_weight: float = 0.5
    max_df: float = MAX_DF

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown query expansion {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        fb_docs = self.fb_docs if self.fb_docs is not None else DEFAULT_FB_DOCS[self.method]
        object.__setattr__(self, "fb_docs", _check_int("fb_docs", fb_docs))
        _check_int("fb_terms", self.fb_terms)
        w = _check_weight("original_query_weight", self.original_query_weight)
        object.__setattr__(self, "original_query_weight", w)
        object.__setattr__(self, "max_df", _check_weight("max_df", self.max_df))


class QueryExpansion:
    """RM3 or Bo1 over an indexed :class:`~winnow.retrieval.BM25Index` (see the module docstring).

    ``search(queries, run, top_k)`` expands each query from the top ``fb_docs`` of its ranking
    in ``run`` and searches the whole index with the weighted query. ``timings`` holds the seconds
    of the last call (``expand``: building the weighted queries, ``retrieve``: scoring them).
    """

    def __init__(self, stats: TermStatistics, options: ExpansionOptions | None = None):
        self.stats = stats
        self.options = options or ExpansionOptions()
        self.timings: dict[str, float] = {}

    def expand(self, query: str, feedback: Sequence[tuple[str, float]]) -> dict[int, float]:
        """The weighted query (term id -> weight); ``feedback`` is (doc_id, score), best first."""
        terms = self.stats.query_terms(query)
        if not terms:
            return {}
        o = self.options
        feedback = list(feedback)[: o.fb_docs]
        if o.method == "rm3":
            return rm3_query(
                self.stats,
                terms,
                feedback,
                fb_terms=o.fb_terms,
                original_query_weight=o.original_query_weight,
                max_df=o.max_df,
            )
        return bo1_query(self.stats, terms, feedback, fb_terms=o.fb_terms)

    def search(self, queries: Mapping[str, str], run: Run, top_k: int = 1000) -> Run:
        top_k = check_top_k(top_k)
        out: Run = {}
        expand_s = retrieve_s = 0.0
        for qid, text in queries.items():
            ranking = run.get(qid, {})
            t = time.perf_counter()
            feedback = sorted(ranking.items(), key=lambda item: (-item[1], item[0]))
            weights = self.expand(text, feedback[: self.options.fb_docs])
            t2 = time.perf_counter()
            out[qid] = self.stats.top(self.stats.score(weights), top_k) if weights else {}
            expand_s += t2 - t
            retrieve_s += time.perf_counter() - t2
        self.timings = {"expand": expand_s, "retrieve": retrieve_s}
        return out


def rocchio(
    query: np.ndarray, feedback: np.ndarray, *, alpha: float = 0.4, beta: float = 0.6
) -> np.ndarray:
    """``alpha q + beta mean(feedback rows)``, L2-normalised (``q`` unchanged with no feedback)."""
    q = np.asarray(query, dtype=np.float32)
    if len(feedback) == 0:
        return q
    moved = alpha * q + beta * np.asarray(feedback, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 0 and math.isfinite(norm) else q
