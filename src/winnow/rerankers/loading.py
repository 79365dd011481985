"""``load_reranker``: the one way to get a reranker, cached per (model, kind, device, dtype, options).

``load_spec`` does the same for a model spec as the command line writes it
(``KIND:MODEL?KEY=VALUE&...``, see :mod:`winnow.rerankers.registry`).
"""

from __future__ import annotations

import os
from typing import Any

from winnow.errors import ConfigError
from winnow.rerankers.base import Reranker, RerankerConfig
from winnow.rerankers.cache import RERANKERS
from winnow.rerankers.devices import resolve_device, resolve_dtype
from winnow.rerankers.hub import infer_kind, resolve_model_path
from winnow.rerankers.options import check_options, parse_text_options, split_loader_options
from winnow.rerankers.registry import ModelRef, get_kind, parse_model_ref


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError as exc:
        raise ConfigError(f"option value {value!r} is not hashable") from exc
    return value


def load_reranker(
    model: str | os.PathLike,
    kind: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    activation: str = "none",
    **options: Any,
) -> Reranker:
    """Return the reranker for ``model`` (a hub id or a local folder), loading it at most once.

    Args:
        model: Hugging Face hub id or local model folder.
        kind: ``cross-encoder``, ``bi-encoder``, ... (``winnow.available_kinds()``); inferred from the
            model's files when omitted.
        device: ``cuda``, ``mps`` or ``cpu``; the best available when omitted.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``int8`` (CPU dynamic quantisation);
            bfloat16/float16 on GPUs and float32 on CPU when omitted.
        max_length: longest input in tokens (the model's own limit when omitted).
        activation: ``none`` (raw scores, the default), ``sigmoid`` or ``softmax`` (two-label models).
        **options: the kind's options (its ``options_class``, e.g. ``max_query_length``,
            ``max_tokens`` (token budget per batch), ``max_batch_size``, ``show_progress``); an
            unknown name or a value of the wrong type is a ConfigError listing the valid ones.

    ``reranker.name`` is ``model`` as given (a hub id stays a hub id in reprs, labels and reports);
    ``reranker.config.model`` is the folder it resolved to. The same arguments give the same
    instance, across calls and threads. The weights load lazily on
    first use (or ``reranker.load()``) and are shared by instances that differ only in options.
    """
    if options.get("backend") == "ollama":
        # a model name on the Ollama server (e.g. "qwen3:0.6b", "hf.co/user/repo:tag"), not a path
        path = os.fspath(model)
        if kind is None:
            raise ConfigError("backend='ollama' needs kind= ('llm-pointwise' or 'llm-listwise')")
    else:
        path = resolve_model_path(model)
    kind = kind or infer_kind(path)
    cls = get_kind(kind)
    check_options(kind, cls.options_class, options)
    if options.get("calibration") is not None:
        from winnow.rerankers.backends.calibration import calibration_sample

        # read once, here: the sample's sha256 (not its texts) keys the caches from now on
        options["calibration"] = calibration_sample(
            options["calibration"], pairs=kind != "bi-encoder"
        )
    if device is None and options.get("backend") in ("onnx", "openvino"):
        device = "cpu"  # the exported backends run on the CPU, GPU or not
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    from winnow.rerankers.backends import BackendOptions, check_backend

    if issubclass(cls.options_class, BackendOptions):  # refused now, not at first use
        backend = check_backend(options.get("backend", "torch"), resolved_dtype, resolved_device)
        if backend == "torch" and options.get("calibration") is not None:
            raise ConfigError(
                "calibration= is the sample of static int8 on backend='onnx' or 'openvino'; "
                "torch's dtype='int8' is dynamic and takes none"
            )
    if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
        raise ConfigError(f"max_length must be an integer >= 8, got {max_length!r}")
    config = RerankerConfig(
        model=path,
        kind=kind,
        device=resolved_device,
        dtype=resolved_dtype,
        max_length=max_length,
        activation=activation,
        options=_freeze(options),
        name=os.fspath(model),  # what the user called it, shown beside the path it resolved to
    )
    return reranker_from_config(config)


def reranker_from_config(config: RerankerConfig) -> Reranker:
    """The cached reranker of a (resolved) configuration, built on first use (not loaded).

    ``load_reranker`` ends here, and so does unpickling a reranker (``Reranker.__reduce__``): a
    reranker shipped to another process arrives as its configuration and becomes that process's
    cached instance, whose weights load on first use.
    """
    c = config
    key = (c.model, c.kind, c.device, c.dtype, c.max_length, c.activation, c.options, c.name)
    return RERANKERS.get_or_create(key, lambda: get_kind(c.kind)(c))


def load_model_ref(ref: ModelRef, **defaults: Any) -> Reranker:
    """``load_reranker`` for a parsed model spec: its text options converted to the kind's types.

    ``defaults`` are ``load_reranker`` keywords (``device``, ``dtype``, options...) that the spec's
    own options override. The kind is inferred from the model's files when the spec names none.
    """
    text = dict(ref.options)
    kind = ref.kind
    if kind is None:
        if text.get("backend") == "ollama":
            raise ConfigError(
                f"model spec for {ref.model!r} with backend=ollama needs a kind: "
                f"llm:{ref.model}?... or llm-listwise:{ref.model}?..."
            )
        kind = infer_kind(resolve_model_path(ref.model))
    cls = get_kind(kind)
    typed = parse_text_options(kind, cls.options_class, text)
    loader, options = split_loader_options({**defaults, **typed})
    return load_reranker(ref.model, kind, **loader, **options)


def load_spec(spec: str, **defaults: Any) -> Reranker:
    """The reranker a model spec (``[KIND:]MODEL[?KEY=VALUE&...]``) names; see ``load_model_ref``."""
    return load_model_ref(parse_model_ref(spec), **defaults)
