"""Scale-out on Daft: the heavy stages of winnow as Daft jobs (``pip install 'winnow[distributed]'``).

Daft's native runner uses the cores of this machine; its Ray runner a cluster
(``pip install 'winnow[ray]'``). The jobs wrap the winnow objects used in-process, one model per
worker, so their results are the in-process results (docs/distributed.md):

- :func:`score_pairs_job`: a (query_id, doc_id, query, text) table plus score, truncated,
  num_tokens;
- :func:`encode_job`: a corpus table to (doc_id, embedding);
- :class:`DaftRerank` / :class:`DaftDense` and :func:`on_engine`: ``winnow eval`` and
  ``winnow rerank`` with ``--engine daft``, sharing the local engine's cache entries;
- :func:`read_table` / :func:`write_table` / :func:`load_dataset_url`: inputs from a path or URL
  (``http(s)://``, ``s3://``, ``gs://``) streamed by Daft's readers.

Importing this package does not import daft; the first job does, and a missing extra raises
:class:`~winnow.errors.MissingExtraError` naming the pip command.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EngineOptions": "winnow.distributed.engine",
    "DistributedError": "winnow.distributed.engine",
    "use_runner": "winnow.distributed.engine",
    "score_pairs_job": "winnow.distributed.jobs",
    "encode_job": "winnow.distributed.jobs",
    "collect": "winnow.distributed.jobs",
    "read_table": "winnow.distributed.io",
    "write_table": "winnow.distributed.io",
    "load_dataset_url": "winnow.distributed.io",
    "read_run_table": "winnow.distributed.io",
    "DaftRerank": "winnow.distributed.stages",
    "DaftDense": "winnow.distributed.stages",
    "on_engine": "winnow.distributed.stages",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'winnow.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
