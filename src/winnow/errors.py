"""Exceptions raised by winnow. Every error names what is wrong and where."""

from __future__ import annotations

from pathlib import Path


class WinnowError(Exception):
    """Base class of every error winnow raises on purpose."""


class ConfigError(WinnowError, ValueError):
    """A setting or option is invalid (unknown name, out of range, incompatible combination)."""


class InputError(WinnowError, TypeError, ValueError):
    """Input to a reranker or stage is malformed (wrong type, wrong shape, empty where not allowed)."""


class ModelLoadError(WinnowError):
    """A model could not be loaded, or is not the kind of model it was asked to be."""


class DatasetError(WinnowError, ValueError):
    """A collection, qrels or run file is malformed. Names the file and, when known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(f"{where}{message}")
        self.reason = message


class MissingExtraError(WinnowError, ImportError):
    """An optional dependency is missing; the message names the pip command that installs it."""

    def __init__(self, extra: str, module: str):
        self.extra = extra
        self.module = module
        super().__init__(
            f"{module!r} is required for this feature but is not installed. "
            f"Install it with: pip install 'winnow[{extra}]'"
        )


def require(module: str, extra: str):
    """Import and return ``module``, or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, module) from exc
