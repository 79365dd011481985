"""Server settings: one frozen dataclass, filled from ``WINNOW_*`` variables and the command line.

Every field of :class:`ServerConfig` is a setting, and :func:`settings` derives the one table of them
(name -> environment variable -> flag -> type -> help) from the fields, so a field added to the
dataclass gets its variable and its flag without more code: ``max_queue`` is ``WINNOW_MAX_QUEUE`` and
``--max-queue``; a tuple field (``models``, ``cors_origins``) is a repeatable singular flag
(``--model``, ``--cors-origin``) and a comma-separated variable. The help of a setting is the ``#:``
comment above its field (or :data:`HELP`).

Environment variables are read once, by :meth:`ServerConfig.from_env`, when the server starts; the
library never reads them anywhere else. Command-line flags override the environment.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from winnow.errors import ConfigError
from winnow.rerankers.options import parse_bool
from winnow.rerankers.registry import ModelRef, parse_model_ref

_ALIAS = re.compile(r"^[A-Za-z0-9_.-]+$")
#: What ``ready_when`` may be (see ``ServerConfig.ready_when``).
READY_POLICIES = ("all", "any")


@dataclass(frozen=True)
class ModelSpec:
    """One model to serve: the name clients use (``alias``), its kind (None: inferred), source and
    the kind's options as written in the spec (``?KEY=VALUE&...``, typed when the model loads)."""

    alias: str
    model: str
    kind: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        """Parse ``[ALIAS=][KIND:]MODEL[?KEY=VALUE&...]``; without an alias, clients name the model
        as given. Option names (and, when the kind is given, values) are checked now."""
        text = spec.strip()
        if not text:
            raise ConfigError("empty model spec; expected [ALIAS=][KIND:]MODEL[?KEY=VALUE&...]")
        alias, sep, rest = text.partition("=")
        if not sep or not _ALIAS.match(alias) or not rest:
            alias, rest = "", text
        ref = parse_model_ref(rest)
        if not ref.model:
            raise ConfigError(f"model spec {spec!r} names no model")
        check_model_options(ref, spec)
        return cls(alias=alias or rest, model=ref.model, kind=ref.kind, options=ref.options)

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

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.kind, self.model, self.options)

    def load(self, **defaults: Any):
        """The reranker (through the shared cache); ``defaults`` are the server-wide device,
        dtype and max_length, which the spec's own options override."""
        from winnow.rerankers.loading import load_model_ref

        return load_model_ref(self.ref, **defaults)


def check_model_options(ref: ModelRef, spec: str) -> None:
    """Refuse, at start-up, options the kind does not have (or any kind has, kind unknown)."""
    if not ref.options:
        return
    from winnow.rerankers.options import LoaderOptions, declared, parse_text_options
    from winnow.rerankers.registry import available_kinds, get_kind

    try:
        if ref.kind is not None:
            parse_text_options(ref.kind, get_kind(ref.kind).options_class, dict(ref.options))
            return
        known = set(declared(LoaderOptions))
        for kind in available_kinds():
            known |= set(declared(get_kind(kind).options_class))
        for key, _ in ref.options:
            if key not in known:
                raise ConfigError(
                    f"no reranker kind has an option {key!r}; give the kind (KIND:MODEL?...) to "
                    "see its options"
                )
    except ConfigError as exc:
        raise ConfigError(f"model spec {spec!r}: {exc}") from None


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
        if self.warmup_samples < 0:
            raise ConfigError(f"warmup_samples must be >= 0 (0: off), got {self.warmup_samples}")
        if not 0 <= self.health_interval < float("inf"):  # NaN fails too
            raise ConfigError(
                f"health_interval must be a number of seconds >= 0 (0: off), "
                f"got {self.health_interval}"
            )
        if not 0 < self.health_timeout < float("inf"):
            raise ConfigError(f"health_timeout must be > 0 seconds, got {self.health_timeout}")
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
        """Settings from ``WINNOW_<FIELD>`` variables, then ``overrides`` (None means "not given").

        An override is a value of the field's type or its text; a bad value is a ConfigError
        naming the variable (or the flag) it came from.
        """
        table = {s.name: s for s in settings()}
        values: dict[str, Any] = {}
        for s in table.values():
            raw = environ.get(s.env)
            # an empty WINNOW_API_KEY is refused, not read as "no key" (it would turn auth off)
            if raw is None or (raw.strip() == "" and s.name != "api_key"):
                continue
            values[s.name] = s.convert(raw, s.env)
        for name, value in overrides.items():
            if value is None or value == () or value == []:
                continue
            if name not in table:
                raise ConfigError(f"unknown server setting {name!r}; settings: {', '.join(table)}")
            values[name] = table[name].convert(value, table[name].flag)
        return cls(**values)

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **changes)


#: Help of the settings whose field has no ``#:`` comment (a comment, when there is one, wins).
HELP: dict[str, str] = {
    "models": "model to serve (the first is the default): ALIAS is the name clients use, KIND "
    "cross-encoder, bi-encoder, llm-pointwise... (inferred when omitted), KEY an option of the kind",
    "host": "address to bind",
    "port": "port to listen on (0: any free port)",
    "api_key": "require 'Authorization: Bearer KEY' on every path but /health",
    "device": "cpu, cuda, mps (best available when unset)",
    "dtype": "float32, bfloat16, float16, int8 (auto when unset)",
    "max_length": "longest input in tokens (the model's own limit when unset)",
    "max_query_chars": "characters in the query",
    "cors_origins": "allow browser requests from this origin (CORS is off when unset)",
    "log_level": "uvicorn log level (critical, error, warning, info, debug, trace)",
}


@dataclass(frozen=True)
class Setting:
    """One server setting: the field, its variable and flag, its type and help."""

    name: str
    env: str
    flag: str
    type: Any  # the field's type: int, float, str, bool, X | None, tuple[X, ...]
    default: Any
    help: str

    @property
    def repeatable(self) -> bool:
        return typing.get_origin(self.type) is tuple

    @property
    def item_type(self) -> Any:
        """The type of one value: the element type of a tuple, without ``None``."""
        tp = typing.get_args(self.type)[0] if self.repeatable else self.type
        args = [a for a in _union_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str

    @property
    def optional(self) -> bool:
        return type(None) in _union_args(self.type)

    @property
    def type_name(self) -> str:
        name = {int: "int", float: "float", bool: "bool", str: "str", ModelSpec: "spec"}.get(
            self.item_type, getattr(self.item_type, "__name__", "str")
        )
        return f"{name} list" if self.repeatable else name

    def default_text(self) -> str:
        if self.name == "models":
            return "required"
        if self.default is None or self.default == ():
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)

    def parse_one(self, text: str) -> Any:
        """One value from text; a ValueError saying what was expected."""
        tp = self.item_type
        if self.optional and text.strip().lower() in ("none", "null"):
            return None
        if tp is bool:
            return parse_bool(text)
        if tp is int:
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError("expected an integer") from None
        if tp is float:
            try:
                return float(text.strip())
            except ValueError:
                raise ValueError("expected a number") from None
        if tp is ModelSpec:
            return (
                ModelSpec.parse_fallback(text)
                if self.name == "fallbacks"
                else ModelSpec.parse(text)
            )
        return text.strip() if self.repeatable else text

    def convert(self, value: Any, source: str) -> Any:
        """A value of the field's type from text (a variable, a flag) or from a Python value."""
        try:
            if self.repeatable:
                items = _split(value) if isinstance(value, str) else list(value)
                out = [v if not isinstance(v, str) else self.parse_one(v) for v in items]
                return tuple(v for v in out if v != "")
            if isinstance(value, str):
                return self.parse_one(value)
            return value
        except ValueError as exc:
            if isinstance(exc, ConfigError) and self.item_type is ModelSpec:
                raise ConfigError(f"{source}: {exc}") from None
            raise ConfigError(f"{source}={value!r} is not valid: {exc} ({self.help})") from None

    def format(self, value: Any) -> str:
        """The text of ``value`` as the environment variable would hold it (inverse of convert)."""
        if self.repeatable:
            return ",".join(self.format_one(v) for v in value)
        return self.format_one(value)

    def format_one(self, value: Any) -> str:
        if isinstance(value, ModelSpec):
            spec = value.model if value.kind is None else f"{value.kind}:{value.model}"
            if value.options:
                from urllib.parse import quote

                spec += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in value.options)
            if not _ALIAS.match(
                value.alias
            ):  # no alias was given: the alias is the spec as written
                return value.alias
            return spec if value.alias == spec else f"{value.alias}={spec}"
        if isinstance(value, bool):
            return "true" if value else "false"
        return "none" if value is None else str(value)


def _union_args(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return (tp,)


def _split(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _comments(cls: type) -> dict[str, str]:
    """{field: its ``#:`` comment} from the class source (empty when the source is not there)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out, pending = {}, []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = re.match(r"^([A-Za-z_]\w*)\s*:", stripped)
        if m and pending:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


@functools.cache
def settings(cls: type | None = None) -> tuple[Setting, ...]:
    """The settings table of ``cls`` (default :class:`ServerConfig`), derived from its fields."""
    cls = cls or ServerConfig
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    out = []
    for f in fields(cls):
        tp = hints[f.name]
        repeatable = typing.get_origin(tp) is tuple
        flag_name = f.name[:-1] if repeatable and f.name.endswith("s") else f.name
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        help_text = comments.get(f.name) or HELP.get(f.name) or f.name.replace("_", " ")
        out.append(
            Setting(
                name=f.name,
                env="WINNOW_" + f.name.upper(),
                flag="--" + flag_name.replace("_", "-"),
                type=tp,
                default=default,
                help=help_text,
            )
        )
    return tuple(out)
