"""winnow inside the tools people already use, one module per package it plugs into.

Each module imports its package when it is imported itself (never from ``import winnow``), and a
missing package raises :class:`~winnow.errors.MissingExtraError` naming the pip command:

- :mod:`winnow.integrations.langchain`: ``WinnowRerank``, a LangChain ``BaseDocumentCompressor``
  (``pip install 'winnow[langchain]'``);
- :mod:`winnow.integrations.llama_index`: ``WinnowRerank``, a LlamaIndex ``BaseNodePostprocessor``
  (``pip install 'winnow[llama-index]'``);
- :mod:`winnow.integrations.mcp`: ``build_server``, an MCP server with ``rerank`` and ``search`` tools
  (``winnow mcp``; ``pip install 'winnow[mcp]'``);
- :mod:`winnow.integrations.ranx`: runs and qrels to and from ranx ``Run`` / ``Qrels``
  (``pip install 'winnow[ranx]'``);
- :mod:`winnow.integrations.pyterrier`: PyTerrier transformers wrapping a winnow reranker or
  pipeline (``pip install 'winnow[pyterrier]'``);
- :mod:`winnow.integrations.ir_datasets`: ``irds:`` dataset ids read through ir_datasets
  (``pip install 'winnow[ir-datasets]'``).

See docs/api.md.
"""

from __future__ import annotations

from typing import Any


def as_reranker(reranker: Any) -> Any:
    """A winnow :class:`~winnow.rerankers.base.Reranker` from one, or from a model spec string
    (``[KIND:]MODEL[?KEY=VALUE&...]``, loaded through the process-wide cache)."""
    from winnow.errors import ConfigError
    from winnow.rerankers.base import Reranker

    if isinstance(reranker, Reranker):
        return reranker
    if isinstance(reranker, str):
        from winnow.rerankers.loading import load_spec

        return load_spec(reranker)
    raise ConfigError(
        f"reranker must be a winnow Reranker or a model name, got {type(reranker).__name__}"
    )
