"""Precision handling shared by the torch backends: weight dtype, int8 quantisation, autocast."""

from __future__ import annotations

import contextlib
import logging

from winnow.rerankers.devices import torch_dtype

logger = logging.getLogger(__name__)


def from_pretrained_kwargs(dtype: str) -> dict:
    """Keyword arguments for ``from_pretrained`` that load weights in the right dtype.

    On CPU, bfloat16 keeps float32 weights and runs under autocast (norms and softmax stay float32);
    on accelerators the weights themselves are half precision.
    """
    import transformers
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: torch_dtype(dtype)}


def prepare_model(model, device: str, dtype: str):
    """Put a loaded model in eval mode on ``device``; quantise Linear layers for ``int8``."""
    import torch

    model.eval()
    if dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return model
    if device.startswith("cpu") and dtype == "bfloat16":
        model = model.to(torch.float32)
    return model.to(device)


def autocast(device: str, dtype: str):
    """Autocast context for CPU bfloat16; a no-op elsewhere (weights already carry the dtype)."""
    import torch

    if device.startswith("cpu") and dtype == "bfloat16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
