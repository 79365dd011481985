"""Device and precision selection: cuda > mps > cpu, and the best precision each one has."""

from __future__ import annotations

from winnow.errors import ConfigError

DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "int8": "int8",
    "qint8": "int8",
}
VALID_DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")


def resolve_device(device: str | None) -> str:
    """Return the device to run on: the one asked for, else cuda, then mps, then cpu."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    device = str(device)
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"device={device!r} is not one of cpu, cuda[:N], mps, xpu, auto")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asked for but CUDA is not available")
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """Return the precision name for ``device``.

    ``auto`` gives bfloat16 on GPUs that support it (float16 on older ones and on mps) and float32 on
    CPU: the faster CPU modes (``bfloat16`` weights, ``int8`` dynamic quantisation) are opt-in.
    """
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if device.startswith("mps"):
            return "float16"
        return "float32"
    name = DTYPE_ALIASES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"dtype={dtype!r} is not one of {', '.join(VALID_DTYPES)}")
    if name == "int8" and not device.startswith("cpu"):
        raise ConfigError("dtype='int8' (dynamic quantisation) runs on the CPU only")
    if name == "float16" and device.startswith("cpu"):
        raise ConfigError("dtype='float16' is not supported on the CPU; use 'bfloat16' or 'int8'")
    return name


def torch_dtype(name: str):
    """The torch dtype that weights are stored in for a precision name."""
    import torch

    return {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "int8": torch.float32,
    }[name]


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA, mps, or the generic RuntimeError text)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def memory_in_use(device: str) -> int | None:
    """Bytes allocated by torch on ``device`` (None where torch does not track it)."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.memory_allocated(device))
    if device.startswith("mps") and hasattr(torch, "mps"):
        try:
            return int(torch.mps.current_allocated_memory())
        except Exception:  # pragma: no cover - depends on the platform
            return None
    return None


def empty_cache(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device.startswith("mps") and hasattr(torch, "mps"):
        torch.mps.empty_cache()
