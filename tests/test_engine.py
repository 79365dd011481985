"""Token-budget batching: every item exactly once, budgets respected, order restored, OOM split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from winnow.rerankers.engine import plan_batches, run_batches


def test_plan_batches_covers_every_item_once_within_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    batches = plan_batches(lengths, max_tokens=1024, max_batch_size=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024
    # longest first
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)


def test_item_longer_than_budget_gets_its_own_batch():
    batches = plan_batches([10, 5000, 10], max_tokens=100)
    assert [b.tolist() for b in batches] == [[1], [0, 2]]


def test_run_batches_restores_input_order_and_counts_padding():
    lengths = np.array([3, 9, 1, 9, 4])

    def forward(idx):
        return lengths[idx].astype(np.float32) * 10 + idx

    out, stats = run_batches(lengths, forward, max_tokens=18, max_batch_size=8)
    np.testing.assert_array_equal(out, lengths * 10 + np.arange(5))
    assert stats.items == 5 and stats.real_tokens == lengths.sum()
    assert 0 < stats.padding_efficiency <= 1


def test_out_of_memory_splits_and_loses_nothing():
    lengths = np.full(40, 10)
    seen = []

    def forward(idx):
        seen.append(len(idx))
        if len(idx) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return idx.astype(np.float32)

    out, stats = run_batches(lengths, forward, max_tokens=400, max_batch_size=64)
    np.testing.assert_array_equal(out, np.arange(40, dtype=np.float32))
    assert stats.oom_splits >= 1 and max(stats.batch_sizes) <= 5


def test_other_errors_propagate_and_single_item_oom_raises():
    with pytest.raises(ValueError):
        run_batches([1, 2], lambda idx: (_ for _ in ()).throw(ValueError("boom")))

    def always_oom(idx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batches([5], always_oom)
