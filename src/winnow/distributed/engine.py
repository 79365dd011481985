"""Where Daft jobs run: the runner (native on this machine, or Ray), workers and their resources.

:class:`EngineOptions` is what ``--engine daft``, ``--workers``, ``--gpus-per-worker`` and
``--ray-address`` mean. Daft fixes its runner once per process (``daft.set_runner_native`` /
``daft.set_runner_ray`` cannot be undone), so :func:`use_runner` sets it on first use and refuses a
later job that asks for the other one, naming both.

A worker is one instance of a ``@daft.cls`` class (``max_concurrency`` of them); each loads its
model once in ``__init__`` through winnow's process-wide cache. Worker processes
(``use_process=True``, the default with more than one worker, and always on Ray) import winnow
themselves: :func:`check_worker` refuses a worker whose winnow is another version than the
driver's, so a stale install on a node is a clear error rather than different scores.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from winnow.errors import ConfigError, MissingExtraError, WinnowError

logger = logging.getLogger(__name__)

_RUNNER_LOCK = threading.Lock()
_RUNNER: str | None = None  # "native" or "ray:<address>" once set in this process


class DistributedError(WinnowError, RuntimeError):
    """A Daft job failed: a worker raised (the message names the batch's rows and ids), or the
    runner could not be set up."""


def require_daft():
    """Import and return ``daft``, or raise :class:`MissingExtraError` naming the extra."""
    try:
        import daft
    except ImportError as exc:
        raise MissingExtraError("distributed", "daft") from exc
    return daft


@dataclass(frozen=True)
class EngineOptions:
    """How a Daft job runs.

    Args:
        workers: model instances (Daft's ``max_concurrency`` of the ``@daft.cls``), each loaded
            once; on one machine each gets ``cpus_per_worker`` of its cores.
        gpus_per_worker: GPUs each worker asks for (0 on a CPU machine; fractions share a GPU).
        cpus_per_worker: CPUs each worker asks for and the torch threads it uses (default: this
            machine's cores divided by ``workers``).
        ray_address: run on Ray instead of Daft's native runner: ``local`` starts a Ray instance
            on this machine, ``auto`` joins the one running here, anything else is a cluster
            address (``ray://head:10001`` or ``head:6379``).
        batch_size: rows per UDF call: large enough for the token-budget engine to sort and pack.
        use_process: run workers as separate processes (default: when ``workers > 1`` or on Ray);
            otherwise the UDF runs in this process (Daft's threads), where every instance shares
            the process-wide model cache (one load) and torch's thread pool.
    """

    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    ray_address: str | None = None
    batch_size: int = 1024
    use_process: bool | None = None

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}")
        gpus = self.gpus_per_worker
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0:
            raise ConfigError(f"gpus_per_worker must be a number >= 0, got {gpus!r}")
        if gpus > 1 and not float(gpus).is_integer():
            raise ConfigError(f"gpus_per_worker above 1 must be a whole number, got {gpus!r}")
        cpus = self.cpus_per_worker
        if cpus is not None and (
            isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0
        ):
            raise ConfigError(f"cpus_per_worker must be a number > 0, got {cpus!r}")
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {size!r}")
        if self.ray_address is not None and not str(self.ray_address).strip():
            raise ConfigError("ray_address is empty: give local, auto or the cluster's address")

    @property
    def runner(self) -> str:
        return "native" if self.ray_address is None else f"ray:{self.ray_address}"

    @property
    def processes(self) -> bool:
        if self.use_process is not None:
            return bool(self.use_process)
        return self.workers > 1 or self.ray_address is not None

    @property
    def worker_cpus(self) -> float:
        if self.cpus_per_worker is not None:
            return float(self.cpus_per_worker)
        return float(max(1, (os.cpu_count() or 1) // self.workers))

    def cls_options(self) -> dict[str, Any]:
        """Keyword arguments of ``@daft.cls`` for a model worker."""
        options: dict[str, Any] = {
            "use_process": self.processes,
            "gpus": float(self.gpus_per_worker),
        }
        if self.processes:  # Daft runs a pool of max_concurrency worker processes
            options["max_concurrency"] = self.workers
        if self.ray_address is not None or self.cpus_per_worker is not None:
            options["cpus"] = self.worker_cpus
        return options

    def torch_threads(self) -> int | None:
        """Torch threads a worker process sets (None in-process: the pool is this process's)."""
        return max(1, int(self.worker_cpus)) if self.processes else None


def use_runner(options: EngineOptions) -> str:
    """Set Daft's runner for this process (once); return it. Raises on a conflicting runner."""
    global _RUNNER
    daft = require_daft()
    wanted = options.runner
    with _RUNNER_LOCK:
        if _RUNNER is not None:
            if wanted != _RUNNER:
                raise ConfigError(
                    f"this process already runs Daft jobs on {_RUNNER}; Daft cannot switch a "
                    f"process to {wanted} (run it in another process)"
                )
            return _RUNNER
        from daft.runners import _get_runner, get_or_infer_runner_type

        if _get_runner() is not None:  # set by daft itself (a DataFrame already ran) or the caller
            current = get_or_infer_runner_type()
            if current != wanted.split(":")[0]:
                raise ConfigError(
                    f"this process already runs Daft jobs on Daft's {current} runner; Daft "
                    f"cannot switch a process to {wanted} (run it in another process)"
                )
        else:
            try:
                if options.ray_address is None:
                    daft.set_runner_native()
                else:
                    _start_ray(daft, options.ray_address)
            except (ImportError, MissingExtraError):
                raise
            except Exception as exc:
                raise DistributedError(f"cannot set up Daft's {wanted} runner: {exc}") from exc
        _RUNNER = wanted
        logger.info("daft runner: %s", wanted)
        return wanted


def _start_ray(daft, address: str) -> None:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("ray", "ray") from exc
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    daft.set_runner_ray(noop_if_initialized=True)


def check_worker(driver_version: str) -> None:
    """Refuse to run in a worker whose winnow is not the driver's version."""
    import winnow

    if winnow.__version__ != driver_version:
        raise DistributedError(
            f"this Daft worker imports winnow {winnow.__version__} from {winnow.__file__}, but "
            f"the job was started by winnow {driver_version}: install the same winnow on every "
            "worker"
        )


def set_torch_threads(threads: int | None) -> None:
    """Make torch in a worker process use ``threads`` threads (its share of the CPUs)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)
