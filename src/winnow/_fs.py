"""Atomic file and folder writes: write beside the target, then rename over it in one step.

A reader never sees a half-written run, qrels file or cache entry, even when the writer is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success rename it to ``path``.

    If ``path`` appeared meanwhile (another process built the same cache entry), the new copy is
    discarded and the existing one kept: entries are keyed by content, so both are equal.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_entry(path: Path | None) -> Any:
    """A cache entry written by :func:`write_json_atomic`, or None when absent or unreadable.

    A damaged entry is logged and ignored (the caller recomputes it), never trusted.
    """
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable cache entry %s: %s", path, exc)
        return None


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the whole new one."""
    with atomic_open(path) as f:
        json.dump(data, f)
