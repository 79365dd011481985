"""CUDA-only choices of the torch backends: the attention kernel and pinned, non-blocking copies.

Everything here changes nothing off CUDA: on a CPU (and mps) a model loads with the same keyword
arguments as before and inputs are copied as before, so CPU scores are bit-for-bit what they were.

* Attention: on ``cuda`` the model is loaded with ``attn_implementation="flash_attention_2"`` when
  the ``flash_attn`` package is importable and the weights are float16/bfloat16 (transformers'
  FlashAttention-2 path drops the padding inside attention: it unpads the batch by its 2-D mask and
  calls the variable-length kernel), else ``"sdpa"`` (PyTorch's fused kernels), else transformers'
  own choice (eager for a model without SDPA support). A choice the model or the installation refuses
  (``ImportError`` / ``ValueError`` from ``from_pretrained``) falls back to the next, with a log line.
* Copies: on ``cuda`` each batch's int64 inputs are copied into pinned (page-locked) host memory and
  sent with ``non_blocking=True``; together with the engine's look-ahead (``_overlap``) the next
  batch's padding, pinning and copy run on a background thread while the current batch computes.
  PyTorch's caching host allocator keeps a pinned block alive until the copy that reads it is done.

Precision needs nothing here: ``devices.resolve_dtype`` already gives bfloat16 on GPUs that support
it and float16 on older ones.
"""

from __future__ import annotations

import importlib.util
import logging

from winnow.rerankers._torch import from_pretrained_kwargs

logger = logging.getLogger(__name__)

#: Weight dtypes FlashAttention-2 runs in.
FLASH_DTYPES = ("float16", "bfloat16")


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package (FlashAttention-2) can be imported."""
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def attention_choices(device: str, dtype: str, flash_available: bool | None = None) -> list:
    """``attn_implementation`` values to try, best first; ``None`` is transformers' own default.

    Off CUDA the list is ``[None]``: the model loads exactly as it did before this module existed.
    """
    if not is_cuda(device):
        return [None]
    if flash_available is None:
        flash_available = flash_attn_available()
    choices: list = []
    if flash_available and dtype in FLASH_DTYPES:
        choices.append("flash_attention_2")
    return [*choices, "sdpa", None]


def load_pretrained(model_class, path: str, device: str, dtype: str, *, choices=None, **kwargs):
    """``model_class.from_pretrained(path)`` in ``dtype`` with the best attention ``device`` has.

    Tries ``choices`` (default :func:`attention_choices`) in order; an ``ImportError`` or
    ``ValueError`` (what transformers raises for an attention implementation that is not installed
    or not supported by the model) moves to the next choice, and the last choice's error propagates
    unchanged.
    """
    kwargs = {**from_pretrained_kwargs(dtype), **kwargs}
    choices = list(attention_choices(device, dtype) if choices is None else choices)
    for n, choice in enumerate(choices):
        extra = {} if choice is None else {"attn_implementation": choice}
        try:
            return model_class.from_pretrained(path, **kwargs, **extra)
        except (ImportError, ValueError) as exc:
            if n == len(choices) - 1:
                raise
            logger.info(
                "%s: attn_implementation=%r is not available (%s); trying %r",
                path,
                choice,
                exc,
                choices[n + 1],
            )
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def attention_implementation(model) -> str | None:
    """The attention implementation a loaded transformers model runs (``"sdpa"``, ...)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def device_copier(device: str):
    """A function numpy array -> tensor on ``device``, for one engine run; call it in the thread
    that runs the model.

    On CUDA the copy goes through pinned memory with ``non_blocking=True`` on the stream that is
    current *now*, in the calling thread, whichever thread later makes the copy: the look-ahead
    thread's copies then queue on the stream the model runs on, in order, and their memory belongs
    to that stream. Elsewhere it is ``torch.from_numpy(array).to(device)``, as before.
    """
    import torch

    if not is_cuda(device):
        return lambda array: torch.from_numpy(array).to(device)
    stream = torch.cuda.current_stream(device)

    def copy(array):
        with torch.cuda.stream(stream):
            return torch.from_numpy(array).pin_memory().to(device, non_blocking=True)

    return copy


def to_device(array, device: str):
    """One array on ``device`` (see :func:`device_copier`)."""
    return device_copier(device)(array)


def overlap_by_default(device: str) -> bool:
    """Whether the engine prepares the next batch on a background thread unless told otherwise.

    On by default on CUDA only: there the compute runs on the GPU and the host thread is mostly
    waiting, while on a CPU the preparation would take cores from the compute it overlaps.
    """
    return is_cuda(device)
