"""Training-data tools: hard-negative mining judged by a reranker (``winnow mine``).

Light to import: the mining code (and torch) loads on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "mine_hard_negatives": "winnow.training.mining",
    "MiningConfig": "winnow.training.mining",
    "MiningResult": "winnow.training.mining",
    "MiningSummary": "winnow.training.mining",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from winnow.training.mining import (  # noqa: F401
        MiningConfig,
        MiningResult,
        MiningSummary,
        mine_hard_negatives,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'winnow.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
