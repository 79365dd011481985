"""OpenVINO backend: the same ONNX file compiled for the CPU by ``openvino.Core().compile_model``.

Shapes stay dynamic (batch and sequence, as exported). The engine sends one batch at a time, so the
``LATENCY`` performance hint (one stream using every thread) is the right one; ``THROUGHPUT`` would
split the cores into streams that only parallel requests fill. The inference precision is pinned to
``f32``: on CPUs with bfloat16 instructions OpenVINO would otherwise compute in bf16 by default, and
``dtype="float32"`` promises torch's numbers. int8 compiles the QDQ file made by
:mod:`.quantize` (OpenVINO reads the Quantize/DequantizeLinear pairs as its own int8 ops).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from winnow.errors import ModelLoadError
from winnow.rerankers.backends.onnxruntime import default_threads


def compile_settings(threads: int | None) -> dict:
    """The CPU plugin's settings: latency hint, the thread count, float32 inference."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": default_threads(threads),
        "INFERENCE_PRECISION_HINT": "f32",
    }


def openvino_runner(
    path: Path, threads: int | None
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """``run(feeds) -> first output`` of the model at ``path`` compiled for the CPU."""
    import openvino as ov

    core = ov.Core()
    try:
        compiled = core.compile_model(str(path), "CPU", compile_settings(threads))
    except Exception as exc:
        raise ModelLoadError(f"OpenVINO cannot compile {path}: {exc}") from exc
    names = [p.get_any_name() for p in compiled.inputs]
    request = compiled.create_infer_request()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = request.infer({n: feeds[n] for n in names})
        return np.array(result[compiled.outputs[0]], dtype=np.float32)

    return run
