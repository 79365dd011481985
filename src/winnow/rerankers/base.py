"""The reranker contract: one primitive (`score_pairs`) and everything else written once on top of it.

Backends implement ``_load`` and ``_score`` (raw float32 scores for a list of (query, document) pairs).
Input validation, activation, ranking, top-k, tie-breaking and cross-query batching live here, once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np

from winnow.errors import ConfigError, InputError, WinnowError
from winnow.rerankers.cache import model_lock
from winnow.rerankers.documents import CheckedDocument, check_document_list
from winnow.rerankers.options import RerankerOptions, options_instance
from winnow.types import Document

logger = logging.getLogger(__name__)

ACTIVATIONS = ("none", "sigmoid", "softmax")


@dataclass(frozen=True)
class PairScores:
    """Scores for a list of pairs, in input order, with what the model actually saw of each pair."""

    scores: np.ndarray  # float32, one per pair
    truncated: np.ndarray  # bool: the pair did not fit in max_length and was cut
    num_tokens: np.ndarray  # int32: tokens the model scored for the pair (special tokens included)

    @classmethod
    def empty(cls) -> PairScores:
        return cls(
            np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int32)
        )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx: np.ndarray | slice) -> PairScores:
        return PairScores(self.scores[idx], self.truncated[idx], self.num_tokens[idx])


@dataclass(frozen=True)
class RankedDocument:
    """One reranked document: its position in the caller's list, score, rank (1 = best), text
    and, for documents given as dicts or :class:`winnow.types.Document`, their id and metadata."""

    index: int
    score: float
    rank: int
    document: str | None = None
    truncated: bool = False
    num_tokens: int = 0
    id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RerankerConfig:
    """What a reranker was asked to be. Frozen: a reranker never changes after construction."""

    model: str
    kind: str
    device: str
    dtype: str
    max_length: int | None = None
    activation: str = "none"
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    #: the name the user gave (a hub id, an alias); ``model`` is what it resolved to (a folder)
    name: str | None = None

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


def check_pairs(pairs: Any) -> list[tuple[str, str]]:
    """Validate ``pairs`` as a sequence of (query, document) string pairs; return them as a list."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise InputError(
            f"pairs must be a list of (query, document) tuples, got {type(pairs).__name__}"
        )
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InputError(
                f"pairs[{i}] must be a (query, document) pair of two strings, "
                f"got {type(pair).__name__}"
            )
        for j, text in enumerate(pair):
            if not isinstance(text, str):
                raise InputError(
                    f"pairs[{i}][{j}] ({'query' if j == 0 else 'document'}) is "
                    f"{type(text).__name__}, expected str"
                )
        out.append((pair[0], pair[1]))
    return out


def check_documents(documents: Any, where: str = "documents") -> list[str]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Iterable):
        raise InputError(f"{where} must be a list of strings, got {type(documents).__name__}")
    docs = list(documents)
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise InputError(f"{where}[{i}] is {type(doc).__name__}, expected str")
    return docs


def check_query(query: Any, where: str = "query") -> str:
    if not isinstance(query, str):
        raise InputError(f"{where} is {type(query).__name__}, expected str")
    return query


def _prepared(prepare, forward, indices):
    """One batch without look-ahead: ``forward(prepare(indices))`` in the caller's thread."""
    return forward(prepare(indices))


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` best first; ties keep the input order. NaN sorts last."""
    scores = np.asarray(scores, dtype=np.float64)
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((np.arange(len(scores)), -keyed))


def apply_activation(scores: np.ndarray, activation: str, num_labels: int = 1) -> np.ndarray:
    """Map raw scores to the requested activation, computed in float32 after the upcast.

    For a two-label (no/yes) model the raw score is ``logit(yes) - logit(no)``, so ``sigmoid`` of it
    *is* the softmax probability of "yes"; ``softmax`` on a single-logit model is meaningless (always 1)
    and is refused.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if activation == "none":
        return scores
    if activation == "softmax" and num_labels < 2:
        raise ConfigError(
            "activation='softmax' needs a model with two labels (no/yes); "
            "this model has one logit: use 'sigmoid' or 'none'"
        )
    if activation in ("sigmoid", "softmax"):
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
    raise ConfigError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")


class Reranker(ABC):
    """A loaded-once reranker. Subclasses implement :meth:`_load` and :meth:`_score`.

    Construct through :func:`winnow.load_reranker` so that the process-wide cache hands back one
    instance per (model, kind, device, dtype, options).
    """

    kind: ClassVar[str] = "reranker"
    #: "relevance" for model scores, "rank" for listwise rerankers whose scores only encode an order.
    score_type: ClassVar[str] = "relevance"
    #: The frozen dataclass declaring the kind's options (see ``winnow.rerankers.options``).
    options_class: ClassVar[type] = RerankerOptions

    def __init__(self, config: RerankerConfig):
        if config.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation={config.activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        self.config = config
        #: the options, typed, with the declared defaults filled in
        self.options = options_instance(self.kind, self.options_class, dict(config.options))
        self._lock = threading.RLock()
        self._loaded = False
        self._warmed = False
        self.num_labels = 1
        self.last_stats = None  # engine statistics of the last call (BatchStats)

    def __repr__(self) -> str:
        c = self.config
        path = f", path={c.model!r}" if self.name != c.model else ""
        return (
            f"{type(self).__name__}(model={self.name!r}{path}, device={c.device!r}, "
            f"dtype={c.dtype!r})"
        )

    @property
    def name(self) -> str:
        """The model's name as the user gave it (hub id or folder), for labels and reports."""
        return self.config.name or self.config.model

    # -- pickling ----------------------------------------------------------------------------
    def __reduce__(self):
        """Pickle as the configuration only (kind, model path, options, device, dtype).

        Unpickled, it is the process-wide cached instance of that configuration
        (``loading.reranker_from_config``), whose weights load lazily on first use; so a reranker
        ships to Daft or Ray workers without its weights, locks or memo.
        """
        from winnow.rerankers.loading import reranker_from_config

        return (reranker_from_config, (self.config,))

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> Reranker:
        """Load the model now (otherwise it loads on first use). Thread-safe; loads once."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    started = time.perf_counter()
                    try:
                        self._load()
                    except (WinnowError, MemoryError):
                        raise
                    except Exception as exc:  # damaged weights, bad config: name the model
                        from winnow.rerankers._load_errors import model_load_error

                        raise model_load_error(self.config.model, self.kind, exc) from exc
                    self._loaded = True
                    logger.info("loaded %r in %.2fs", self, time.perf_counter() - started)
        return self

    def _unload(self) -> None:
        """Forget the loaded model (the cache calls this on unload); next use loads it again."""
        with self._lock:
            self._release()
            self._loaded = False
            self._warmed = False

    def _release(self) -> None:
        """Drop references to weights and tokenizers (subclasses that hold any override this)."""

    def score_identity(self) -> list[Any]:
        """What the scores depend on beyond the config: choices made when the model loads.

        Score caches add this to their key. A kind that picks something from the model's files at
        load time (``llm-pointwise`` picks its prompt) returns it here, so that scores cached under
        one choice are never served for another.
        """
        return []

    @abstractmethod
    def _load(self) -> None:
        """Load weights and tokenizer (through the model cache)."""

    @abstractmethod
    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        """Raw scores (float32, before activation) for validated, non-empty pairs, in input order."""

    @property
    def max_length(self) -> int:
        """Longest input (in tokens) the model scores; longer inputs are truncated."""
        self.load()
        return int(self.config.max_length or 512)

    def document_window(self) -> int | None:
        """Tokens of document text one input holds when the model encodes the query apart from
        the document (a bi-encoder), so that windows of long documents need not leave room for
        any query; None when query and document share one input (cross-encoders, LLMs)."""
        return None

    def _run_engine(
        self,
        lengths,
        forward,
        desc: str = "scoring",
        progress: bool | None = None,
        prepare=None,
    ) -> np.ndarray:
        """Run ``forward`` over token-budget batches (see ``engine.run_batches``) with this
        reranker's batch options; keeps the run's statistics in ``last_stats``.

        With ``prepare`` (host work of one batch: padding, tensors, the copy to the device),
        ``forward`` takes ``prepare(indices)``; the next batch is prepared on a background thread
        while the current one runs when the ``overlap`` option says so (default: on CUDA only)."""
        from winnow.rerankers._cuda import overlap_by_default
        from winnow.rerankers.engine import batch_limits, run_batches

        max_tokens, max_batch_size = batch_limits(dict(self.config.options), self.config.device)
        if prepare is not None:
            overlap = self.config.option("overlap")
            if overlap is None:
                overlap = overlap_by_default(self.config.device)
            if not overlap:
                forward = partial(_prepared, prepare, forward)
                prepare = None
        out, self.last_stats = run_batches(
            lengths,
            forward,
            prepare=prepare,
            max_tokens=max_tokens,
            max_batch_size=max_batch_size,
            device=self.config.device,
            progress=bool(
                self.config.option("show_progress", False) if progress is None else progress
            ),
            desc=desc,
        )
        return out

    # -- the primitive -----------------------------------------------------------------------
    def score_pairs_detailed(self, pairs: Iterable[tuple[str, str]]) -> PairScores:
        """Scores plus per-pair truncation flags and token counts."""
        checked = check_pairs(pairs)
        if not checked:
            return PairScores.empty()
        self.load()
        # Identical pairs are scored once: they cost nothing extra and always score identically,
        # whatever the rounding of the batch they would have landed in.
        position: dict[tuple[str, str], int] = {}
        inverse = np.fromiter(
            (position.setdefault(p, len(position)) for p in checked), np.int64, len(checked)
        )
        with model_lock(self.config):  # one model call at a time (see cache.model_lock)
            raw = self._score(list(position) if len(position) < len(checked) else checked)
        if len(position) < len(checked):
            raw = raw.take(inverse)
        scores = apply_activation(raw.scores, self.config.activation, self.num_labels)
        return PairScores(scores, raw.truncated, raw.num_tokens)

    def score_pairs(self, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
        """One float32 score per (query, document) pair, higher is more relevant."""
        return self.score_pairs_detailed(pairs).scores

    def _score_lists(self, queries: list[str], documents: list[list[str]]) -> list[PairScores]:
        """Score every query's documents; pairs of all queries go through the model together.

        Listwise rerankers override this (their scores depend on the whole list)."""
        pairs = [(q, d) for q, docs in zip(queries, documents) for d in docs]
        if not pairs:
            return [PairScores.empty() for _ in queries]
        scored = self.score_pairs_detailed(pairs)
        out, start = [], 0
        for docs in documents:
            out.append(scored.take(slice(start, start + len(docs))))
            start += len(docs)
        return out

    # -- ranking, written once ---------------------------------------------------------------
    def rank(
        self,
        query: str,
        documents: Sequence[str | Mapping[str, Any] | Document],
        top_k: int | None = None,
        return_documents: bool = True,
    ) -> list[RankedDocument]:
        """Rerank ``documents`` for ``query``: best first, ties in input order.

        A document is a string, a ``{"id", "text", "title", "metadata"}`` dict (only ``text`` is
        required; ``doc_id`` is accepted for ``id``) or a :class:`winnow.types.Document`; a title
        is scored before the text, and the id and metadata come back on the hit.
        """
        checked = check_document_list(documents, "documents")
        return self._rank_checked(
            [check_query(query)], [checked], top_k, return_documents, "top_k"
        )[0]

    def rank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str | Mapping[str, Any] | Document]],
        top_k: int | None = None,
        return_documents: bool = True,
    ) -> list[list[RankedDocument]]:
        """Rerank the documents of many queries at once (all pairs batched together)."""
        if isinstance(queries, str):
            raise InputError("queries must be a list of strings; use rank() for a single query")
        queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        if isinstance(documents_per_query, (str, bytes)):
            raise InputError("documents_per_query must be a list of lists of documents")
        documents = [
            check_document_list(d, f"documents_per_query[{i}]")
            for i, d in enumerate(documents_per_query)
        ]
        if len(queries) != len(documents):
            raise InputError(
                f"got {len(queries)} queries but {len(documents)} document lists; "
                "they must be the same length"
            )
        return self._rank_checked(queries, documents, top_k, return_documents, "top_k")

    def _rank_checked(
        self,
        queries: list[str],
        documents: list[list[CheckedDocument]],
        top_k: int | None,
        return_documents: bool,
        top_k_name: str,
    ) -> list[list[RankedDocument]]:
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0
        ):
            raise InputError(f"{top_k_name} must be a non-negative integer or None, got {top_k!r}")
        if sum(len(d) for d in documents):
            self.load()
        scored = self._score_lists(queries, [[d.scored for d in docs] for docs in documents])
        results = []
        for docs, s in zip(documents, scored):
            order = rank_order(s.scores)
            if top_k is not None:
                order = order[:top_k]
            results.append(
                [
                    RankedDocument(
                        index=int(i),
                        score=float(s.scores[i]),
                        rank=r + 1,
                        document=docs[i].text if return_documents else None,
                        truncated=bool(s.truncated[i]),
                        num_tokens=int(s.num_tokens[i]),
                        id=docs[i].id,
                        metadata=docs[i].metadata,
                    )
                    for r, i in enumerate(order)
                ]
            )
        return results

    # -- async, for applications (the work runs on a worker thread, off the event loop) -------
    async def arank(
        self,
        query: str,
        documents: Sequence[str | Mapping[str, Any] | Document],
        top_k: int | None = None,
        return_documents: bool = True,
    ) -> list[RankedDocument]:
        """:meth:`rank` without blocking the event loop (it runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.rank, query, documents, top_k, return_documents)

    async def arank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str | Mapping[str, Any] | Document]],
        top_k: int | None = None,
        return_documents: bool = True,
    ) -> list[list[RankedDocument]]:
        """:meth:`rank_many` without blocking the event loop (it runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(
            self.rank_many, queries, documents_per_query, top_k, return_documents
        )

    async def ascore_pairs(self, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
        """:meth:`score_pairs` without blocking the event loop (it runs in a worker thread)."""
        import asyncio

        checked = check_pairs(pairs)  # before the thread: a generator is consumed here, once
        return await asyncio.to_thread(self.score_pairs, checked)

    # -- operations --------------------------------------------------------------------------
    def warmup(self) -> float:
        """Load, run a dummy pair through the model and check it scores to a finite number.

        Returns the seconds it took. Raises RuntimeError when the self-check fails."""
        started = time.perf_counter()
        self.load()
        score = self.score_pairs([("what is winnow?", "winnow separates grain from chaff.")])
        if score.shape != (1,) or not math.isfinite(float(score[0])):
            raise RuntimeError(f"{self!r} self-check failed: dummy pair scored {score!r}")
        self._warmed = True
        return time.perf_counter() - started

    @property
    def warmed(self) -> bool:
        return self._warmed

    def health(self) -> dict[str, Any]:
        """Device, precision, max length, memory and load/warm state, for operators.

        ``memory_in_use`` is the bytes torch has allocated on a GPU (cuda, mps); on the CPU, where
        torch does not count, it is the process's resident memory, which holds the weights.
        ``parameters`` / ``model_bytes`` are the model's size (None for a model served elsewhere,
        e.g. by Ollama), ``process_resident_bytes`` the whole process's resident memory.
        """
        from winnow.rerankers.devices import memory_in_use
        from winnow.rerankers.info import model_size, process_memory, torch_module

        process = process_memory()["resident_bytes"]
        module = torch_module(self) if self._loaded else None
        parameters, model_bytes = model_size(module) if module is not None else (None, None)
        in_use = memory_in_use(self.config.device) if self._loaded else None
        if in_use is None and self._loaded and self.config.device.startswith("cpu"):
            in_use = process
        info: dict[str, Any] = {
            "model": self.config.model,
            "kind": self.config.kind,
            "device": self.config.device,
            "dtype": self.config.dtype,
            "activation": self.config.activation,
            "score_type": self.score_type,
            "loaded": self._loaded,
            "warmed": self._warmed,
            "max_length": self.max_length if self._loaded else self.config.max_length,
            "memory_in_use": in_use,
            "parameters": parameters,
            "model_bytes": model_bytes,
            "process_resident_bytes": process,
        }
        return info

    def info(self, name: str | None = None) -> dict[str, Any]:
        """Architecture, layers, hidden size, heads, parameters, vocabulary, positions, dtype,
        device, kind, path and ``name`` (what the user called it); loads the model first.

        See :func:`winnow.rerankers.info.model_info`; fields it cannot know are None."""
        from winnow.rerankers.info import model_info

        return model_info(self, name)
