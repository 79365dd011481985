"""What a served model loads on, and how ``/ready`` and ``/v1/models`` report fallbacks.

Two fallbacks, both opt-in. A model fallback (``--fallback NAME=[KIND:]MODEL``) is loaded by the
model's batcher when NAME's own model still fails after its retries, or runs out of device memory at
warm-up; it serves under NAME, and ``/ready`` and ``/v1/models`` say ``"fallback": true`` and
``"serving": MODEL``, with the primary's error in ``primary_error``. A device fallback
(``--device-fallback``): a ``cuda`` device asked for on a machine without CUDA runs on the CPU, with
a warning in the log and ``"device_fallback": "cuda -> cpu"`` in ``/ready``. Without it, such a
model fails to load with "CUDA is not available" (the load is not retried: it cannot pass).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from winnow.server.batcher import Batcher
    from winnow.server.config import ServerConfig

logger = logging.getLogger(__name__)


def cuda_requested(device: str | None) -> bool:
    return device is not None and str(device).startswith("cuda")


def cuda_missing(device: str | None) -> bool:
    """A cuda device is asked for and torch sees none."""
    if not cuda_requested(device):
        return False
    import torch

    return not torch.cuda.is_available()


def serving_device(config: ServerConfig) -> tuple[str | None, str | None]:
    """The (device, dtype) to load with: the configured ones, or the CPU's when falling back."""
    if not (config.device_fallback and cuda_missing(config.device)):
        return config.device, config.dtype
    dtype = config.dtype
    if dtype is not None and dtype.lower() in ("float16", "fp16", "half"):
        dtype = None  # the CPU has no float16 kernels; its default (float32) instead
    logger.warning(
        "device %r was asked for but CUDA is not available; loading on the CPU (--device-fallback)%s",
        config.device,
        "" if dtype == config.dtype else f", in float32 instead of {config.dtype}",
    )
    return "cpu", dtype


def fallback_readiness(config: ServerConfig, batcher: Batcher) -> dict[str, Any]:
    """The fallback fields of one model's ``/ready`` and ``/v1/models`` entries (none when unused)."""
    out: dict[str, Any] = {}
    if batcher.serving_fallback:
        out.update(
            fallback=True, serving=batcher.fallback_name, primary_error=batcher.primary_error
        )
    r, requested = batcher.reranker, config.device
    if r is not None and cuda_requested(requested) and r.config.device == "cpu":
        out["device_fallback"] = f"{requested} -> cpu"
    return out
