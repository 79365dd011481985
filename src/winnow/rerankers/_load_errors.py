"""Turning a library's failure to load a model into a :class:`~winnow.errors.ModelLoadError`.

transformers and sentence-transformers report a damaged weight file with the bare message of the
format's reader (``SafetensorError: Error while deserializing header: invalid header length``),
which names neither the model nor the file. Here the model folder is named and, when a weight
file is to blame, the file too, so the CLI and the server can show one clean line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from winnow.errors import ModelLoadError

logger = logging.getLogger(__name__)


def damaged_files(folder: Path) -> list[tuple[Path, str]]:
    """``(file, reason)`` for each weight (``*.safetensors``) or JSON file under ``folder`` that
    cannot be read: the usual culprits of a model folder that fails to load."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        safe_open = None
    bad = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            if file.suffix == ".safetensors" and safe_open is not None:
                with safe_open(str(file), framework="np") as f:
                    f.keys()
            elif file.suffix == ".json":
                json.loads(file.read_text(encoding="utf-8"))
        except Exception as exc:  # SafetensorError, OSError, ValueError: what the reader says
            bad.append((file, str(exc)))
    return bad


def model_load_error(model: str, kind: str, exc: BaseException) -> ModelLoadError:
    """A :class:`ModelLoadError` for ``exc`` raised while loading ``model`` (folder or hub id)."""
    folder = Path(model)
    if folder.is_dir():
        damaged = damaged_files(folder)
        if damaged:
            files = "; ".join(f"{file}: {reason}" for file, reason in damaged)
            return ModelLoadError(f"cannot load {kind} model {model!r}: damaged file {files}")
    return ModelLoadError(f"cannot load {kind} model {model!r}: {type(exc).__name__}: {exc}")
