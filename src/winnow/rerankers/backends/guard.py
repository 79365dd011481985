"""The int8 quality guard: a held-out part of the calibration sample scored exact and int8.

For a reranker the two score lists must keep Spearman's rank correlation >= :data:`MIN_SPEARMAN`
(0.999); for an encoder every held-out text's two embeddings must have cosine >= :data:`MIN_COSINE`
(0.999). When int8 passes, it is used; when it fails, the exact float32 model is used with a
warning naming the figure, or with ``guard="refuse"`` the load fails (:class:`ModelLoadError`).

The int8 file and the guard's figures are cached beside the float32 export
(``<export>/int8-<key>/``, key: the float32 export, the calibration sample's sha256, the
quantisation settings and the onnxruntime version); the figures are measured once per backend
(``guard-onnx.json``, ``guard-openvino.json``), so a second load decides without re-measuring.
``reranker.backend_info["guard"]`` holds them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from winnow._fs import atomic_directory, read_json_entry, write_json_atomic
from winnow._hashing import params_hash
from winnow.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

MIN_SPEARMAN = 0.999
MIN_COSINE = 0.999
INT8_FILE = "model-int8.onnx"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties), as scipy.stats.spearmanr."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-30)


def compare(metric: str, exact: np.ndarray, int8: np.ndarray) -> dict[str, Any]:
    """The guard's figures and verdict for one held-out comparison."""
    if metric == "spearman":
        rho = spearman(exact, int8)
        return {
            "metric": "spearman",
            "value": rho,
            "threshold": MIN_SPEARMAN,
            "max_abs_diff": float(np.abs(exact - int8).max()),
            "passed": rho >= MIN_SPEARMAN,
        }
    cos = cosines(exact, int8)
    return {
        "metric": "min_cosine",
        "value": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "threshold": MIN_COSINE,
        "passed": float(cos.min()) >= MIN_COSINE,
    }


def guarded_int8(
    request,
    *,
    fp32_path: Path,
    fp32_key: str,
    exact: Callable,
    feeds: Callable[[list], Iterable[dict[str, np.ndarray]]],
    outputs: Callable[[Callable, list], np.ndarray],
    metric: str,
    name: str,
) -> tuple[Path | None, dict[str, Any], Callable | None]:
    """(int8 file or None when the guard failed, the guard's figures, the int8 runner or None)."""
    import onnxruntime

    from winnow.rerankers.backends import make_runner
    from winnow.rerankers.backends.quantize import SETTINGS, quantize_int8

    sample = request.calibration
    if sample is None:
        what = "(query, document) pairs" if metric == "spearman" else "texts"
        raise ConfigError(
            f"dtype='int8' with backend={request.backend!r} is static int8 and needs a sample of "
            f"your own {what} to calibrate on: calibration=[...] (a list) or calibration=PATH "
            '(JSONL, one {"query": ..., "document": ...} or {"text": ...} a line; in a model '
            "spec ?calibration=PATH); or use dtype='float32'"
        )
    calib, held = sample.split()
    key = params_hash(
        {
            "fp32": fp32_key,
            "calibration": sample.digest,
            "settings": SETTINGS,
            "onnxruntime": onnxruntime.__version__,
        }
    )
    folder = fp32_path.parent / f"int8-{key[:32]}"
    path = folder / INT8_FILE
    if not path.is_file():
        started = time.perf_counter()
        try:
            with atomic_directory(folder) as tmp:
                quantize_int8(fp32_path, tmp / INT8_FILE, feeds(calib))
        except Exception as exc:
            raise ModelLoadError(f"int8 quantisation of {name!r} failed: {exc}") from exc
        logger.info("quantised %s to int8 in %.1fs", name, time.perf_counter() - started)
    report_path = folder / f"guard-{request.backend}.json"
    report = read_json_entry(report_path)
    runner = None
    if report is None:
        runner = make_runner(request.backend, path, request.threads)
        report = compare(metric, outputs(exact, held), outputs(runner, held))
        report.update(held_out=len(held), calibrated_on=len(calib), backend=request.backend)
        write_json_atomic(report_path, report)
    figure = f"{report['metric']} {report['value']:.6f} (threshold {report['threshold']})"
    if report["passed"]:
        logger.info("int8 %s on %s passes its guard: %s", name, request.backend, figure)
        if runner is None:
            runner = make_runner(request.backend, path, request.threads)
        return path, report, runner
    if request.guard == "refuse":
        raise ModelLoadError(
            f"int8 {name!r} on {request.backend} fails its quality guard on {len(held)} held-out "
            f"items: {figure}; use dtype='float32' or guard='fallback'"
        )
    logger.warning(
        "int8 %s on %s fails its quality guard: %s; using the exact float32 model",
        name,
        request.backend,
        figure,
    )
    return None, json.loads(json.dumps(report)), None
