"""BM25 first-stage retrieval on bm25s: Snowball stemming (PyStemmer), English stopwords.

Documents are indexed as ``title + " " + text``, tokenised with bm25s's default regex
(``\\b\\w\\w+\\b`` after lowercasing), stopwords removed, then stemmed. With the defaults
(``method="lucene"``, k1=1.5, b=0.75) this reproduces the reference figures in each shared
dataset's SOURCE.md (e.g. Cranfield nDCG@10 0.3730).

The index is cached under ``cache_dir`` keyed by a hash of the corpus (ids, titles, texts) and
every parameter that changes scores, in bm25s's own format (plain ``.npy`` + JSON).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow._hashing import corpus_hash
from winnow._runs import check_top_k, ranked, tie_break_order
from winnow.errors import ConfigError, DatasetError, InputError
from winnow.retrieval._cache import entry_dir, is_complete, save_entry
from winnow.retrieval._checks import check_corpus, check_queries
from winnow.types import Document, Run

logger = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
DOC_IDS = "doc_ids.json"


def _make_stemmer(stemmer: str | None):
    if stemmer in (None, "", "none"):
        return None
    import Stemmer

    try:
        return Stemmer.Stemmer(stemmer)
    except KeyError:
        raise ConfigError(
            f"unknown stemmer {stemmer!r}; choose one of {', '.join(Stemmer.algorithms())} or 'none'"
        ) from None


class BM25Index:
    """Lexical retriever. ``index(corpus)`` then ``search(queries, top_k)``.

    Args:
        k1, b: BM25 parameters.
        method: bm25s scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stemmer: a Snowball algorithm name for PyStemmer (``english``), or ``None``/``"none"``.
        stopwords: ``"en"`` (bm25s's English list), another bm25s language code, a list of words,
            or ``None`` for none.
        cache_dir: folder for cached indexes (no caching when ``None``).
        n_threads: threads for batched retrieval (0: in the calling thread; -1: all cores).
        show_progress: tqdm bars of bm25s (off by default).

    ``timings`` holds the seconds of the last ``index`` (``hash``, ``tokenize``, ``index``,
    ``cache_hit``) or ``search`` (``tokenize``, ``retrieve``, ``search``) call.
    """

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | list[str] | None = "en",
        cache_dir: str | os.PathLike | None = None,
        *,
        n_threads: int = 0,
        show_progress: bool = False,
    ):
        if method not in METHODS:
            raise ConfigError(f"unknown BM25 method {method!r}; choose one of {', '.join(METHODS)}")
        if not k1 >= 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.k1, self.b, self.method = float(k1), float(b), method
        self.stemmer_name = stemmer if stemmer not in ("", "none") else None
        self._stemmer = _make_stemmer(self.stemmer_name)
        self.stopwords = stopwords
        self.cache_dir = cache_dir
        self.n_threads = n_threads
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self._retriever = None
        self._doc_ids: list[str] = []
        self._doc_order: np.ndarray | None = None  # rank of each doc_id in sorted order

    def __repr__(self) -> str:
        return (
            f"BM25Index(k1={self.k1}, b={self.b}, method={self.method!r}, stemmer={self.stemmer_name!r}, "
            f"{len(self._doc_ids)} documents indexed)"
        )

    @property
    def doc_ids(self) -> list[str]:
        return list(self._doc_ids)

    def _tokenize(self, texts: list[str], return_ids: bool):
        import bm25s

        stopwords = self.stopwords if self.stopwords is not None else []
        return bm25s.tokenize(
            texts,
            lower=True,
            stopwords=stopwords,
            stemmer=self._stemmer,
            return_ids=return_ids,
            show_progress=self.show_progress,
        )

    def params(self) -> dict[str, Any]:
        """Everything besides the corpus that the index depends on (part of the cache key)."""
        import bm25s

        stop = self.stopwords
        if isinstance(stop, (list, tuple, set)):
            stop = sorted(stop)
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stemmer": self.stemmer_name,
            "stopwords": stop,
            "bm25s": bm25s.__version__,
            "text": "title + ' ' + text",
        }

    def index(self, corpus: Mapping[str, Document]) -> BM25Index:
        """Index ``corpus`` (``{doc_id: Document}``), or load its index from ``cache_dir``."""
        import bm25s

        check_corpus(corpus)
        start = time.perf_counter()
        timings: dict[str, float] = {"cache_hit": 0.0}
        entry = None
        if self.cache_dir is not None:
            key = {**self.params(), "corpus": corpus_hash(corpus)}
            timings["hash"] = time.perf_counter() - start
            entry = entry_dir(self.cache_dir, "bm25", key)
            if is_complete(entry):
                t = time.perf_counter()
                try:
                    retriever = bm25s.BM25.load(str(entry), load_corpus=False, show_progress=False)
                    doc_ids = json.loads((entry / DOC_IDS).read_text())
                except (OSError, ValueError, KeyError) as exc:
                    logger.warning("unreadable BM25 cache entry %s (%s); rebuilding", entry, exc)
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    self._retriever, self._doc_ids, self._doc_order = retriever, doc_ids, None
                    timings.update(cache_hit=1.0, load=time.perf_counter() - t)
                    timings["index"] = time.perf_counter() - start
                    self.timings = timings
                    logger.info("BM25 index loaded from %s", entry)
                    return self
        doc_ids = list(corpus)
        t = time.perf_counter()
        tokens = self._tokenize([d.full_text for d in corpus.values()], return_ids=True)
        timings["tokenize"] = time.perf_counter() - t
        if not tokens.vocab:  # bm25s would fail with "max() arg is an empty sequence"
            empty = sum(1 for d in corpus.values() if not d.full_text.strip())
            raise DatasetError(
                f"cannot build a BM25 index: no document has any indexable term ({empty} of "
                f"{len(doc_ids)} documents are empty, the others hold only stopwords or "
                "one-character words)"
            )
        t = time.perf_counter()
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        retriever.index(tokens, show_progress=self.show_progress)
        timings["build"] = time.perf_counter() - t
        if entry is not None:

            def write(folder: Path) -> None:
                retriever.save(str(folder), show_progress=False)
                (folder / DOC_IDS).write_text(json.dumps(doc_ids))

            if save_entry(entry, {**key, "documents": len(doc_ids)}, write):
                logger.info("BM25 index saved to %s", entry)
        self._retriever, self._doc_ids, self._doc_order = retriever, doc_ids, None
        timings["index"] = time.perf_counter() - start
        self.timings = timings
        return self

    def search(self, queries: Mapping[str, str], top_k: int = 1000) -> Run:
        """Top ``top_k`` documents per query, best first (equal scores ordered by ``doc_id``).

        Only documents sharing at least one term with the query are returned: a query that is empty
        or made only of stopwords gets an empty ranking. ``top_k`` beyond the corpus size is clamped.
        """
        if self._retriever is None:
            raise InputError("BM25Index.search called before index()")
        top_k = check_top_k(top_k)
        start = time.perf_counter()
        qids = check_queries(queries)
        run: Run = {qid: {} for qid in qids}
        if not qids:
            self.timings = {"tokenize": 0.0, "retrieve": 0.0, "search": 0.0}
            return run
        t = time.perf_counter()
        tokens = self._tokenize([queries[q] for q in qids], return_ids=False)
        tokenize_s = time.perf_counter() - t
        vocab = self._retriever.vocab_dict
        tokens = [[tok for tok in q if tok in vocab] for q in tokens]
        keep = [i for i, q in enumerate(tokens) if q]
        n = len(self._doc_ids)
        k = min(top_k, n)
        t = time.perf_counter()
        if keep:
            # one extra hit shows whether documents tied with the k-th score were left out
            k_req = min(k + 1, n)
            docs, scores = self._retriever.retrieve(
                [tokens[i] for i in keep],
                k=k_req,
                sorted=True,
                show_progress=self.show_progress,
                n_threads=self.n_threads,
            )
            ids = self._doc_ids
            for row, i in enumerate(keep):
                d_row, s_row = docs[row], scores[row]
                if k_req > k and s_row[k] > 0 and s_row[k] == s_row[k - 1]:
                    d_row, s_row = self._full_ranking(tokens[i], k)
                d_row, s_row = d_row[:k], s_row[:k]
                positive = s_row > 0
                hits = zip(d_row[positive].tolist(), s_row[positive].tolist())
                run[qids[i]] = dict(ranked({ids[d]: float(s) for d, s in hits}))
        self.timings = {
            "tokenize": tokenize_s,
            "retrieve": time.perf_counter() - t,
            "search": time.perf_counter() - start,
        }
        return run

    def _full_ranking(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k of all documents by score, ties by ``doc_id`` (used when ties cross the cut)."""
        scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)
        if self._doc_order is None:
            self._doc_order = tie_break_order(self._doc_ids)
        best = np.lexsort((self._doc_order, -scores))[:k]
        return best, scores[best]

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed document for one query (float32, in ``doc_ids`` order)."""
        if self._retriever is None:
            raise InputError("BM25Index.get_scores called before index()")
        tokens = [
            t
            for t in self._tokenize([query], return_ids=False)[0]
            if t in self._retriever.vocab_dict
        ]
        if not tokens:
            return np.zeros(len(self._doc_ids), dtype=np.float32)
        return np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)


def __getattr__(name: str):
    # The old name, kept for code written before the index classes were renamed.
    from winnow._deprecation import renamed

    return renamed(__name__, name, {"BM25": BM25Index})
