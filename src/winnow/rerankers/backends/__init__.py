"""Inference backends for the cross-encoder and the bi-encoder: torch, ONNX Runtime, OpenVINO.

``backend="torch"`` (the default) is the transformers model run by torch, as before. ``"onnx"`` and
``"openvino"`` run the same model exported once to ONNX (:mod:`.export`, cached by content under
``$HF_HOME/winnow/exports``) with ONNX Runtime (:mod:`.onnxruntime`) or OpenVINO (:mod:`.openvino`,
which compiles the same ONNX file). Either is driven by winnow's engine exactly as torch is: the
caller tokenises, sorts and batches, and only the forward pass changes.

Precision: ``dtype="float32"`` is exact (scores within 1e-4 of torch float32); ``dtype="int8"`` is
static int8 (:mod:`.quantize`) calibrated on a sample of the user's own pairs or texts
(``calibration=``, :mod:`.calibration`) and guarded (:mod:`.guard`): a held-out part of the sample
is scored both ways and int8 is used only if it keeps Spearman >= 0.999 (rerankers) or cosine >=
0.999 for every text (embeddings); otherwise the exact model is used, with a warning (or, with
``guard="refuse"``, the load fails).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.errors import ConfigError, require
from winnow.rerankers.options import RerankerOptions, option

logger = logging.getLogger(__name__)

#: The backends: torch (transformers), ONNX Runtime (extra ``onnx``), OpenVINO (extra ``openvino``).
BACKENDS = ("torch", "onnx", "openvino")
#: precisions an exported backend runs
EXPORT_DTYPES = ("float32", "int8")
GUARD_ACTIONS = ("fallback", "refuse")


@dataclass(frozen=True)
class BackendOptions(RerankerOptions):
    """Options of the kinds that run on an inference backend (cross-encoder, bi-encoder)."""

    backend: str = option("torch", "torch, onnx or openvino", must="'torch', 'onnx' or 'openvino'")
    # Any: a list or a path (checked by calibration.calibration_sample); noqa: option() builds
    # a dataclass field, as for every option
    calibration: Any = option(  # noqa: RUF009
        None,
        "int8 on onnx/openvino: a sample of your own pairs (cross-encoder) or texts (bi-encoder), "
        "a list or the path of a JSONL file",
        must="a list of (query, document) pairs or texts, or the path of a JSONL file",
    )
    guard: str = option(
        "fallback",
        "int8 failing its quality guard: fallback (exact float32, with a warning) or refuse",
        must="'fallback' or 'refuse'",
    )
    export_dir: str | None = option(
        None, "folder of the ONNX exports (default $HF_HOME/winnow/exports)"
    )
    threads: int | None = option(
        None, "CPU threads of the onnx/openvino runtime (default: torch's)"
    )


def check_backend(backend: Any, dtype: str, device: str) -> str:
    """The backend name, checked against the dtype and device; ConfigError naming the valid ones."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return backend
    if not device.startswith("cpu"):
        raise ConfigError(f"backend={backend!r} runs on the CPU; got device={device!r}")
    if dtype not in EXPORT_DTYPES:
        raise ConfigError(
            f"backend={backend!r} runs dtype {' or '.join(EXPORT_DTYPES)}, got dtype={dtype!r}"
        )
    return backend


def require_backend(backend: str):
    """Import the runtime of ``backend`` and the exporter; MissingExtraError naming the extra
    (``pip install 'winnow[onnx]'`` or ``'winnow[openvino]'``) when one is absent."""
    if backend == "onnx":
        require("onnx", "onnx")
        return require("onnxruntime", "onnx")
    # OpenVINO compiles the same ONNX file; its int8 file comes from onnxruntime's quantiser
    require("onnx", "openvino")
    require("onnxruntime", "openvino")
    return require("openvino", "openvino")


@dataclass(frozen=True)
class BackendRequest:
    """What an exported model is asked to be (all but the model's own files and graph)."""

    backend: str
    dtype: str
    calibration: Any  # CalibrationSample | None
    guard: str = "fallback"
    export_dir: str | None = None
    threads: int | None = None

    @classmethod
    def from_config(cls, config) -> BackendRequest:
        backend = check_backend(config.option("backend", "torch"), config.dtype, config.device)
        guard = config.option("guard", "fallback")
        if guard not in GUARD_ACTIONS:
            raise ConfigError(f"guard={guard!r} is not one of {', '.join(GUARD_ACTIONS)}")
        threads = config.option("threads")
        if threads is not None and (isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
        return cls(
            backend,
            config.dtype,
            config.option("calibration"),
            guard,
            config.option("export_dir"),
            threads,
        )

    @property
    def cache_part(self) -> tuple:
        """What a loaded model depends on, for ``MODELS`` keys."""
        digest = None if self.calibration is None else self.calibration.digest
        return (self.backend, self.dtype, digest, self.guard, self.export_dir, self.threads)


@dataclass
class Runner:
    """A compiled model: ``run(feeds) -> the first output`` (float32 numpy), plus what it is."""

    run: Callable[[dict[str, np.ndarray]], np.ndarray]
    #: backend, dtype asked and used, export folder, guard figures (for ``backend_info``)
    info: dict[str, Any]


def make_runner(backend: str, path, threads: int | None) -> Callable:
    if backend == "onnx":
        from winnow.rerankers.backends.onnxruntime import ort_runner

        return ort_runner(path, threads)
    from winnow.rerankers.backends.openvino import openvino_runner

    return openvino_runner(path, threads)


def load_exported(
    request: BackendRequest,
    *,
    family: str,
    model_dir: str,
    module_factory: Callable[[], Any],
    input_names: tuple[str, ...],
    example: dict[str, np.ndarray],
    export_options: dict[str, Any],
    feeds: Callable[[list], Iterable[dict[str, np.ndarray]]],
    outputs: Callable[[Callable, list], np.ndarray],
    metric: str,
    name: str,
) -> Runner:
    """Export (or reuse) the model, quantise and guard it for int8, and compile it.

    ``feeds(items)`` gives the padded input batches of sample items (pairs or texts), for
    calibration; ``outputs(run, items)`` runs a compiled model over items through the caller's
    own engine and returns scores (rerankers) or embeddings (encoders), which the guard compares
    by ``metric`` ("spearman" or "cosine").
    """
    from winnow.rerankers.backends.export import ensure_onnx

    require_backend(request.backend)
    onnx_path, key = ensure_onnx(
        family=family,
        model_dir=model_dir,
        module_factory=module_factory,
        input_names=input_names,
        example=example,
        options=export_options,
        root=request.export_dir,
        name=name,
    )
    info: dict[str, Any] = {
        "backend": request.backend,
        "dtype": request.dtype,
        "dtype_used": "float32",
        "export": str(onnx_path.parent),
        "guard": None,
    }
    exact = make_runner(request.backend, onnx_path, request.threads)
    if request.dtype == "float32":
        return Runner(exact, info)

    from winnow.rerankers.backends.guard import guarded_int8

    path, report, int8 = guarded_int8(
        request,
        fp32_path=onnx_path,
        fp32_key=key,
        exact=exact,
        feeds=feeds,
        outputs=outputs,
        metric=metric,
        name=name,
    )
    info["guard"] = report
    if path is None:
        return Runner(exact, info)
    info["dtype_used"] = "int8"
    info["export"] = str(path.parent)
    return Runner(int8, info)
