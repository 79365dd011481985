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
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any


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
RERANKERS = KeyedCache("rerankers")


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
