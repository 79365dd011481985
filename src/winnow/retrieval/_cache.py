"""On-disk cache entries for indexes and embeddings: one folder per content-hash key.

An entry is ``<cache_dir>/<kind>/<key>/`` holding the payload plus ``meta.json`` (the parameters
that produced it, for people reading the cache). Entries are written into a temporary folder and
renamed into place, so a folder that exists is always complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from winnow._fs import atomic_directory
from winnow._hashing import params_hash
from winnow.errors import ConfigError

logger = logging.getLogger(__name__)

META = "meta.json"


def entry_dir(cache_dir: str | os.PathLike, kind: str, params: Mapping[str, Any]) -> Path:
    """The folder of the entry keyed by ``params`` (which must include every content hash)."""
    return Path(cache_dir).expanduser() / kind / params_hash(params)[:32]


def is_complete(entry: Path) -> bool:
    return (entry / META).is_file()


def write_meta(folder: Path, params: Mapping[str, Any]) -> None:
    (folder / META).write_text(
        json.dumps(dict(params), indent=2, sort_keys=True, default=str) + "\n"
    )


def save_entry(entry: Path, params: Mapping[str, Any], write: Callable[[Path], None]) -> bool:
    """Write an entry atomically with ``write(folder)`` plus ``meta.json``; True when saved.

    A cache that cannot be written (read-only folder, full disk) is logged and skipped: the
    result in memory is still good, only the next run will recompute it.
    """
    try:
        with atomic_directory(entry) as tmp:
            write(tmp)
            write_meta(tmp, params)
    except OSError as exc:
        logger.warning("could not write cache entry %s: %s", entry, exc)
        return False
    return True


def checked_checkpoint_every(value: Any) -> int:
    """``checkpoint_every`` (documents encoded, and checkpointed, at a time) if it is valid."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"checkpoint_every must be a positive number of documents, got {value!r}")
    return value
