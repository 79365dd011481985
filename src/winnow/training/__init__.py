"""Training-data tools: a reranker-guided in-batch loss and fine-tuning of bi- and cross-encoders.

Lazy like ``winnow`` itself: nothing here imports torch until a name is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (imported on first attribute access)
_LAZY = {
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'winnow.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
