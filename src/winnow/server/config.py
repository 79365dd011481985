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
    #: pairs of a deep warm-up at start (at the largest batch shape: up to max_batch_pairs pairs of
    #: max_length tokens); 0: only the one-pair warm-up
    warmup_samples: int = 0
    #: seconds between deep health checks through each model's batcher; 0: off
    health_interval: float = 0.0
    #: seconds a deep health check (periodic or /ready?deep=1) may take before it counts as failed
    health_timeout: float = 30.0

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
        if self.warmup_samples < 0:
            raise ConfigError(f"warmup_samples must be >= 0 (0: off), got {self.warmup_samples}")
        if not 0 <= self.health_interval < float("inf"):  # NaN fails too
            raise ConfigError(
                f"health_interval must be a number of seconds >= 0 (0: off), "
                f"got {self.health_interval}"
            )
        if not 0 < self.health_timeout < float("inf"):
            raise ConfigError(f"health_timeout must be > 0 seconds, got {self.health_timeout}")

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
            if raw is None or raw == "":
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
_FLOATS = {"max_wait_ms", "graceful_timeout"}
_INTS |= {"warmup_samples"}
_FLOATS |= {"health_interval", "health_timeout"}


def _split(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [s.strip() for s in items if s and s.strip()]


def _convert(name: str, value: Any, source: str) -> Any:
    """Convert a raw setting (a string from the environment, or a parsed flag) to its type."""
    try:
        if name == "models":
            specs = [v if isinstance(v, ModelSpec) else ModelSpec.parse(v) for v in _split(value)]
            return tuple(specs)
        if name == "cors_origins":
            return tuple(_split(value))
        if name in _INTS:
            return int(value)
        if name in _FLOATS:
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"{source}={value!r} is not valid: {exc}") from exc
    if name not in {f.name for f in fields(ServerConfig)}:
        raise ConfigError(f"unknown server setting {name!r}")
    return str(value)
