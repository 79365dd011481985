"""The batching engine every model-backed reranker and encoder shares.

Items (token sequences) are sorted by length, longest first, and cut into batches by a *token budget*
(padded tokens per batch) rather than a fixed count, so short items travel in large batches and long ones
in small batches and padding waste stays small. Results are written back at each item's original
position, so callers never see the sorted order. On an accelerator out-of-memory error the failing batch
is split, the budget halved for the rest of the run, and nothing is lost or reordered.

Written by hand because no maintained library exposes this as a reusable piece: sentence-transformers
sorts by character length with a fixed batch size, and infinity/TEI keep theirs inside their servers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from winnow.rerankers._overlap import Lookahead
from winnow.rerankers.devices import empty_cache, is_oom

logger = logging.getLogger(__name__)

#: Padded tokens per batch by default. On a CPU large batches buy no throughput and cost padding
#: (benchmarks/rerank_throughput.py); an accelerator wants large batches to fill its cores.
DEFAULT_MAX_TOKENS_CPU = 4_096
DEFAULT_MAX_TOKENS = 32_768
DEFAULT_MAX_BATCH_SIZE = 256


def batch_limits(options: Mapping[str, Any], device: str) -> tuple[int, int]:
    """(max_tokens, max_batch_size) from a reranker's options, with per-device defaults."""
    max_tokens = options.get("max_tokens") or (
        DEFAULT_MAX_TOKENS_CPU if device.startswith("cpu") else DEFAULT_MAX_TOKENS
    )
    max_batch_size = options.get("max_batch_size") or DEFAULT_MAX_BATCH_SIZE
    return int(max_tokens), int(max_batch_size)


@dataclass
class BatchStats:
    """What one run of the engine did: batches, real and padded tokens, out-of-memory splits."""

    items: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_splits: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    #: Batches whose inputs were prepared on the look-ahead thread while the batch before ran.
    prepared_ahead: int = 0

    @property
    def padding_efficiency(self) -> float:
        """Real tokens / padded tokens (1.0 means no padding at all)."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0

    def add(self, other: BatchStats) -> None:
        self.items += other.items
        self.batches += other.batches
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.oom_splits += other.oom_splits
        self.batch_sizes.extend(other.batch_sizes)
        self.prepared_ahead += other.prepared_ahead


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> list[np.ndarray]:
    """Cut item indices into batches, longest first, each within ``max_tokens`` padded tokens.

    A batch's padded size is ``len(batch) * max(length in batch)``; since items are sorted by length
    (descending, ties in input order) the first item of each batch is its longest. An item longer than
    the whole budget still gets a batch of its own.
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_tokens and max_batch_size must be >= 1")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    i, n = 0, len(order)
    while i < n:
        longest = max(int(lengths[order[i]]), 1)
        size = max(1, min(max_batch_size, max_tokens // longest))
        batches.append(order[i : i + size])
        i += size
    return batches


def run_batches(
    lengths: Sequence[int] | np.ndarray,
    forward: Callable[[np.ndarray], np.ndarray],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    device: str = "cpu",
    progress: bool = False,
    desc: str = "scoring",
    prepare: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, BatchStats]:
    """Run ``forward`` over all items in token-budget batches and return results in input order.

    ``forward(indices)`` receives the indices of one batch (into the caller's items) and returns an
    array whose first dimension is ``len(indices)``. The returned array has the same trailing shape
    and dtype, with row ``i`` holding item ``i``'s result.

    With ``prepare``, ``forward`` receives ``prepare(indices)`` instead of the indices, and the next
    batch's ``prepare`` runs on a background thread while ``forward`` runs on the current one (see
    ``_overlap``): the same results, in the same order; an exception from either propagates.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    stats = BatchStats(items=len(lengths))
    if len(lengths) == 0:
        return np.zeros((0,), dtype=np.float32), stats

    out: np.ndarray | None = None
    pending = plan_batches(lengths, max_tokens, max_batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(lengths), desc=desc, unit="item", leave=False)
    budget = max_tokens
    ahead = Lookahead(prepare) if prepare is not None else None
    try:
        while pending:
            idx = pending.pop(0)
            try:
                if ahead is None:
                    result = np.asarray(forward(idx))
                else:
                    inputs = ahead.take(idx)
                    if pending:
                        ahead.start(pending[0])
                    result = np.asarray(forward(inputs))
                    inputs = None
            except Exception as exc:
                if ahead is not None:
                    inputs = None
                    ahead.drop()  # planned for batches the split below replaces
                if not is_oom(exc) or len(idx) == 1:
                    raise
                # Out of memory: halve the budget, re-plan this batch and everything after it.
                empty_cache(device)
                stats.oom_splits += 1
                budget = max(1, budget // 2)
                rest = np.concatenate([idx, *pending]) if pending else idx
                pending = plan_batches(
                    lengths[rest], max(budget, int(lengths[idx].max())), max_batch_size
                )
                pending = [rest[b] for b in pending]
                if len(pending[0]) >= len(idx):  # the budget floor did not shrink it: split
                    first = pending.pop(0)
                    half = len(first) // 2
                    pending[:0] = [first[:half], first[half:]]
                logger.warning(
                    "out of memory on a batch of %d items; retrying with a budget of %d tokens",
                    len(idx),
                    budget,
                )
                continue
            if result.shape[0] != len(idx):
                raise RuntimeError(
                    f"forward returned {result.shape[0]} results for a batch of {len(idx)} items"
                )
            if out is None:
                out = np.empty((len(lengths), *result.shape[1:]), dtype=result.dtype)
            out[idx] = result
            stats.batches += 1
            stats.batch_sizes.append(len(idx))
            stats.real_tokens += int(lengths[idx].sum())
            stats.padded_tokens += int(lengths[idx].max()) * len(idx)
            if bar is not None:
                bar.update(len(idx))
    finally:
        if ahead is not None:
            ahead.close()
            stats.prepared_ahead = ahead.hits
        if bar is not None:
            bar.close()
    assert out is not None  # at least one batch ran
    return out, stats
