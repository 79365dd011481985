"""LLM rerankers: pointwise yes/no scoring and sliding-window listwise ranking.

Both run on Hugging Face transformers (weights loaded once through the shared model cache) or against
an Ollama server. Kinds: ``llm-pointwise`` (:class:`LLMPointwiseReranker`) and ``llm-listwise``
(:class:`LLMListwiseReranker`).
"""

from __future__ import annotations

from winnow.rerankers.llm.listwise import LLMListwiseReranker
from winnow.rerankers.llm.pointwise import LLMPointwiseReranker

__all__ = ["LLMListwiseReranker", "LLMPointwiseReranker"]
