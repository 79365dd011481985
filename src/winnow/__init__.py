"""winnow: retrieval and reranking toolkit and server.

``import winnow`` stays light: rerankers, pipelines and torch load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "load_reranker": "winnow.rerankers.loading",
    "unload": "winnow.rerankers.cache",
    "clear_cache": "winnow.rerankers.cache",
    "model_loads": "winnow.rerankers.cache",
    "available_kinds": "winnow.rerankers.registry",
    "register_kind": "winnow.rerankers.registry",
    "Reranker": "winnow.rerankers.base",
    "RankedDocument": "winnow.rerankers.base",
    "PairScores": "winnow.rerankers.base",
    "Document": "winnow.types",
    "WinnowError": "winnow.errors",
    "ConfigError": "winnow.errors",
    "DatasetError": "winnow.errors",
    "InputError": "winnow.errors",
    "ModelLoadError": "winnow.errors",
    "MissingExtraError": "winnow.errors",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from winnow.errors import (  # noqa: F401
        ConfigError,
        DatasetError,
        InputError,
        MissingExtraError,
        ModelLoadError,
        WinnowError,
    )
    from winnow.rerankers.base import PairScores, RankedDocument, Reranker  # noqa: F401
    from winnow.rerankers.cache import clear_cache, model_loads, unload  # noqa: F401
    from winnow.rerankers.loading import load_reranker  # noqa: F401
    from winnow.rerankers.registry import available_kinds, register_kind  # noqa: F401
    from winnow.types import Document  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'winnow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
