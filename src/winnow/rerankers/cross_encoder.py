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
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.cache import MODELS
from winnow.rerankers.options import RerankerOptions, option

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
class CrossEncoderOptions(RerankerOptions):
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
    (prepare the next batch on a background thread while one runs; default on CUDA only).
    """

    kind = "cross-encoder"
    options_class = CrossEncoderOptions

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        self.model = None
        self.tokenizer = None
        self.pairs: PairTokenizer | None = None

    def _load(self) -> None:
        c = self.config
        first_token_only = bool(c.option("first_token_only", True))
        key = ("cross-encoder", c.model, c.device, c.dtype, first_token_only)
        self.model, self.tokenizer = MODELS.get_or_create(
            key, lambda: load_sequence_classifier(c.model, c.device, c.dtype, first_token_only)
        )
        self.num_labels = int(self.model.config.num_labels)
        limits = [position_limit(self.model.config), c.max_length]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if tok_max and tok_max < 1_000_000:
            limits.append(int(tok_max))
        limits = [x for x in limits if x]
        max_length = min(limits) if limits else 512
        max_query = c.option("max_query_length") or max_length // 2
        self.pairs = PairTokenizer(self.tokenizer, max_length, int(max_query))
        self.uses_token_types = "token_type_ids" in getattr(
            self.tokenizer, "model_input_names", ["token_type_ids"]
        )

    def _release(self) -> None:
        self.model = self.tokenizer = self.pairs = None

    @property
    def max_length(self) -> int:
        self.load()
        return self.pairs.max_length

    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        import torch

        input_ids, type_ids, lengths, truncated = self.pairs.encode_pairs(pairs)
        device = self.config.device
        pad = self.pairs.pad_id
        model = self.model
        two_labels = self.num_labels == 2
        to_device = device_copier(device)  # here, in the thread that runs the model

        def prepare(idx: np.ndarray) -> dict:
            ids, mask = pad_batch([input_ids[i] for i in idx], pad)
            inputs = {
                "input_ids": to_device(ids),
                "attention_mask": to_device(mask),
            }
            if self.uses_token_types:
                tt, _ = pad_batch([type_ids[i] for i in idx], 0)
                inputs["token_type_ids"] = to_device(tt)
            return inputs

        def forward(inputs: dict) -> np.ndarray:
            with torch.inference_mode():
                logits = model(**inputs).logits
            logits = logits.float()  # upcast before anything else touches the numbers
            out = logits[:, 1] - logits[:, 0] if two_labels else logits[:, 0]
            return out.cpu().numpy()

        scores = self._run_engine(lengths, forward, prepare=prepare)
        return PairScores(scores.astype(np.float32), truncated, lengths.astype(np.int32))
