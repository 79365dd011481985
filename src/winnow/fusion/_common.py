"""Argument checks shared by the fusion methods."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from winnow.errors import ConfigError, InputError


def check_runs(runs: Sequence[Mapping[str, Mapping[str, float]]]) -> list:
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence):
        raise InputError(f"runs must be a sequence of runs, got {type(runs).__name__}")
    runs = list(runs)
    if not runs:
        raise InputError("fusion needs at least one run")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise InputError(f"run {i} must be a mapping query_id -> {{doc_id: score}}")
    return runs


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"got {len(weights)} weights for {n} runs")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ConfigError(f"weights must be finite and >= 0, got {weights}")
    return weights
