"""Reranker kinds by name, imported lazily so that ``import winnow`` stays light."""

from __future__ import annotations

import importlib

from winnow.errors import ConfigError

_KINDS: dict[str, str] = {
    "cross-encoder": "winnow.rerankers.cross_encoder:CrossEncoderReranker",
    "bi-encoder": "winnow.rerankers.bi_encoder:BiEncoderReranker",
}


def register_kind(name: str, target: str) -> None:
    """Register ``"module:Class"`` as the reranker class for kind ``name``."""
    _KINDS[name] = target


def available_kinds() -> list[str]:
    return sorted(_KINDS)


def get_kind(name: str) -> type:
    target = _KINDS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown reranker kind {name!r}; valid kinds: {', '.join(available_kinds())}"
        )
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
