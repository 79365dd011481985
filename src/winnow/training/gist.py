"""``RerankerGuidedGISTLoss``: GISTEmbed's in-batch loss with a winnow reranker as the guide.

GISTEmbed (Solatorio, 2024, https://arxiv.org/abs/2402.16829) trains a bi-encoder with in-batch
negatives and masks out of the softmax the candidates a guide model judges at least as relevant as
the positive (false negatives). ``sentence_transformers.losses.GISTEmbedLoss`` needs a bi-encoder
guide; here the guide is any winnow reranker (``score_pairs``), typically a cross-encoder, and only
the candidates the student's own similarities cannot settle are sent to it (see
:mod:`winnow.training.guidance` for the exact triage). Gradient caching (``mini_batch_size``)
follows ``CachedGISTEmbedLoss`` and reuses sentence-transformers' GradCache machinery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.data_collator import (
    SentenceTransformerDataCollator,
)
from torch import Tensor, nn

from winnow.errors import ConfigError, InputError
from winnow.training.guidance import (
    Guidance,
    GuideScoreCache,
    GuideStats,
    guide_mask,
    plan_batch,
    preset,
)

logger = logging.getLogger(__name__)

#: Default of the triage knobs: take the preset's value.
_FROM_PRESET: Any = object()

#: The key under which :class:`GuidedDataCollator` hands each column's raw texts to the loss.
TEXTS_KEY = "texts"


@dataclass
class GuidedDataCollator(SentenceTransformerDataCollator):
    """The sentence-transformers collator, plus each text column's raw strings (``{column}_texts``)
    so that the guide reads the texts themselves, not the student's tokens decoded back."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(features)
        if features:
            for column, value in features[0].items():
                if isinstance(value, str) and f"{column}_input_ids" in batch:
                    batch[f"{column}_{TEXTS_KEY}"] = [row[column] for row in features]
        return batch


@dataclass
class _Batch:
    """What one forward pass knows besides the embeddings (travels as GradCache's ``labels``)."""

    texts: list[list[str]]


class RerankerGuidedGISTLoss(CachedLossMixin, nn.Module):
    """GISTEmbed loss for (anchor, positive[, negative...]) batches, guided by a winnow reranker.

    Args:
        model: the SentenceTransformer being trained (the student).
        guide: a winnow reranker (``winnow.load_reranker(...)``, any kind) or a model spec string
            (``[KIND:]MODEL``) loaded with ``winnow.load_reranker``.
        preset: ``conservative``, ``balanced`` (default), ``aggressive`` or ``unfiltered`` (every
            in-batch pair goes to the guide); the explicit knobs below override its values.
        similarity_threshold, top_k_ratio, min_top_k, max_candidates, hybrid_threshold: the
            triage (:mod:`winnow.training.guidance`); ``None`` turns one off.
        margin, margin_strategy: GISTEmbed's false-negative rule on the guide's scale:
            ``absolute`` masks ``g > g_pos - margin``, ``relative`` masks
            ``g > g_pos - |g_pos| * margin``.
        contrast_anchors, contrast_positives: add the anchor-anchor / positive-positive blocks
            (GISTEmbed's default: both).
        temperature: softmax temperature (0.01, as ``GISTEmbedLoss``).
        mini_batch_size: embed in mini-batches with gradient caching (``CachedGISTEmbedLoss``); None
            embeds the whole batch with gradients at once.
        cache: a :class:`GuideScoreCache` for guide scores (kept across steps and epochs); by
            default an in-memory one of 2 M entries. A cache without a ``namespace`` takes the
            guide's identity (model, kind, max length, activation), so guides never share scores.

    Per-batch counts are in ``last_stats`` and summed in ``total_stats``
    (:class:`~winnow.training.guidance.GuideStats`) and logged at INFO.
    """

    def __init__(
        self,
        model,
        guide,
        *,
        preset: str = "balanced",
        similarity_threshold: float | None = _FROM_PRESET,
        top_k_ratio: float | None = _FROM_PRESET,
        min_top_k: int = _FROM_PRESET,
        max_candidates: int | None = _FROM_PRESET,
        hybrid_threshold: float | None = _FROM_PRESET,
        margin: float = 0.0,
        margin_strategy: str = "absolute",
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        temperature: float = 0.01,
        mini_batch_size: int | None = None,
        cache: GuideScoreCache | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        overrides = {
            name: value
            for name, value in (
                ("similarity_threshold", similarity_threshold),
                ("top_k_ratio", top_k_ratio),
                ("min_top_k", min_top_k),
                ("max_candidates", max_candidates),
                ("hybrid_threshold", hybrid_threshold),
            )
            if value is not _FROM_PRESET
        }
        self.guidance: Guidance = _preset(preset, margin, margin_strategy, overrides)
        self.preset = preset
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
            raise ConfigError(f"temperature must be a number > 0, got {temperature!r}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        if mini_batch_size is not None and (
            isinstance(mini_batch_size, bool)
            or not isinstance(mini_batch_size, int)
            or mini_batch_size < 1
        ):
            raise ConfigError(f"mini_batch_size must be an integer >= 1, got {mini_batch_size!r}")
        self.model = model
        if isinstance(guide, str):
            from winnow.rerankers.loading import load_reranker
            from winnow.rerankers.registry import parse_model_spec

            kind, name = parse_model_spec(guide)
            guide = load_reranker(name, kind)
        if not callable(getattr(guide, "score_pairs", None)):
            raise ConfigError(
                f"guide must be a winnow reranker (with score_pairs), got {type(guide).__name__}"
            )
        self.guide = guide
        self.temperature = float(temperature)
        self.contrast_anchors = bool(contrast_anchors)
        self.contrast_positives = bool(contrast_positives)
        self.mini_batch_size = mini_batch_size or 0
        self.show_progress_bar = show_progress_bar
        self.uses_gradient_cache = mini_batch_size is not None
        config = getattr(guide, "config", None)
        namespace = repr(
            tuple(getattr(config, k, None) for k in ("model", "kind", "max_length", "activation"))
        )
        if cache is None:
            cache = GuideScoreCache(namespace=namespace)
        elif not cache.namespace:  # an unnamed cache takes the guide's identity
            cache.namespace = namespace
        self.cache = cache
        self.last_stats: GuideStats | None = None
        self.total_stats = GuideStats(batches=0)
        self._warned_decode = False

    # -- texts ------------------------------------------------------------------------------
    def _split_texts(self, features: list[dict[str, Any]]) -> tuple[list[dict], list[list[str]]]:
        """The model inputs without the raw texts, and each column's texts (decoded when absent)."""
        inputs, texts = [], []
        for feature in features:
            feature = dict(feature)
            column = feature.pop(TEXTS_KEY, None)
            if column is None:
                if not self._warned_decode:
                    logger.warning(
                        "the batch has no raw texts (use winnow.training.GuidedDataCollator); the "
                        "guide reads the student's tokens decoded back to text"
                    )
                    self._warned_decode = True
                column = self.model.tokenizer.batch_decode(
                    feature["input_ids"], skip_special_tokens=True
                )
            inputs.append(feature)
            texts.append([str(t) for t in column])
        if len(texts) < 2:
            raise InputError(
                f"RerankerGuidedGISTLoss needs (anchor, positive[, negative...]) columns, got "
                f"{len(texts)} column(s)"
            )
        sizes = {len(t) for t in texts}
        if len(sizes) != 1:
            raise InputError(f"the batch's columns have different lengths: {sorted(sizes)}")
        return inputs, texts

    # -- forward ----------------------------------------------------------------------------
    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None):
        inputs, texts = self._split_texts(list(sentence_features))
        if self.uses_gradient_cache:
            return self.forward_cached(inputs, _Batch(texts))
        embeddings = embed_columns(self.model, inputs)
        return self._loss(list(embeddings), texts, chunk=None, with_backward=False)

    def calculate_loss(self, reps, labels=None, *, with_backward: bool = False) -> Tensor:
        """GradCache's step (2): the loss over the whole batch from the mini-batch embeddings."""
        embeddings = [torch.cat(column) for column in reps]
        return self._loss(
            embeddings, labels.texts, chunk=self.mini_batch_size, with_backward=with_backward
        )

    def _blocks(self, embeddings: list[Tensor]) -> list[tuple[int, int]]:
        """(query column, candidate column) of each block: ap, [aa], [pp], an_1..."""
        blocks = [(0, 1)]
        if self.contrast_anchors:
            blocks.append((0, 0))
        if self.contrast_positives:
            blocks.append((1, 1))
        blocks += [(0, m) for m in range(2, len(embeddings))]
        return blocks

    def plan(self, embeddings: list[Tensor], texts: list[list[str]]):
        """The triage of a batch before any guide call: ``(plan, query_ids, candidate_ids, texts)``.

        ``plan.stats.guide_pairs`` is what the guide will be asked (benchmarks count with this).
        """
        with torch.no_grad():
            normed = [F.normalize(e.detach().float(), dim=-1) for e in embeddings]
            blocks = self._blocks(embeddings)
            ids, flat = _text_ids(texts)
            sims = torch.cat([normed[q] @ normed[c].T for q, c in blocks], dim=1)
            b = sims.shape[0]
            candidate_ids = torch.cat([ids[c] for _, c in blocks])
            query_ids = torch.cat([ids[q][:, None].expand(b, b) for q, _ in blocks], dim=1)
            plan = plan_batch(sims, query_ids, candidate_ids, ids[0], ids[1], self.guidance)
        return plan, query_ids, candidate_ids, flat

    def mask(self, embeddings: list[Tensor], texts: list[list[str]]) -> Tensor:
        """The (B, C) false-negative mask of a batch (C: the candidates of every block, in order:
        anchor-positive, [anchor-anchor], [positive-positive], anchor-negative per negative column).

        Public so that benchmarks and tests can see the decisions; ``forward`` uses it.
        """
        plan, query_ids, candidate_ids, flat = self.plan(embeddings, texts)
        with torch.no_grad():
            mask = guide_mask(
                plan,
                query_ids,
                candidate_ids,
                flat,
                self.guide.score_pairs,
                self.cache,
                self.guidance,
            )
        self.last_stats = plan.stats
        self.total_stats += plan.stats
        logger.info("guided loss batch: %s", plan.stats.as_dict())
        return mask

    def _loss(
        self,
        embeddings: list[Tensor],
        texts: list[list[str]],
        chunk: int | None,
        with_backward: bool,
    ) -> Tensor:
        mask = self.mask(embeddings, texts)
        blocks = self._blocks(embeddings)
        b = embeddings[0].shape[0]
        chunk = chunk or b
        targets = torch.arange(b, device=embeddings[0].device)
        total = torch.zeros((), device=embeddings[0].device)
        for begin in range(0, b, chunk):
            end = min(begin + chunk, b)
            logits = torch.cat(
                [_cosine(embeddings[q][begin:end], embeddings[c]) for q, c in blocks], dim=1
            )
            logits = logits.masked_fill(mask[begin:end], -torch.inf) / self.temperature
            part = F.cross_entropy(logits, targets[begin:end], reduction="sum") / b
            if with_backward:
                part.backward()
                part = part.detach()
            total = total + part
        return total

    def get_config_dict(self) -> dict[str, Any]:
        config = getattr(self.guide, "config", None)
        return {
            "guide": getattr(config, "model", repr(self.guide)),
            "preset": self.preset,
            **{k: v for k, v in vars(self.guidance).items()},
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "temperature": self.temperature,
            "mini_batch_size": self.mini_batch_size or None,
        }

    @property
    def citation(self) -> str:
        return """
@misc{solatorio2024gistembed,
    title={GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding Fine-tuning},
    author={Aivin V. Solatorio},
    year={2024},
    eprint={2402.16829},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""


def _preset(name: str, margin: float, margin_strategy: str, overrides: dict) -> Guidance:
    return preset(name, margin=margin, margin_strategy=margin_strategy, **overrides)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities of every row of ``a`` with every row of ``b`` (as ``nn.CosineSimilarity``
    on broadcast rows, without the (rows x rows x dim) intermediate)."""
    eps = 1e-8
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return an @ bn.T


def _text_ids(texts: list[list[str]]) -> tuple[list[Tensor], list[str]]:
    """Each column's texts as ids into one list of distinct texts (same text, same id)."""
    position: dict[str, int] = {}
    ids = [
        torch.tensor([position.setdefault(t, len(position)) for t in column], dtype=torch.int64)
        for column in texts
    ]
    return ids, list(position)
