"""Reranker kinds by name, imported lazily so that ``import winnow`` stays light, and model specs.

A model spec is the one syntax every command uses to name a reranker (``winnow serve --model``,
``winnow eval --reranker`` and its system expressions, ``winnow rerank --model``,
``winnow score --model``)::

    [KIND:]MODEL[?KEY=VALUE&KEY=VALUE...]

``KIND`` is a registered kind or an alias (:data:`KIND_ALIASES`); ``MODEL`` a hub id, a local folder
or an Ollama name (which may contain ``:``); the options after the first ``?`` are the kind's options
(and ``device``, ``dtype``, ``max_length``, ``activation``), values percent-decoded (``%20`` is a
space, ``%26`` an ``&``, ``%2C`` a comma). A spec that is an existing path is a model folder whole.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from winnow.errors import ConfigError

_KINDS: dict[str, str] = {
    "cross-encoder": "winnow.rerankers.cross_encoder:CrossEncoderReranker",
    "bi-encoder": "winnow.rerankers.bi_encoder:BiEncoderReranker",
    "late-interaction": "winnow.rerankers.late_interaction:LateInteractionReranker",
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
KIND_ALIASES = {"rerank": None, "llm": "llm-pointwise", "colbert": "late-interaction"}


_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model spec: kind (None: inferred from the model), model, and the options as text."""

    kind: str | None
    model: str
    options: tuple[tuple[str, str], ...] = ()


def _split_kind(spec: str) -> tuple[str | None, str]:
    prefix, sep, rest = spec.partition(":")
    if not sep or not rest:
        return None, spec
    if prefix in _KINDS:
        return prefix, rest
    if prefix in KIND_ALIASES:
        if KIND_ALIASES[prefix] is None:  # "rerank:" may still name the kind: rerank:KIND:MODEL
            return _split_kind(rest)
        return KIND_ALIASES[prefix], rest
    return None, spec


def _is_path(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):
        return False


def parse_model_ref(spec: str) -> ModelRef:
    """Parse ``[KIND:]MODEL[?KEY=VALUE&...]`` (see the module docstring).

    The option keys are checked for form and repetition here; whether the kind has them, and the
    value types, are checked by :func:`winnow.rerankers.loading.load_model_ref`.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a model spec must be a string, got {type(spec).__name__}")
    kind, rest = _split_kind(spec.strip())
    model, sep, query = rest.partition("?")
    if not sep or _is_path(rest):
        return ModelRef(kind, rest)
    if not model:
        raise ConfigError(f"model spec {spec!r} names no model before '?'")
    options: dict[str, str] = {}
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        if not eq or not _OPTION_KEY.match(key):
            raise ConfigError(
                f"model spec {spec!r}: option {item!r} is not KEY=VALUE (options follow '?', "
                "separated by '&': MODEL?template=bge-gemma&max_query_length=64)"
            )
        if key in options:
            raise ConfigError(f"model spec {spec!r} gives option {key!r} twice")
        options[key] = unquote(value)
    return ModelRef(kind, model, tuple(options.items()))


def parse_model_spec(spec: str) -> tuple[str | None, str]:
    """Split ``"KIND:MODEL"`` into (kind, model); a bare model gives (None, model).

    KIND is a registered kind (``cross-encoder``, ``bi-encoder``, ``llm-pointwise``...) or an alias:
    ``rerank`` (kind inferred from the model, or given after it: ``rerank:cross-encoder:MODEL``),
    ``llm`` (``llm-pointwise``) or ``colbert`` (``late-interaction``). A prefix that is neither is part of the model name. Options after
    ``?`` are left out (:func:`parse_model_ref` keeps them).
    """
    ref = parse_model_ref(spec)
    return ref.kind, ref.model
