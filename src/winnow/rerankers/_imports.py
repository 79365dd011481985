"""One process-wide lock around the lazy imports of the heavy libraries (transformers and friends).

``transformers`` is a lazy module: ``from transformers import AutoConfig`` runs its module
``__getattr__``, which imports submodules on first use and is not thread-safe. Two models loading on
two threads (the server loads each model on its own worker thread) then race, and one of them can get
``ImportError: cannot import name 'AutoConfig' from 'transformers'`` (seen in 2 of 5 multi-model
starts). Every lazy import of transformers, sentence-transformers or tokenizers in ``rerankers/`` runs
inside :func:`heavy_imports`; the lock is re-entrant, so nested imports are fine, and it is held only
for the import, not for the loading of weights.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.RLock()


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Hold the process-wide import lock: ``with heavy_imports(): from transformers import X``."""
    with _LOCK:
        yield
