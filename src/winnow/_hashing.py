"""Content hashes that key on-disk caches: sha256 over exactly what the cached result depends on.

Every field is length-prefixed, so no two different inputs can serialise to the same byte stream
(``("ab", "c")`` and ``("a", "bc")`` hash differently). Hashing streams over the corpus; nothing
is concatenated in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from winnow.types import Document


def _feed(h: Any, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def corpus_hash(corpus: Mapping[str, Document]) -> str:
    """sha256 of a corpus's ids, titles and texts, in iteration order (positions matter to indexes)."""
    h = hashlib.sha256()
    count = 0
    for doc_id, doc in corpus.items():
        _feed(h, str(doc_id))
        _feed(h, doc.title or "")
        _feed(h, doc.text)
        count += 1
    h.update(count.to_bytes(8, "little"))
    return h.hexdigest()


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable mapping (keys sorted)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
