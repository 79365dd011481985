"""What the server knows of each served model once it is loaded: details and size, computed once.

``details`` is :func:`winnow.rerankers.info.model_info` (``/v1/models``); ``size`` is the
(parameters, bytes) pair of the model's torch module (``/ready``, ``/metrics``). Both are cached
against the reranker instance they describe, and are None while the model is not serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from winnow.server.batcher import READY

if TYPE_CHECKING:
    from winnow.rerankers.base import Reranker
    from winnow.server.batcher import Batcher

logger = logging.getLogger(__name__)


class ModelFacts:
    """Details and sizes of the models of ``batchers``; ``names`` maps alias -> the user's name."""

    def __init__(self, batchers: Mapping[str, Batcher], names: Mapping[str, str]):
        self.batchers = batchers
        self.names = names
        self._details: dict[str, tuple[Reranker, dict[str, Any] | None]] = {}
        self._sizes: dict[str, tuple[Reranker, tuple[int, int] | None]] = {}

    def _serving(self, name: str) -> Reranker | None:
        b = self.batchers[name]
        return b.reranker if b.state == READY and b.reranker is not None else None

    def details(self, name: str) -> dict[str, Any] | None:
        """``model_info`` of the served model. Blocking (Ollama asks its server): call in a thread."""
        from winnow.rerankers.info import model_info

        reranker = self._serving(name)
        if reranker is None:
            return None
        cached = self._details.get(name)
        if cached is None or cached[0] is not reranker:
            try:
                info = model_info(reranker, self.names[name])
            except Exception as exc:  # not worth failing /v1/models over; asked again next time
                logger.warning("no model information for %r: %s", name, exc)
                return None
            cached = self._details[name] = (reranker, info)
        return cached[1]

    def size(self, name: str) -> tuple[int, int] | None:
        """(parameters, bytes) of the served model's torch module; None when it has none."""
        from winnow.rerankers.info import model_size, torch_module

        reranker = self._serving(name)
        if reranker is None:
            return None
        cached = self._sizes.get(name)
        if cached is None or cached[0] is not reranker:
            module = torch_module(reranker)
            cached = self._sizes[name] = (reranker, model_size(module) if module else None)
        return cached[1]

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Sizes of every serving model that has one."""
        out = {name: self.size(name) for name in self.batchers}
        return {name: size for name, size in out.items() if size is not None}
