"""Passage-level dense retrieval (MaxP): long documents embedded as overlapping windows.

A bi-encoder sees at most ``max_length`` tokens of a document (256 for all-MiniLM-L6-v2), so plain
dense retrieval scores a long document by its beginning only. With passages, a document that does
not fit is cut into windows of ``window`` tokens, a new one every ``stride`` tokens (the title
prepended to each), every window is embedded, and the document is scored by its best window: the
MaxP aggregation of Dai & Callan, "Deeper Text Understanding for IR with Contextual Neural Language
Modeling" (SIGIR 2019), applied to first-stage dense retrieval.

The windows are cut by :func:`winnow.rerankers.chunking.window_spans` (whitespace boundaries, the
model's own tokenizer), as the chunked rerank stage cuts them, with the same defaults: ``window``
fills the model's input (its ``max_length`` less the special tokens and the document prompt) and
``stride`` is three quarters of it. A document that fits one window is embedded as its full text,
exactly the text plain dense embeds, so on short documents MaxP and plain dense score the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from winnow.errors import ConfigError
from winnow.types import Document


@dataclass(frozen=True)
class PassageSettings:
    """Window settings of a passage index (``None``: the encoder's defaults, resolved by :meth:`resolve`)."""

    window: int | None = None
    stride: int | None = None

    def __post_init__(self):
        for name in ("window", "stride"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive number of tokens, got {value!r}")
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ConfigError(
                f"stride={self.stride} > window={self.window} would skip text between windows"
            )

    def resolve(self, encoder) -> tuple[int, int]:
        """``(window, stride)`` in tokens for ``encoder`` (a bi-encoder), defaults filled in.

        Refuses a window larger than the model's input: the model would cut every window.
        """
        room = encoder.document_window()
        window = room if self.window is None else self.window
        if window > room:
            raise ConfigError(
                f"window={window} tokens does not fit the model: {encoder.config.model} takes "
                f"{room} tokens of document text (max_length {encoder.max_length} less special "
                "tokens and the document prompt)"
            )
        stride = self.stride if self.stride is not None else max(1, (window * 3) // 4)
        if stride > window:
            raise ConfigError(f"stride={stride} > window={window} would skip text between windows")
        return window, stride


def document_windows(
    corpus: Mapping[str, Document], tokenizer, window: int, stride: int
) -> tuple[list[str], np.ndarray]:
    """The texts to embed for ``corpus`` and, for each, the index of its document (corpus order).

    A document that fits one window gives its ``full_text``; a longer one gives its windows in
    document order, each ``title + " " + window`` (:func:`~winnow.rerankers.chunking.window_text`).
    Every document gives at least one text, and a document's texts are consecutive.
    """
    from winnow.rerankers.chunking import window_spans, window_text

    texts: list[str] = []
    owner: list[int] = []
    for i, doc in enumerate(corpus.values()):
        spans = window_spans(doc.text, tokenizer, window, stride, title=doc.title)
        if len(spans) == 1:
            texts.append(doc.full_text)
            owner.append(i)
        else:
            texts.extend(window_text(doc.text[a:b], doc.title) for a, b in spans)
            owner.extend([i] * len(spans))
    return texts, np.asarray(owner, dtype=np.int64)


def max_per_document(scores, window_doc, n_docs: int):
    """Row-wise best window score of each document: ``scores`` (rows, windows), a torch tensor,
    ``window_doc`` (windows,) a torch int64 tensor of document indices; returns (rows, n_docs)."""
    import torch

    out = torch.full((scores.shape[0], n_docs), -torch.inf, dtype=scores.dtype)
    index = window_doc.unsqueeze(0).expand(scores.shape[0], -1)
    return out.scatter_reduce_(1, index, scores, reduce="amax", include_self=True)
