"""Training-data tools: hard-negative mining judged by a reranker (``winnow mine``), a
reranker-guided in-batch loss and fine-tuning of bi- and cross-encoders (``winnow train``).

Light to import: the mining and training code (and torch) load on first attribute access.
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
    "RerankerGuidedGISTLoss": "winnow.training.gist",
    "GuidedDataCollator": "winnow.training.gist",
    "GuideScoreCache": "winnow.training.guidance",
    "GuideStats": "winnow.training.guidance",
    "PRESETS": "winnow.training.guidance",
    "train_bi_encoder": "winnow.training.trainer",
    "train_cross_encoder": "winnow.training.trainer",
    "read_mined": "winnow.training.mined",
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
