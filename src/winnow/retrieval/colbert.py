"""ColBERT first-stage retrieval: encode the corpus once into token vectors, index them, MaxSim.

The encoder is the ``late-interaction`` reranker kind (:mod:`winnow.rerankers.late_interaction`),
so documents and queries get exactly the vectors the reranker scores with (prompts, query
expansion, lengths, skiplist, normalisation of the model), in token-budget batches. The index is
the multi-vector index of :mod:`winnow.retrieval.late_interaction`: ``plaid`` (the default,
approximate, compressed) or ``exact`` (brute-force MaxSim).

With a cache folder the index is kept under ``<cache_dir>/late-interaction/<key>/`` by
:func:`~winnow.retrieval.late_interaction.cached_index`, the key a sha256 of the model's identity
(a fingerprint of its files), its late-interaction settings, dtype, document length, a hash of the
corpus, the index kind and its knobs: a later run loads the index and encodes only the queries.
Document token vectors encoded here also fill the reranker's memo, so ``rerank:colbert:MODEL`` on
the same corpus encodes no document again while they fit.
"""

from __future__ import annotations

import logging
import os
import time
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np

from winnow._progress import progress_enabled
from winnow.defaults import DEFAULT_MODEL
from winnow.errors import ConfigError, InputError
from winnow.retrieval._checks import check_corpus, check_queries
from winnow.types import Document, Run

logger = logging.getLogger(__name__)

INDEX_KINDS = ("plaid", "exact")


def index_option_types(kind: str) -> dict[str, Any]:
    """{knob: type} of an index kind's keyword options (build and search knobs)."""
    from winnow.retrieval.late_interaction import _kinds

    if kind not in INDEX_KINDS:
        raise ConfigError(f"index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    cls = _kinds()[kind]
    hints = typing.get_type_hints(cls.__init__)
    import inspect

    return {
        p.name: hints.get(p.name, Any)
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


def parse_index_options(kind: str, options: Mapping[str, str]) -> dict[str, Any]:
    """The text ``KEY=VALUE`` knobs of a spec converted to the index kind's declared types."""
    from winnow.rerankers.options import parse_text

    types = index_option_types(kind)
    out: dict[str, Any] = {}
    for key, text in options.items():
        if key not in types:
            raise ConfigError(
                f"unknown option {key!r} for a {kind} index (valid: {', '.join(types) or 'none'})"
            )
        try:
            out[key] = parse_text(text, types[key])
        except ValueError as exc:
            raise ConfigError(f"index option {key}={text!r}: {exc}") from None
    return out


class ColBERTIndex:
    """Late-interaction retriever. ``index(corpus)`` then ``search(queries, top_k)``.

    Args:
        model: a ColBERT checkpoint (folder or hub id), or a backbone (see
            ``late-interaction``'s ``backbone`` option; all-MiniLM-L6-v2 by default).
        cache_dir: folder for the cached index (no caching when ``None``).
        device, dtype, max_length: as for ``winnow.load_reranker``.
        show_progress: tqdm bar while encoding (default: only when stderr is a terminal).
        index: ``"plaid"`` (default) or ``"exact"``.
        index_options: the index's knobs (``nbits``, ``ncentroids``, ``nprobe``, ``ndocs``...,
            see :mod:`winnow.retrieval._plaid`); part of the cache key.
        **options: the ``late-interaction`` kind's options (``backbone``, ``length_normalize``,
            ``max_tokens``, ``memo_mb``...).

    ``timings`` holds the seconds of the last ``index`` (``hash``, ``cache_hit``, ``encode``,
    ``build``, ``index``) or ``search`` (``encode``, ``retrieve``, ``search``) call.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        show_progress: bool | None = None,
        *,
        max_length: int | None = None,
        index: str = "plaid",
        index_options: Mapping[str, Any] | None = None,
        **options: Any,
    ):
        from winnow.rerankers.loading import load_reranker

        types = index_option_types(index)
        knobs = dict(index_options or {})
        unknown = sorted(set(knobs) - set(types))
        if unknown:
            raise ConfigError(
                f"unknown option(s) for a {index} index: {', '.join(unknown)} "
                f"(valid: {', '.join(types) or 'none'})"
            )
        self.index_kind = index
        self.index_options = knobs
        self.encoder = load_reranker(
            model,
            kind="late-interaction",
            device=device,
            dtype=dtype,
            max_length=max_length,
            **options,
        )
        self.model = self.encoder.config.model
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self._index = None

    def __repr__(self) -> str:
        n = len(self._index) if self._index is not None else 0
        return f"ColBERTIndex({self.model!r}, {self.index_kind}, {n} documents indexed)"

    @property
    def multi_vector_index(self):
        """The built :class:`~winnow.retrieval.late_interaction.MultiVectorIndex` (after index())."""
        return self._index

    def cache_key(self, corpus: Mapping[str, Document]) -> dict[str, Any]:
        """Everything the index depends on."""
        from winnow._hashing import corpus_hash
        from winnow.retrieval.dense import encoder_identity

        c = self.encoder.config
        settings = self.encoder.settings()
        settings.pop("similarity", None)  # scores are divided at search time, not stored
        return {
            "model": encoder_identity(self.encoder),
            "dtype": c.dtype,
            "settings": settings,
            "text": "title + ' ' + text",
            "corpus": corpus_hash(corpus),
            "index": self.index_kind,
            "index_options": dict(sorted(self.index_options.items())),
        }

    def index(self, corpus: Mapping[str, Document]) -> ColBERTIndex:
        """Encode ``corpus`` and build the index, or load it from ``cache_dir``."""
        from winnow.retrieval.late_interaction import build_index, cached_index

        check_corpus(corpus)
        start = time.perf_counter()
        timings: dict[str, float] = {"cache_hit": 1.0, "encode": 0.0, "build": 0.0}
        doc_ids = list(corpus)

        def build():
            timings["cache_hit"] = 0.0
            t = time.perf_counter()
            texts = [corpus[d].full_text for d in doc_ids]
            vectors = self.encoder.encode_documents(
                texts, show_progress=progress_enabled(self.show_progress)
            )
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            built = build_index(doc_ids, vectors, kind=self.index_kind, **self.index_options)
            timings["build"] = time.perf_counter() - t
            return built

        if self.cache_dir is None:
            index = build()
        else:
            key = self.cache_key(corpus)
            timings["hash"] = time.perf_counter() - start
            index = cached_index(self.cache_dir, key, build)
        if list(index.doc_ids) != doc_ids:  # a cache entry is keyed by the corpus; never trust
            raise InputError("the late-interaction index does not hold the corpus's documents")
        self._index = index
        timings["index"] = time.perf_counter() - start
        self.timings = timings
        return self

    def search(self, queries: Mapping[str, str], top_k: int = 1000, **knobs: Any) -> Run:
        """Top ``top_k`` documents per query by MaxSim (length-normalised when the encoder is),
        best first, equal scores ordered by ``doc_id``; ``knobs`` are the index's search knobs.

        A query that is empty or only whitespace gets an empty ranking.
        """
        from winnow._runs import check_top_k

        if self._index is None:
            raise InputError("ColBERTIndex.search called before index()")
        top_k = check_top_k(top_k)
        start = time.perf_counter()
        qids = check_queries(queries)
        run: Run = {qid: {} for qid in qids}
        live = [q for q in qids if queries[q].strip()]
        t = time.perf_counter()
        vectors = self.encoder.encode_queries([queries[q] for q in live], show_progress=False)
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        k = min(top_k or len(self._index), len(self._index))
        hits = self._index.search(vectors, k, **knobs) if live else []
        normalize = self.encoder.length_normalize
        for qid, q, found in zip(live, vectors, hits):
            scale = np.float32(q.shape[0]) if normalize else np.float32(1.0)
            run[qid] = {doc_id: float(np.float32(s) / scale) for doc_id, s in found}
        self.timings = {
            "encode": encode_s,
            "retrieve": time.perf_counter() - t,
            "search": time.perf_counter() - start,
        }
        return run


def __getattr__(name: str):
    # The old name, kept for code written before the index classes were renamed.
    from winnow._deprecation import renamed

    return renamed(__name__, name, {"ColBERT": ColBERTIndex})
