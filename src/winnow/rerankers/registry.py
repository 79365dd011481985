"""Reranker kinds by name, imported lazily so that ``import winnow`` stays light."""

from __future__ import annotations

import importlib

from winnow.errors import ConfigError

_KINDS: dict[str, str] = {
    "cross-encoder": "winnow.rerankers.cross_encoder:CrossEncoderReranker",
    "bi-encoder": "winnow.rerankers.bi_encoder:BiEncoderReranker",
    "llm-pointwise": "winnow.rerankers.llm.pointwise:LLMPointwiseReranker",
    "llm-listwise": "winnow.rerankers.llm.listwise:LLMListwiseReranker",
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


#: Short prefixes accepted in model specs ("llm:PATH") besides the kind names themselves.
KIND_ALIASES = {"rerank": None, "llm": "llm-pointwise"}


def parse_model_spec(spec: str) -> tuple[str | None, str]:
    """Split ``"KIND:MODEL"`` into (kind, model); a bare model gives (None, model).

    KIND is a registered kind (``cross-encoder``, ``bi-encoder``, ``llm-pointwise``...) or an alias:
    ``rerank`` (kind inferred from the model, or given after it: ``rerank:cross-encoder:MODEL``) or
    ``llm`` (``llm-pointwise``). A prefix that is neither is part of the model name.
    """
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        return None, spec
    if prefix in _KINDS:
        return prefix, rest
    if prefix in KIND_ALIASES:
        if KIND_ALIASES[prefix] is None:  # "rerank:" may still name the kind: rerank:KIND:MODEL
            return parse_model_spec(rest)
        return KIND_ALIASES[prefix], rest
    return None, spec
