"""Server settings: one frozen dataclass, filled from ``WINNOW_*`` variables and the command line.

Environment variables are read once, by :meth:`ServerConfig.from_env`, when the server starts; the
library never reads them anywhere else. Command-line flags override the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from winnow.errors import ConfigError
from winnow.rerankers.registry import parse_model_spec

_ALIAS = re.compile(r"^[A-Za-z0-9_.-]+$")
#: What ``ready_when`` may be (see ``ServerConfig.ready_when``).
READY_POLICIES = ("all", "any")


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: the name clients use (``alias``), its kind (None: inferred) and source."""

    alias: str
    model: str
    kind: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        """Parse ``[ALIAS=][KIND:]MODEL``; without an alias, clients name the model as given."""
        text = spec.strip()
        if not text:
            raise ConfigError("empty model spec; expected [ALIAS=][KIND:]MODEL")
        alias, sep, rest = text.partition("=")
        if not sep or not _ALIAS.match(alias) or not rest:
            alias, rest = "", text
        kind, model = parse_model_spec(rest)
        if not model:
            raise ConfigError(f"model spec {spec!r} names no model")
        return cls(alias=alias or rest, model=model, kind=kind)

    @classmethod
    def parse_fallback(cls, spec: str) -> ModelSpec:
        """Parse ``NAME=[KIND:]MODEL``: the model to serve as ``NAME`` when NAME's own fails to load."""
        name, sep, rest = spec.strip().partition("=")
        if not sep or not _ALIAS.match(name) or not rest.strip():
            raise ConfigError(
                f"fallback {spec!r} is not NAME=[KIND:]MODEL (NAME: the served model it stands in "
                "for)"
            )
        return cls.parse(spec)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``winnow serve`` can be told. Limits are per request unless said otherwise."""

    models: tuple[ModelSpec, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    #: documents in one request
    max_documents: int = 1000
    #: characters in one document / in the query
    max_document_chars: int = 100_000
    max_query_chars: int = 10_000
    #: bytes in one request body
    max_body_bytes: int = 16 * 1024 * 1024
    #: windows per document a request may ask for with ``max_chunks_per_doc``
    max_chunks_per_doc: int = 64
    #: pairs handed to the model in one call (the engine then cuts them into token-budget batches)
    max_batch_pairs: int = 512
    #: how long the batcher waits for more requests before running a batch, in milliseconds
    max_wait_ms: float = 3.0
    #: requests waiting for the model, per model; one more is answered 429
    max_queue: int = 256
    #: seconds the server waits for in-flight requests on shutdown
    graceful_timeout: float = 30.0
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    #: more tries of a model load that failed (a thread-safety race or a busy disk can pass)
    load_retries: int = 2
    #: seconds before the first retry of a failed load; each further retry waits twice as long
    load_backoff: float = 1.0
    #: ``all``: /ready is 200 only when every model is ready; ``any``: when one is, none loading
    ready_when: str = "all"
    #: per served model, the model that serves under its name when its own fails to load
    fallbacks: tuple[ModelSpec, ...] = ()
    #: a cuda device asked for and absent runs on the CPU (with a warning) instead of failing
    device_fallback: bool = False

    def __post_init__(self) -> None:
        aliases = [m.alias for m in self.models]
        dupes = sorted({a for a in aliases if aliases.count(a) > 1})
        if dupes:
            raise ConfigError(f"model names must be unique; repeated: {', '.join(dupes)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        positive = (
            "max_documents",
            "max_document_chars",
            "max_query_chars",
            "max_body_bytes",
            "max_chunks_per_doc",
            "max_batch_pairs",
            "max_queue",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.graceful_timeout < 0:
            raise ConfigError("max_wait_ms and graceful_timeout must be >= 0")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")
        if self.api_key is not None:
            # The key is stripped as the bearer token is; an empty key would turn auth off.
            key = self.api_key.strip()
            if not key:
                raise ConfigError(
                    "api_key is empty (or only whitespace): give a real key, or leave --api-key "
                    "and WINNOW_API_KEY unset to serve without one"
                )
            object.__setattr__(self, "api_key", key)
        if self.load_retries < 0 or self.load_backoff < 0:
            raise ConfigError(
                f"load_retries and load_backoff must be >= 0, got {self.load_retries} and "
                f"{self.load_backoff}"
            )
        if self.ready_when not in READY_POLICIES:
            raise ConfigError(
                f"ready_when must be one of {', '.join(READY_POLICIES)}, got {self.ready_when!r}"
            )
        names = set(aliases)
        seen: set[str] = set()
        for fallback in self.fallbacks:
            if fallback.alias not in names:
                raise ConfigError(
                    f"fallback for {fallback.alias!r}: no served model has that name; served: "
                    f"{', '.join(aliases) or 'none'}"
                )
            if fallback.alias in seen:
                raise ConfigError(f"model {fallback.alias!r} has more than one fallback")
            seen.add(fallback.alias)

    def fallback_for(self, name: str) -> ModelSpec | None:
        return next((f for f in self.fallbacks if f.alias == name), None)

    @property
    def default_model(self) -> str | None:
        return self.models[0].alias if self.models else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ServerConfig:
        """Settings from ``WINNOW_<FIELD>`` variables, then ``overrides`` (None means "not given")."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = "WINNOW_" + ("CORS_ORIGINS" if f.name == "cors_origins" else f.name.upper())
            raw = environ.get(var)
            # an empty WINNOW_API_KEY is refused, not read as "no key" (it would turn auth off)
            if raw is None or (raw == "" and f.name != "api_key"):
                continue
            values[f.name] = _convert(f.name, raw, var)
        for name, value in overrides.items():
            if value is None or value == () or value == []:
                continue
            values[name] = _convert(name, value, f"--{name.replace('_', '-')}")
        return cls(**values)

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **changes)


_INTS = {
    "port",
    "max_length",
    "max_documents",
    "max_document_chars",
    "max_query_chars",
    "max_body_bytes",
    "max_chunks_per_doc",
    "max_batch_pairs",
    "max_queue",
}
_FLOATS = {"max_wait_ms", "graceful_timeout", "load_backoff"}
_INTS.add("load_retries")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _split(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s and s.strip()]


def _convert(name: str, value: Any, source: str) -> Any:
    """Convert a raw setting (a string from the environment, or a parsed flag) to its type."""
    try:
        if name == "models":
            specs = [v if isinstance(v, ModelSpec) else ModelSpec.parse(v) for v in _split(value)]
            return tuple(specs)
        if name == "fallbacks":
            specs = [
                v if isinstance(v, ModelSpec) else ModelSpec.parse_fallback(v)
                for v in _split(value)
            ]
            return tuple(specs)
        if name == "cors_origins":
            return tuple(_split(value))
        if name == "device_fallback":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError("expected one of 1, true, yes, on, 0, false, no, off")
            return text in _TRUE
        if name in _INTS:
            return int(value)
        if name in _FLOATS:
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"{source}={value!r} is not valid: {exc}") from exc
    if name not in {f.name for f in fields(ServerConfig)}:
        raise ConfigError(f"unknown server setting {name!r}")
    return str(value)
