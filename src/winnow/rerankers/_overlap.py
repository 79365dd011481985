"""One batch of look-ahead for the engine: prepare batch i+1 on a background thread while batch i runs.

A model-backed scorer splits its per-batch work in two: ``prepare(indices)`` (pad the token ids,
build tensors, copy them to the device: host work) and ``forward(inputs)`` (the model). With a
:class:`Lookahead` the engine starts ``prepare`` of the next planned batch before it calls
``forward`` on the current one, so on a GPU the host work hides behind the compute.

Device-agnostic and bounded: one worker thread and at most one batch prepared ahead (its inputs are
the only extra memory). Results still go to each item's own position (the engine writes them by
index), an exception raised by ``prepare`` is raised again in the caller's thread when that batch is
taken, and no thread outlives the engine's call (``close`` waits for the one in flight).

Written by hand because the standard library's ``ThreadPoolExecutor`` is the whole mechanism; what
is winnow's is the rule for discarding a prepared batch when the engine re-plans after an
out-of-memory split (the indices it was prepared for no longer form a batch).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


class Lookahead:
    """Prepares at most one batch ahead on one background thread."""

    def __init__(self, prepare: Callable[[np.ndarray], Any]):
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winnow-prepare")
        self._ahead: tuple[np.ndarray, Future] | None = None
        #: How many batches were taken already prepared (tests read it to prove the overlap ran).
        self.hits = 0

    def start(self, indices: np.ndarray) -> None:
        """Begin preparing the batch ``indices`` (the one the engine will take next)."""
        self.drop()
        self._ahead = (indices, self._pool.submit(self._prepare, indices))

    def take(self, indices: np.ndarray) -> Any:
        """``prepare(indices)``: the prepared result when it was started for this very batch (its
        exception re-raised here), else computed now, in the caller's thread."""
        if self._ahead is not None and self._ahead[0] is indices:
            future = self._ahead[1]
            self._ahead = None
            self.hits += 1
            return future.result()
        self.drop()
        return self._prepare(indices)

    def drop(self) -> None:
        """Discard the batch prepared ahead, waiting for it if it is still running.

        Its inputs are freed; an error it raised is dropped with it (the engine prepares those
        items again, in their new batches, and the error comes back there)."""
        if self._ahead is None:
            return
        future = self._ahead[1]
        self._ahead = None
        if not future.cancel():
            future.exception()  # waits; never leaves a prepare running behind the caller

    def close(self) -> None:
        self.drop()
        self._pool.shutdown(wait=True)
