"""Process-wide caches: heavy model objects and reranker instances, each created once per key.

Two levels: ``MODELS`` holds loaded weights/tokenizers keyed by (loader, model path, device, dtype), so
rerankers that differ only in light options (max length, activation) share one copy of the weights;
``RERANKERS`` holds reranker instances keyed by everything they were built with. Both are thread-safe:
concurrent first use of a key builds it exactly once (per-key locks, so different models load in
parallel).
"""

from __future__ import annotations

import gc
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


class KeyedCache:
    """A dict whose values are built once per key, under a per-key lock."""

    def __init__(self, name: str):
        self.name = name
        self._items: dict[Hashable, Any] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        #: How many times each key was built (tests use it to prove "loaded once").
        self.builds: Counter[Hashable] = Counter()

    def get_or_create(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        item = self._items.get(key)
        if item is not None:
            return item
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            item = self._items.get(key)
            if item is None:
                item = factory()
                self.builds[key] += 1
                self._items[key] = item
        return item

    def keys(self) -> list[Hashable]:
        return list(self._items)

    def pop_where(self, predicate: Callable[[Hashable], bool]) -> list[Any]:
        with self._guard:
            keys = [k for k in self._items if predicate(k)]
            return [self._items.pop(k) for k in keys]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)


MODELS = KeyedCache("models")

_MODEL_LOCKS: dict[tuple, threading.RLock] = {}
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(config) -> threading.RLock:
    """The lock held while a reranker of ``config`` runs its model (one per kind, model, device
    and dtype: ``MODELS`` shares one model and tokenizer among such rerankers).

    Calls from several threads (``ascore_pairs`` / ``arank``, Daft's in-process workers, an
    application's own threads) are serialised: a Hugging Face fast tokenizer keeps its padding
    and truncation settings on the shared object and sets them on every call, and the
    sentence-transformers path sets ``max_seq_length`` per call, so two overlapping calls could
    mix their settings up. Torch already spreads one call over every core, so this costs little.
    Re-entrant: a caller that holds it may call the reranker."""
    key = (config.kind, config.model, config.device, config.dtype)
    with _MODEL_LOCKS_GUARD:
        return _MODEL_LOCKS.setdefault(key, threading.RLock())


RERANKERS = KeyedCache("rerankers")
#: Embedding memos of bi-encoders, keyed like their weights plus the max length (see ``EmbeddingMemo``).
EMBEDDINGS = KeyedCache("embeddings")


class EmbeddingMemo:
    """Embeddings of texts already encoded by one model, bounded in bytes, least recently used out.

    Dense retrieval and a bi-encoder rerank stage over the same corpus embed the same documents; with
    this memo the second one looks them up instead of running the model again. Keys are the exact text
    the model saw (prompt included) and the memo belongs to one (model, device, dtype, max length), so
    a hit is the very vector the model produced for that input. Thread-safe.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, texts: list[str]) -> dict[int, np.ndarray]:
        """``{position: embedding}`` for the texts already known."""
        found: dict[int, np.ndarray] = {}
        with self._lock:
            for i, text in enumerate(texts):
                row = self._rows.get(text)
                if row is not None:
                    self._rows.move_to_end(text)
                    found[i] = row
            self.hits += len(found)
            self.misses += len(texts) - len(found)
        return found

    def store(self, texts: list[str], embeddings: np.ndarray) -> None:
        """Remember ``embeddings[i]`` for ``texts[i]``; evicts the least recently used beyond the bound."""
        if self.max_bytes <= 0 or len(texts) == 0:
            return
        row_bytes = embeddings[0].nbytes
        keep = max(0, min(len(texts), self.max_bytes // max(row_bytes, 1)))
        with self._lock:
            # Only the last ``keep`` rows can fit; copying each row detaches it from the big array.
            for text, row in zip(texts[len(texts) - keep :], embeddings[len(texts) - keep :]):
                old = self._rows.pop(text, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._rows[text] = row.copy()
                self._bytes += row.nbytes
            while self._bytes > self.max_bytes and self._rows:
                _, old = self._rows.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._bytes = 0


def model_loads(model: str | None = None) -> int:
    """How many times weights were loaded in this process (for ``model`` when given)."""
    return sum(n for key, n in MODELS.builds.items() if model is None or model in key)


def unload(model: str | None = None) -> int:
    """Drop cached rerankers and weights (of ``model`` only when given) and free their memory.

    Returns the number of reranker instances dropped. Instances the caller still holds keep working
    only if they are used again, which reloads their weights.
    """
    from winnow.rerankers.hub import resolve_model_path

    path = resolve_model_path(model) if model is not None else None

    def matches(key: Hashable) -> bool:
        return path is None or (isinstance(key, tuple) and path in key)

    dropped = RERANKERS.pop_where(matches)
    for reranker in dropped:
        reranker._unload()
    MODELS.pop_where(matches)
    EMBEDDINGS.pop_where(matches)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    return len(dropped)


def clear_cache() -> int:
    """Drop every cached reranker and model."""
    return unload(None)
