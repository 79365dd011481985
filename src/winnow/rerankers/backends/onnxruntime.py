"""ONNX Runtime backend: an ``InferenceSession`` on the CPU over an exported model file.

All graph optimisations on (``ORT_ENABLE_ALL``: attention and LayerNorm fusions), one inference at
a time (the engine sends batches one after another), ``intra_op_num_threads`` = ``threads`` or
torch's thread count, so the backends share the CPU the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from winnow.errors import ModelLoadError


def default_threads(threads: int | None) -> int:
    if threads:
        return int(threads)
    import torch

    return int(torch.get_num_threads())


def ort_runner(path: Path, threads: int | None) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """``run(feeds) -> first output`` of a CPU session over ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = default_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    wanted = {i.name for i in session.get_inputs()}

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        return np.asarray(out, dtype=np.float32)

    return run
