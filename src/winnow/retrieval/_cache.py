"""On-disk cache entries for indexes and embeddings: one folder per content-hash key.

An entry is ``<cache_dir>/<kind>/<key>/`` holding the payload plus ``meta.json`` (the parameters
that produced it, for people reading the cache). Entries are written into a temporary folder and
renamed into place, so a folder that exists is always complete.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from winnow._hashing import params_hash

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
