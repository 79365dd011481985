"""Cross-encoder reranker: any Hugging Face sequence-classification model, one or two (no/yes) labels.

Written for speed rather than wrapping sentence-transformers' ``CrossEncoder``: pairs of all queries
are tokenised once, length-sorted and cut into token-budget batches (see ``engine``), and logits are
upcast to float32 before any activation. Scores equal ``CrossEncoder.predict`` with activation off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from winnow.errors import ModelLoadError
from winnow.rerankers._cuda import device_copier, load_pretrained
from winnow.rerankers._first_token import install_first_token_last_layer
from winnow.rerankers._imports import heavy_imports
from winnow.rerankers._tokens import PairTokenizer, pad_batch
from winnow.rerankers._torch import prepare_model
from winnow.rerankers.backends import BackendOptions, BackendRequest
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.cache import MODELS
from winnow.rerankers.options import option

logger = logging.getLogger(__name__)

_ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer"}


def position_limit(config) -> int | None:
    """Longest sequence the model's position embeddings allow (RoBERTa-style ones reserve pad+1)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(config, "model_type", "") in _ROBERTA_LIKE and config.pad_token_id is not None:
        limit -= config.pad_token_id + 1
    return int(limit)


def load_sequence_classifier(path: str, device: str, dtype: str, first_token_only: bool = True):
    """Load (model, tokenizer) for a cross-encoder, refusing models that would give garbage scores."""
    with heavy_imports():
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the config of {path!r}: {exc}") from exc
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelLoadError(
            f"{path!r} is not a sequence-classification model (architectures={architectures}); "
            "a cross-encoder needs a *ForSequenceClassification checkpoint with a trained head. "
            "For an embedding model use kind='bi-encoder'."
        )
    if config.num_labels not in (1, 2):
        raise ModelLoadError(
            f"{path!r} has {config.num_labels} labels; a cross-encoder reranker needs 1 (a "
            "relevance logit) or 2 (no/yes)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    # on CUDA: FlashAttention-2 or SDPA (see _cuda); elsewhere the same call as ever
    model = load_pretrained(AutoModelForSequenceClassification, path, device, dtype)
    model = prepare_model(model, device, dtype)
    if first_token_only and dtype != "int8":
        install_first_token_last_layer(model, tokenizer, device)
    return model, tokenizer


@dataclass(frozen=True)
class CrossEncoderOptions(BackendOptions):
    """Options of the ``cross-encoder`` kind."""

    max_query_length: int | None = option(None, "tokens a query may use (half of max_length)")
    first_token_only: bool = option(
        True, "compute the last layer for the first token only (all the head reads)"
    )
    overlap: bool | None = option(
        None, "prepare the next batch on a background thread while one runs (default: on CUDA)"
    )


class CrossEncoderReranker(Reranker):
    """Scores each (query, document) pair jointly with a sequence-classification transformer.

    Options: ``max_query_length`` (tokens a query may use; default half of ``max_length``),
    ``max_tokens`` (padded tokens per batch), ``max_batch_size``, ``show_progress``,
    ``first_token_only`` (default True: compute the last layer for the first token only, which is
    all the head reads; installed only after a self-check, see ``_first_token``), ``overlap``
    (prepare the next batch on a background thread while one runs; default on CUDA only),
    ``backend`` (``torch``, ``onnx`` or ``openvino``; see :mod:`winnow.rerankers.backends`, with
    ``calibration``, ``guard``, ``export_dir`` and ``threads``).
    """

    kind = "cross-encoder"
    options_class = CrossEncoderOptions

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        self.model = None
        self.tokenizer = None
        self.pairs: PairTokenizer | None = None
        self.runner = None

    def _load(self) -> None:
        c = self.config
        first_token_only = bool(c.option("first_token_only", True))
        request = BackendRequest.from_config(c)
        key = ("cross-encoder", c.model, c.device, c.dtype, first_token_only)
        if request.backend == "torch":
            self.model, self.tokenizer = MODELS.get_or_create(
                key, lambda: load_sequence_classifier(c.model, c.device, c.dtype, first_token_only)
            )
            self.runner = None
        else:
            self.model, self.tokenizer, self.runner = MODELS.get_or_create(
                (*key, *request.cache_part), lambda: self._load_exported(request, first_token_only)
            )
        self.num_labels = int(self.model.config.num_labels)
        self.pairs = self._pair_tokenizer(self.model, self.tokenizer)
        self.uses_token_types = _uses_token_types(self.tokenizer)

    def _pair_tokenizer(self, model, tokenizer) -> PairTokenizer:
        c = self.config
        limits = [position_limit(model.config), c.max_length]
        tok_max = getattr(tokenizer, "model_max_length", None)
        if tok_max and tok_max < 1_000_000:
            limits.append(int(tok_max))
        limits = [x for x in limits if x]
        max_length = min(limits) if limits else 512
        max_query = c.option("max_query_length") or max_length // 2
        return PairTokenizer(tokenizer, max_length, int(max_query))

    def _load_exported(self, request: BackendRequest, first_token_only: bool):
        """(torch model, tokenizer, backend runner): the model exported to ONNX (once, cached),
        for int8 quantised and guarded, compiled by ONNX Runtime or OpenVINO."""
        from winnow.rerankers.backends import load_exported
        from winnow.rerankers.engine import plan_batches

        c = self.config
        model, tokenizer = load_sequence_classifier(c.model, "cpu", "float32", first_token_only)
        pairs = self._pair_tokenizer(model, tokenizer)
        names = ("input_ids", "attention_mask")
        if _uses_token_types(tokenizer):
            names += ("token_type_ids",)
        two_labels = int(model.config.num_labels) == 2
        max_tokens, max_batch_size = self._batch_limits()

        def feeds(items: list[tuple[str, str]]):
            input_ids, type_ids, lengths, _ = pairs.encode_pairs(items)
            for idx in plan_batches(lengths, max_tokens, max_batch_size):
                yield _pair_feeds(idx, input_ids, type_ids, pairs.pad_id, names)

        def outputs(run, items: list[tuple[str, str]]) -> np.ndarray:
            # in batch-plan order, the same for every model compared (the guard's only use)
            return np.concatenate([_scores(run(f), two_labels) for f in feeds(items)])

        example = _pair_feeds(
            np.arange(2),
            *pairs.encode_pairs([("what is winnow", "a tool"), ("q", "a longer document")])[:2],
            pairs.pad_id,
            names,
        )
        runner = load_exported(
            request,
            family="cross-encoder",
            model_dir=c.model,
            module_factory=lambda: _LogitsModule(model, names),
            input_names=names,
            example=example,
            export_options={"first_token_only": bool(_has_first_token(model))},
            feeds=feeds,
            outputs=outputs,
            metric="spearman",
            name=self.name,
        )
        return model, tokenizer, runner

    def _batch_limits(self) -> tuple[int, int]:
        from winnow.rerankers.engine import batch_limits

        return batch_limits(dict(self.config.options), self.config.device)

    @property
    def backend_info(self) -> dict:
        """Backend, dtype asked and used, export folder and int8 guard figures (torch: the
        backend and dtype only)."""
        self.load()
        if self.runner is None:
            return {"backend": "torch", "dtype": self.config.dtype, "dtype_used": self.config.dtype}
        return dict(self.runner.info)

    def _release(self) -> None:
        self.model = self.tokenizer = self.pairs = self.runner = None

    @property
    def max_length(self) -> int:
        self.load()
        return self.pairs.max_length

    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        input_ids, type_ids, lengths, truncated = self.pairs.encode_pairs(pairs)
        names = ("input_ids", "attention_mask")
        if self.uses_token_types:
            names += ("token_type_ids",)
        pad = self.pairs.pad_id
        two_labels = self.num_labels == 2
        if self.runner is not None:  # ONNX Runtime / OpenVINO: numpy in, numpy out
            run = self.runner.run

            def prepare(idx: np.ndarray) -> dict:
                return _pair_feeds(idx, input_ids, type_ids, pad, names)
        else:
            run = self._torch_logits
            to_device = device_copier(self.config.device)  # in the thread that runs the model

            def prepare(idx: np.ndarray) -> dict:
                feeds = _pair_feeds(idx, input_ids, type_ids, pad, names)
                return {k: to_device(v) for k, v in feeds.items()}

        def forward(inputs: dict) -> np.ndarray:
            return _scores(run(inputs), two_labels)

        scores = self._run_engine(lengths, forward, prepare=prepare)
        return PairScores(scores.astype(np.float32), truncated, lengths.astype(np.int32))

    def _torch_logits(self, inputs: dict) -> np.ndarray:
        """Logits of one batch of device tensors (``prepare`` made them)."""
        import torch

        with torch.inference_mode():
            logits = self.model(**inputs).logits
        return logits.float().cpu().numpy()  # upcast before anything else touches the numbers


def _uses_token_types(tokenizer) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"])


def _pair_feeds(idx, input_ids, type_ids, pad: int, names) -> dict[str, np.ndarray]:
    """The padded int64 inputs of one batch of pairs (``idx`` into the tokenised pairs)."""
    ids, mask = pad_batch([input_ids[i] for i in idx], pad)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in names:
        tt, _ = pad_batch([type_ids[i] for i in idx], 0)
        feeds["token_type_ids"] = tt
    return feeds


def _scores(logits: np.ndarray, two_labels: bool) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    return logits[:, 1] - logits[:, 0] if two_labels else logits[:, 0]


def _has_first_token(model) -> bool:
    from winnow.rerankers._first_token import _encoder_layers

    layers = _encoder_layers(model)
    return layers is not None and type(layers[-1]).__name__ == "FirstTokenLayer"


def _module_class():
    import torch

    class LogitsModule(torch.nn.Module):
        """The classifier as ``forward(*inputs) -> logits``, for ``torch.onnx.export``."""

        def __init__(self, model, names):
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *inputs):
            return self.model(**dict(zip(self.names, inputs))).logits

    return LogitsModule


def _LogitsModule(model, names):
    return _module_class()(model, names)
