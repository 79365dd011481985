"""Precision handling shared by the torch backends: weight dtype and int8 dynamic quantisation.

Half precision is applied to the weights themselves, on GPUs and on CPUs alike: on a CPU with
bfloat16 instructions (AVX512-BF16 / AMX) bfloat16 weights ran 1.5x faster than float32 while
``torch.autocast`` (which re-casts the weights at every call) gained 1.12x (MiniLM-L6, a batch of
32 x 200 tokens, 2-core AMD EPYC; the end-to-end figures are in ``benchmarks/rerank_throughput.py``).
Scores are upcast to float32 by the callers.
"""

from __future__ import annotations

import logging

from winnow.rerankers._imports import heavy_imports
from winnow.rerankers.devices import torch_dtype

logger = logging.getLogger(__name__)


def from_pretrained_kwargs(dtype: str) -> dict:
    """Keyword arguments for ``from_pretrained`` that load weights in the right dtype."""
    from packaging.version import Version

    with heavy_imports():
        import transformers

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: torch_dtype(dtype)}


def prepare_model(model, device: str, dtype: str):
    """Put a loaded model in eval mode on ``device``; quantise Linear layers for ``int8``."""

    model.eval()
    if dtype == "int8":
        return quantize_int8(model)
    return model.to(device)


def quantize_int8(model):
    """Dynamic int8 quantisation of every Linear layer, with per-channel weight scales.

    Per-channel scales keep more of the ranking than per-tensor ones (Spearman 0.90 vs 0.87 against
    float32 on the MiniLM-L6 cross-encoder of the benchmark); int8 is still a lossy mode.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(
        model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
    )
