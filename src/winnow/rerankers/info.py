"""What a loaded reranker is and what it costs: model information, model size, process memory.

:func:`model_info` is the one place that describes a model (architecture, layers, hidden size,
attention heads, parameters, vocabulary, positions, dtype, device, kind, path and the name the user
gave); ``winnow info``, ``/v1/models`` and ``Reranker.info()`` all print what it returns.
:func:`model_size`, :func:`process_memory` and :func:`gpu_memory` give the memory figures of
``Reranker.health()``, ``/ready`` and ``/metrics``.

The torch module behind a reranker is found by looking, not by asking each backend: ``model``
(cross-encoder, bi-encoder, pointwise LLM) or ``backend.model`` (listwise LLM). A reranker that
has neither (an Ollama one, a custom listwise backend) still gets an answer: what its server
reports (Ollama's ``/api/show``), else ``None`` for each field it cannot know.

Process memory is read from ``/proc/self/statm`` and :mod:`resource` (the standard library), not
psutil, which the server does not depend on.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from winnow.rerankers.base import Reranker

logger = logging.getLogger(__name__)

#: The fields of :func:`model_info`, in the order ``winnow info`` prints them.
INFO_FIELDS = (
    "name",
    "kind",
    "backend",
    "architecture",
    "model_type",
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "parameters",
    "model_bytes",
    "vocab_size",
    "max_position_embeddings",
    "max_length",
    "dtype",
    "device",
    "path",
)


# -- the torch module and its configuration ------------------------------------------------------
def imported_torch() -> Any | None:
    """torch if this process has finished importing it, else None (never imports it).

    A server's worker thread may be half-way through ``import torch`` while ``/ready`` or
    ``/metrics`` asks; a half-initialised module has no ``cuda`` yet, and importing it here would
    block the event loop until the other thread is done.
    """
    torch = sys.modules.get("torch")
    spec = getattr(torch, "__spec__", None)
    if torch is None or getattr(spec, "_initializing", False):
        return None
    return torch


def torch_module(reranker: Reranker) -> Any | None:
    """The loaded ``torch.nn.Module`` that scores for ``reranker``, or None (Ollama, custom)."""
    torch = imported_torch()
    if torch is None:  # nothing was loaded with torch in this process
        return None
    # the model itself, a backend's, or the one inside a wrapper (the bi-encoder's TextEncoder)
    owners = (reranker, getattr(reranker, "backend", None), getattr(reranker, "model", None))
    for owner in owners:
        module = getattr(owner, "model", None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def hf_config(module: Any) -> Any | None:
    """The transformers config of ``module`` (or of the first transformers model inside it)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    found = module if isinstance(module, PreTrainedModel) else None
    if found is None:  # a sentence-transformers model wraps one
        found = next((m for m in module.modules() if isinstance(m, PreTrainedModel)), None)
    if found is None:
        return None
    config = found.config
    text = getattr(config, "get_text_config", None)  # multimodal configs nest the text model's
    return text() if callable(text) else config


def model_size(module: Any) -> tuple[int, int]:
    """(parameters, bytes of the parameters) of a torch module; each shared tensor counted once.

    Dynamically quantised (int8) Linear layers keep their weights packed, outside
    ``parameters()``; they are counted from ``weight()`` (one byte per weight) and ``bias()``.
    """
    count = size = 0
    for p in module.parameters():
        count += p.numel()
        size += p.numel() * p.element_size()
    for m in module.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            for tensor in (m.weight(), m.bias()):
                if tensor is not None:
                    count += tensor.numel()
                    size += tensor.numel() * tensor.element_size()
    return count, size


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _hf_fields(module: Any) -> dict[str, Any]:
    config = hf_config(module)
    parameters, size = model_size(module)
    out: dict[str, Any] = {"parameters": int(parameters), "model_bytes": int(size)}
    if config is None:
        out["architecture"] = type(module).__name__
        return out
    architectures = getattr(config, "architectures", None) or []
    # transformers' attribute_map gives every config the standard names (n_layer -> num_hidden_layers)
    out.update(
        architecture=architectures[0] if architectures else type(module).__name__,
        model_type=getattr(config, "model_type", None) or None,
        num_layers=_first(config, "num_hidden_layers", "num_layers"),
        hidden_size=_first(config, "hidden_size", "d_model"),
        num_attention_heads=_first(config, "num_attention_heads", "num_heads"),
        vocab_size=_first(config, "vocab_size"),
        max_position_embeddings=_first(config, "max_position_embeddings", "n_positions"),
    )
    return out


# -- Ollama --------------------------------------------------------------------------------------
def _ollama_client(reranker: Reranker) -> Any | None:
    # the model itself, a backend's, or the one inside a wrapper (the bi-encoder's TextEncoder)
    owners = (reranker, getattr(reranker, "backend", None), getattr(reranker, "model", None))
    for owner in owners:
        client = getattr(owner, "client", None)
        if client is not None and hasattr(client, "_request"):
            return client
    return None


def _count(value: Any) -> int | None:
    """``value`` if it is a whole number (not a bool), else None: a server's answer is not trusted."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _ollama_fields(client: Any) -> dict[str, Any]:
    """What Ollama's ``POST /api/show`` says of the model; ``{}`` when it says nothing usable.

    ``model_info`` holds GGUF metadata: ``general.architecture`` names the prefix of the other keys
    (``llama.block_count``, ``llama.embedding_length``, ...).
    """
    from winnow.errors import WinnowError

    try:
        # The client's own request path: its timeout, retries and error wrapping.
        shown = client._request("POST", "/api/show", {"model": client.model})
    except WinnowError as exc:
        logger.warning("Ollama /api/show for %r failed: %s", client.model, exc)
        return {}
    if not isinstance(shown, dict):
        return {}
    meta = shown.get("model_info") if isinstance(shown.get("model_info"), dict) else {}
    details = shown.get("details") if isinstance(shown.get("details"), dict) else {}
    arch = _text(meta.get("general.architecture")) or _text(details.get("family"))

    def key(name: str) -> int | None:
        return _count(meta.get(f"{arch}.{name}")) if arch else None

    return {
        "architecture": arch,
        "model_type": _text(details.get("format")),
        "num_layers": key("block_count"),
        "hidden_size": key("embedding_length"),
        "num_attention_heads": key("attention.head_count"),
        "parameters": _count(meta.get("general.parameter_count")),
        "vocab_size": key("vocab_size"),
        "max_position_embeddings": key("context_length"),
        "quantization": _text(details.get("quantization_level")),
        "parameter_size": _text(details.get("parameter_size")),
    }


# -- the one description -------------------------------------------------------------------------
def model_info(reranker: Reranker, name: str | None = None) -> dict[str, Any]:
    """Describe ``reranker`` (loading it first): every key of :data:`INFO_FIELDS`, None if unknown.

    ``name`` is what the user called the model (a hub id, an alias); ``path`` is what it resolved
    to. Ollama models add ``quantization`` and ``parameter_size`` as the server reports them.
    """
    reranker.load()
    c = reranker.config
    info: dict[str, Any] = dict.fromkeys(INFO_FIELDS)
    backend = c.option("backend", "hf")
    info.update(
        name=name or reranker.name,
        kind=c.kind,
        backend=backend if isinstance(backend, str) else "custom",
        dtype=c.dtype,
        device=c.device,
        path=c.model,
    )
    try:
        info["max_length"] = int(reranker.max_length) or None
    except Exception as exc:  # a custom backend may not know it; the rest is still worth showing
        logger.debug("max_length of %r unknown: %s", reranker, exc)
    module = torch_module(reranker)
    if module is not None:
        info.update(_hf_fields(module))
    else:
        client = _ollama_client(reranker)
        if client is not None:
            info["backend"] = "ollama"
            info.update(_ollama_fields(client))
    return info


# -- memory --------------------------------------------------------------------------------------
def process_memory() -> dict[str, int | None]:
    """``resident_bytes`` now (Linux ``/proc/self/statm``) and ``peak_resident_bytes`` (getrusage).

    Either is None where the platform does not give it; the peak is never below the current.
    """
    resident = peak = None
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # kibibytes on Linux and the BSDs, bytes on macOS
        peak = int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024
    except (ImportError, OSError):  # pragma: no cover - Windows
        pass
    if peak is not None and resident is not None:
        peak = max(
            peak, resident
        )  # the kernel updates ru_maxrss lazily: it can lag a fresh reading
    return {"resident_bytes": resident, "peak_resident_bytes": peak}


def gpu_memory() -> dict[str, dict[str, int]]:
    """Per CUDA device: torch's ``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes``.

    Empty without CUDA, and while torch is not (yet) imported: it is not imported for this. Reading
    the figures does not create a CUDA context on a device that has none.
    """
    torch = imported_torch()
    if torch is None or not torch.cuda.is_available():
        return {}
    out = {}
    for i in range(torch.cuda.device_count()):
        out[f"cuda:{i}"] = {
            "allocated_bytes": int(torch.cuda.memory_allocated(i)),
            "reserved_bytes": int(torch.cuda.memory_reserved(i)),
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(i)),
        }
    return out
