"""Typed reranker options: one frozen dataclass per kind, unknown keys refused with the valid ones listed.

Each reranker class names its options dataclass in ``options_class`` (fields with a type, a default
and a ``help`` in their metadata); :func:`check_options` validates the keyword arguments given to
``load_reranker`` against it, and :func:`parse_text_options` converts the ``KEY=VALUE`` text of a model
spec (``KIND:MODEL?template=bge-gemma&max_query_length=64``) to the declared types. Names that
sentence-transformers users bring (``batch_size``, ``show_progress_bar``...) are refused with what
winnow calls them.

Written by hand (a few dozen lines over ``dataclasses`` and ``typing``): pydantic would do the
conversion, but the house rule keeps pydantic at the HTTP boundary, and no small library gives
"did you mean" plus per-kind listings.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from winnow.errors import ConfigError

#: Spellings a user may write for the booleans (case-insensitive), everywhere winnow reads text.
TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")
#: Spellings of "no value" for options that may be None.
NONE_WORDS = ("none", "null")


def option(default: Any, help: str, must: str | None = None) -> Any:
    """A dataclass field of an options class: its default, a one-line ``help`` and, optionally, what
    a valid value ``must`` be (used in the error message instead of the type's description)."""
    meta = {"help": help}
    if must:
        meta["must"] = must
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RerankerOptions:
    """Options every kind accepts: the batching engine's limits and the progress bar."""

    max_tokens: int | None = option(
        None, "padded tokens per batch (default 4096 on CPU, 32768 on accelerators)"
    )
    max_batch_size: int | None = option(None, "pairs per batch at most (default 256)")
    show_progress: bool = option(False, "show a progress bar while scoring")


@dataclass(frozen=True)
class LoaderOptions:
    """``load_reranker``'s own keyword arguments, which a model spec may set as well."""

    device: str | None = option(None, "cuda, mps or cpu (best available when unset)")
    dtype: str | None = option(None, "float32, bfloat16, float16 or int8 (auto when unset)")
    max_length: int | None = option(None, "longest input in tokens (the model's own limit)")
    activation: str = option("none", "none, sigmoid or softmax")


#: Names sentence-transformers (and other libraries) use, and what winnow calls them.
FOREIGN_NAMES: dict[str, str] = {
    "batch_size": "max_tokens (padded tokens per batch) or max_batch_size (pairs per batch)",
    "show_progress_bar": "show_progress",
    "max_seq_length": "max_length",
    "activation_fn": "activation ('none', 'sigmoid' or 'softmax')",
    "apply_softmax": "activation='softmax'",
    "torch_dtype": "dtype",
    "prompt": "query_prompt / document_prompt (bi-encoder)",
    "prompt_name": "query_prompt / document_prompt (bi-encoder)",
    "model_name": "the model argument itself",
    "model_name_or_path": "the model argument itself",
    "convert_to_tensor": "nothing: scores are always a float32 numpy array",
    "convert_to_numpy": "nothing: scores are always a float32 numpy array",
    "top_k": "an argument of rank() / rank_many(), not of load_reranker()",
    "top_n": "top_k, an argument of rank() / rank_many(), not of load_reranker()",
    "return_documents": "an argument of rank() / rank_many(), not of load_reranker()",
}


@dataclass(frozen=True)
class OptionInfo:
    """One declared option: its name, type, default and help."""

    name: str
    type: Any
    default: Any
    help: str
    must: str | None = None

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


@functools.cache
def declared(options_class: type) -> dict[str, OptionInfo]:
    """{name: OptionInfo} of an options dataclass (and of the loader's keywords)."""
    hints = typing.get_type_hints(options_class)
    # the class's own options first, then those it inherits (in method resolution order)
    rank = {}
    for depth, klass in enumerate(options_class.__mro__):
        for name in vars(klass).get("__annotations__", {}):
            rank.setdefault(name, depth)
    out = {}
    for f in sorted(fields(options_class), key=lambda f: rank.get(f.name, 0)):
        default = f.default if f.default is not MISSING else None
        out[f.name] = OptionInfo(
            f.name, hints[f.name], default, f.metadata.get("help", ""), f.metadata.get("must")
        )
    return out


def describe(options_class: type) -> str:
    """``name (type, default)`` for every option, one line each: for listings and ``--help``."""
    lines = []
    for info in declared(options_class).values():
        lines.append(f"{info.name} ({info.type_name}, default {info.default!r}): {info.help}")
    return "\n".join(lines)


def _args(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return (tp,)


def _type_name(tp: Any) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str", type(None): "none"}
    if tp is Any:
        return "any"
    return " | ".join(names.get(a, getattr(a, "__name__", str(a))) for a in _args(tp))


def _describe_type(tp: Any) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    parts = [words.get(a, _type_name(a)) for a in _args(tp) if a is not type(None)]
    if type(None) in _args(tp):
        parts.append("none")
    return " or ".join(parts)


def _matches(value: Any, tp: Any) -> bool:
    """Whether a Python value has the declared type (an int passes for a float; a bool is no int)."""
    if tp is Any:
        return True
    for a in _args(tp):
        if a is type(None) and value is None:
            return True
        if a is bool and isinstance(value, bool):
            return True
        if a is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if a is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if a is str and isinstance(value, str):
            return True
    return False


def parse_bool(text: str) -> bool:
    """``1/0``, ``true/false``, ``yes/no`` (any case); anything else is a ValueError."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")


def parse_text(text: str, tp: Any) -> Any:
    """Convert ``text`` to the declared type ``tp``; a ValueError when it is not one."""
    if tp is Any:
        return text
    args = _args(tp)
    if type(None) in args and text.strip().lower() in NONE_WORDS:
        return None
    for a in args:  # in declaration order: ``str | int`` keeps text, ``int | str`` tries int first
        try:
            if a is bool:
                return parse_bool(text)
            if a is int:
                return int(text.strip())
            if a is float:
                return float(text.strip())
            if a is str:
                return text
        except ValueError:
            continue
    raise ValueError(f"expected {_describe_type(tp)}")


def _valid_list(kind: str, valid: Mapping[str, OptionInfo]) -> str:
    return f"options of {kind}: {', '.join(valid)}"


def unknown_option(kind: str, key: str, valid: Mapping[str, OptionInfo]) -> ConfigError:
    """The error for an option ``kind`` does not have: what winnow calls it, or the closest names."""
    hint = ""
    if key in FOREIGN_NAMES:
        hint = f"; winnow calls it {FOREIGN_NAMES[key]}"
    else:
        close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {' or '.join(close)}?"
    end = "" if hint.endswith("?") else "."
    return ConfigError(
        f"unknown option {key!r} for {kind}{hint}{end} Valid {_valid_list(kind, valid)}"
    )


def _bad_value(kind: str, info: OptionInfo, value: Any, valid: Mapping[str, OptionInfo], why=""):
    must = info.must or _describe_type(info.type)
    why = f" ({why})" if why and not info.must else ""
    return ConfigError(
        f"{info.name} must be {must}, got {value!r}{why} (option of {kind}; "
        f"{_valid_list(kind, valid)})"
    )


def check_options(kind: str, options_class: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate Python option values (``load_reranker(**options)``) against the kind's declaration.

    Returns them unchanged; raises ConfigError for an unknown key or a value of the wrong type.
    """
    valid = declared(options_class)
    for key, value in options.items():
        info = valid.get(key)
        if info is None:
            raise unknown_option(kind, key, valid)
        if not _matches(value, info.type):
            raise _bad_value(kind, info, value, valid)
    return dict(options)


def parse_text_options(
    kind: str, options_class: type, options: Mapping[str, str], *, loader: bool = True
) -> dict[str, Any]:
    """Convert a model spec's ``KEY=VALUE`` texts to the declared types of ``kind``'s options.

    With ``loader``, ``device``, ``dtype``, ``max_length`` and ``activation`` are accepted too.
    """
    valid = {**(declared(LoaderOptions) if loader else {}), **declared(options_class)}
    out: dict[str, Any] = {}
    for key, text in options.items():
        info = valid.get(key)
        if info is None:
            raise unknown_option(kind, key, valid)
        try:
            out[key] = parse_text(text, info.type)
        except ValueError as exc:
            raise _bad_value(kind, info, text, valid, str(exc)) from None
    return out


def split_loader_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(load_reranker's own keywords, the kind's options) of a parsed option mapping."""
    loader = declared(LoaderOptions)
    return (
        {k: v for k, v in options.items() if k in loader},
        {k: v for k, v in options.items() if k not in loader},
    )


def options_instance(kind: str, options_class: type, options: Mapping[str, Any]):
    """The frozen options object of a reranker: declared defaults, overridden by ``options``."""
    return options_class(**check_options(kind, options_class, options))
