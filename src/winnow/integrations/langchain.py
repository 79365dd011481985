"""A LangChain document compressor that reranks with any winnow reranker
(``pip install 'winnow[langchain]'``)::

    from langchain_core.documents import Document
    from winnow.integrations.langchain import WinnowRerank

    compressor = WinnowRerank(reranker="cross-encoder/ms-marco-MiniLM-L6-v2", top_k=3)
    best = compressor.compress_documents(docs, "how do wings make lift?")

Each returned ``Document`` is a copy of the one given (same ``id``, ``page_content`` and metadata)
with the score added to its metadata under ``score_key`` (``relevance_score``, as LangChain's own
rerankers write it), best first. Use it inside a ``ContextualCompressionRetriever``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from winnow.errors import InputError, require

require("langchain_core", "langchain")

from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict, field_validator  # noqa: E402

from winnow.integrations import as_reranker  # noqa: E402


class WinnowRerank(BaseDocumentCompressor):
    """Rerank LangChain ``Document``s with a winnow reranker and keep the ``top_k`` best.

    Args:
        reranker: a winnow ``Reranker`` (``winnow.load_reranker(...)``) or a model spec string,
            loaded once through winnow's cache.
        top_k: how many documents to return (None: all of them, reordered).
        score_key: the metadata key the score is written under.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Any
    top_k: int | None = 3
    score_key: str = "relevance_score"

    def __init__(self, reranker: Any, **kwargs: Any):
        # loaded before pydantic sees it, so a bad model name raises winnow's own error
        super().__init__(reranker=as_reranker(reranker), **kwargs)

    @field_validator("top_k")
    @classmethod
    def _check_top_k(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"top_k must be a non-negative integer or None, got {value!r}")
        return value

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """The ``top_k`` best of ``documents`` for ``query``, best first, scores in metadata."""
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise InputError(
                    f"documents[{i}] is {type(doc).__name__}, expected a langchain Document"
                )
        hits = self.reranker.rank(
            query, [d.page_content for d in docs], top_k=self.top_k, return_documents=False
        )
        return [
            Document(
                page_content=docs[h.index].page_content,
                metadata={**docs[h.index].metadata, self.score_key: h.score},
                id=docs[h.index].id,
            )
            for h in hits
        ]
