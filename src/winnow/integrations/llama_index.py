"""A LlamaIndex node postprocessor that reranks with any winnow reranker
(``pip install 'winnow[llama-index]'``)::

    from winnow.integrations.llama_index import WinnowRerank

    rerank = WinnowRerank(reranker="cross-encoder/ms-marco-MiniLM-L6-v2", top_k=3)
    query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

Nodes come back best first with ``score`` set to the reranker's score; the nodes themselves (ids,
text, metadata, relationships) are the ones given, untouched. The text scored is what LlamaIndex's
own ``SentenceTransformerRerank`` scores: ``node.get_content(metadata_mode=MetadataMode.EMBED)``.
"""

from __future__ import annotations

from typing import Any

from winnow.errors import InputError, require

require("llama_index.core", "llama-index")

from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

from winnow.integrations import as_reranker  # noqa: E402


class WinnowRerank(BaseNodePostprocessor):
    """Rerank LlamaIndex nodes with a winnow reranker and keep the ``top_k`` best.

    Args:
        reranker: a winnow ``Reranker`` or a model spec string (loaded once through winnow's cache).
        top_k: how many nodes to return (None: all of them, reordered).
    """

    top_k: int | None = Field(default=3, description="nodes to keep (None: all)", ge=0)
    model: str = Field(default="", description="the reranker's model (for display)")
    _reranker: Any = PrivateAttr()

    def __init__(self, reranker: Any, top_k: int | None = 3, **kwargs: Any):
        loaded = as_reranker(reranker)
        super().__init__(top_k=top_k, model=str(loaded.config.model), **kwargs)
        self._reranker = loaded

    @classmethod
    def class_name(cls) -> str:
        return "WinnowRerank"

    @property
    def reranker(self) -> Any:
        return self._reranker

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InputError("WinnowRerank needs a query: pass query_str= or query_bundle=")
        for i, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise InputError(f"nodes[{i}] is {type(node).__name__}, expected NodeWithScore")
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        hits = self._reranker.rank(
            query_bundle.query_str, texts, top_k=self.top_k, return_documents=False
        )
        return [NodeWithScore(node=nodes[h.index].node, score=h.score) for h in hits]
