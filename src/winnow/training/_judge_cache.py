"""Judge scores kept on disk per (judge, query text, document text), so re-mining costs no model call.

An entry is ``<cache_dir>/judge/<key>/`` (:func:`winnow.retrieval._cache.entry_dir`, keyed by the
judge's identity: class, model fingerprint, kind, device, dtype, max length, activation, options
and the winnow version) holding ``meta.json`` and up to 256 shard files ``NN.json``, each a JSON
object ``{pair_hash: score}``. A pair's hash is the sha256 of its length-prefixed query and
document texts, so a pair is found again whatever query id, document id, split, candidate system
or thresholds it comes with, and a changed text can never hit a stale score.

Shards are rewritten whole and atomically (read, merge, write beside, rename): a reader sees the
old shard or the new one. Two processes adding to the same shard at the same moment can lose one
side's new entries (last rename wins); those pairs are only scored again next time, never wrong.
Scores are stored as JSON doubles, which round-trip the judge's float32 scores exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from winnow._fs import read_json_entry, write_json_atomic
from winnow._hashing import _feed
from winnow.retrieval._cache import entry_dir, is_complete, write_meta

logger = logging.getLogger(__name__)

KIND = "judge"


def pair_hash(query: str, document: str) -> str:
    """sha256 of a (query, document) pair's texts, each length-prefixed."""
    h = hashlib.sha256()
    _feed(h, query)
    _feed(h, document)
    return h.hexdigest()


class JudgeCache:
    """Scores of one judge, read and written by pair hash (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, identity: Mapping[str, Any]):
        self.identity = dict(identity)
        self.folder = entry_dir(cache_dir, KIND, self.identity)

    def get_many(self, keys: Iterable[str]) -> dict[str, float]:
        """The cached scores among ``keys`` (absent keys are left out)."""
        wanted: dict[str, set[str]] = {}
        for key in keys:
            wanted.setdefault(key[:2], set()).add(key)
        found: dict[str, float] = {}
        for prefix, group in wanted.items():
            shard = read_json_entry(self.folder / f"{prefix}.json")
            if not isinstance(shard, dict):
                continue
            for key in group & shard.keys():
                value = shard[key]
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found[key] = float(value)
        return found

    def put_many(self, scores: Mapping[str, float]) -> bool:
        """Add ``scores`` to their shards; True when written. A cache that cannot be written
        (read-only folder, full disk) is logged and skipped: the scores in hand stay good."""
        if not scores:
            return True
        by_shard: dict[str, dict[str, float]] = {}
        for key, value in scores.items():
            by_shard.setdefault(key[:2], {})[key] = float(value)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not is_complete(self.folder):
                write_meta(self.folder, self.identity)
            for prefix, new in by_shard.items():
                path = self.folder / f"{prefix}.json"
                old = read_json_entry(path)
                merged = {**old, **new} if isinstance(old, dict) else new
                write_json_atomic(path, merged)
        except OSError as exc:
            logger.warning("could not write judge cache %s: %s", self.folder, exc)
            return False
        return True
