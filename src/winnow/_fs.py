"""Atomic file and folder writes: write beside the target, then rename over it in one step.

A reader never sees a half-written run, qrels file or cache entry, even when the writer is killed.
Temporary files and folders are created with modes ``0o666`` / ``0o777`` less the umask, as
``open()`` and ``mkdir`` would: ``tempfile.mkstemp`` / ``mkdtemp`` make them private (``0o600`` /
``0o700``) whatever the umask, which after the rename would leave every output unreadable by the
group and others.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

_ATTEMPTS = 100


def _temp_name(folder: Path, prefix: str, suffix: str) -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}{suffix}"


def make_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new file in ``folder`` (mode ``0o666`` less the umask); ``(fd, path)``.

    ``tempfile.mkstemp`` without its fixed ``0o600``: ``O_EXCL`` with a random name, retried on a
    clash, so it is as safe against races.
    """
    flags = (
        os.O_RDWR
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_BINARY", 0)
    )
    for _ in range(_ATTEMPTS):
        path = _temp_name(folder, prefix, suffix)
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def make_temp_dir(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create a new folder in ``folder`` (mode ``0o777`` less the umask), like ``mkdtemp``."""
    for _ in range(_ATTEMPTS):
        path = _temp_name(folder, prefix, suffix)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary folder name", str(folder))


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(target.parent, f".{target.name}.")
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
    tmp = make_temp_dir(target.parent, f".{target.name}.")
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


@contextlib.contextmanager
def replace_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it takes ``path``'s place.

    The previous folder (if any) is renamed aside, the new one renamed in, then the old one
    removed: readers see the old folder or the whole new one, never a mix of both (a file of the
    old one left beside the new ones). The new folder keeps the old one's permissions. On error
    the temporary folder is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.")
    try:
        yield tmp
        old = None
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
            old = _temp_name(target.parent, f".{target.name}.", ".old")
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None:
                os.rename(old, target)  # put the previous folder back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` that a killed writer left behind.

    Only call this while holding the lock on ``path``: a live writer's folder looks the same.
    """
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.(tmp|old)")
    removed = []
    for sibling in target.parent.glob(f".{target.name}.*"):
        if pattern.fullmatch(sibling.name):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed
