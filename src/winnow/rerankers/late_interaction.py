"""Late-interaction (ColBERT) reranker and token encoder: score = MaxSim over token embeddings.

The model is a sentence-transformers ``MultiVectorEncoder`` (PyLate, Stanford ColBERT or native
checkpoints), so its own settings apply unchanged: the ``[Q]`` / ``[D]`` prompts, query expansion
and query length, document length, the skiplist and the normalisation. Each distinct query and
document is encoded once per call, in token-budget batches sorted by length, through
``encode_query`` / ``encode_document`` themselves (so the token vectors equal the reference); the
document token matrices are kept in a bounded memo across calls. MaxSim is computed per query over
the concatenated token matrices of its documents (one matrix product, then a segmented max), which
gives ``MultiVectorEncoder.similarity_pairwise`` within float32 rounding.

A checkpoint that is not a ColBERT (a bi-encoder or a bare transformer) is refused: loaded as a
``MultiVectorEncoder`` it would get a random projection and no markers or query expansion. The one
exception is the *backbone* mode (``backbone=true``, on by default for the offline
all-MiniLM-L6-v2): the model's own token vectors, L2-normalised, no projection, no markers and no
expansion, a weak ColBERT of about bi-encoder quality (``docs/late_interaction.md``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.defaults import DEFAULT_MODEL
from winnow.errors import ConfigError
from winnow.rerankers._imports import heavy_imports
from winnow.rerankers._torch import from_pretrained_kwargs, quantize_int8
from winnow.rerankers.base import PairScores, Reranker, RerankerConfig
from winnow.rerankers.cache import EMBEDDINGS, MODELS, EmbeddingMemo
from winnow.rerankers.options import RerankerOptions, option

logger = logging.getLogger(__name__)

#: Default bound of the document token-embedding memo of one model (MiB): token matrices are
#: ~200x a single vector, so 1 GiB holds about 3,500 all-MiniLM-L6-v2 documents of 200 tokens.
DEFAULT_MEMO_MB = 1024

#: Hub ids of the documented backbone (``backbone`` defaults to true for them).
DOCUMENTED_BACKBONES = (DEFAULT_MODEL, DEFAULT_MODEL.rpartition("/")[2])


@dataclass(frozen=True)
class LateInteractionOptions(RerankerOptions):
    """Options of the ``late-interaction`` kind."""

    length_normalize: bool | None = option(
        None,
        "divide MaxSim by the query's token count, so scores compare across queries "
        "(default: the model's own similarity, maxsim or meanmaxsim)",
    )
    backbone: bool | None = option(
        None,
        "use a non-ColBERT checkpoint's own token vectors (no projection, markers or expansion; a "
        "weak ColBERT); default true for all-MiniLM-L6-v2 only",
    )
    memo_mb: float = option(
        DEFAULT_MEMO_MB,
        "bound of the document token-embedding memo in MiB (0: no memo)",
        must="a number of MiB >= 0 (0: no memo)",
    )


class TokenEmbeddingMemo(EmbeddingMemo):
    """:class:`EmbeddingMemo` for token matrices: one (tokens x dim) array per text, sizes vary."""

    def store(self, texts: list[str], embeddings: list[np.ndarray]) -> None:
        if self.max_bytes <= 0 or len(texts) == 0:
            return
        with self._lock:
            for text, matrix in zip(texts, embeddings):
                if matrix.nbytes > self.max_bytes:
                    continue  # would push everything else out and still not fit
                old = self._rows.pop(text, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._rows[text] = matrix
                self._bytes += matrix.nbytes
            while self._bytes > self.max_bytes and self._rows:
                _, old = self._rows.popitem(last=False)
                self._bytes -= old.nbytes


def is_documented_backbone(path: str) -> bool:
    """Whether ``path`` (a resolved model path or hub id) is the documented offline backbone."""
    from winnow.rerankers.hub import resolve_model_path

    if path in DOCUMENTED_BACKBONES:
        return True
    return any(path == resolve_model_path(name) for name in DOCUMENTED_BACKBONES)


def check_checkpoint(path: str, backbone: bool | None) -> bool:
    """Whether ``path`` loads in backbone mode; a ConfigError for a non-ColBERT without it.

    ``backbone=None`` means true for the documented backbone (all-MiniLM-L6-v2), false otherwise.
    """
    from winnow.rerankers.hub import colbert_format

    fmt = colbert_format(path)
    if fmt is not None:
        if backbone:
            raise ConfigError(
                f"model {path!r} is a ColBERT checkpoint ({fmt}); backbone=true is for "
                "non-ColBERT models only: drop it to use the checkpoint's projection and settings"
            )
        return False
    if backbone is None:
        backbone = is_documented_backbone(path)
    if not backbone:
        raise ConfigError(
            f"model {path!r} is not a ColBERT checkpoint (no MultiVectorEncoder, PyLate or "
            "Stanford ColBERT files): loading it as one would add a random projection and no "
            "[Q]/[D] markers or query expansion. Give a ColBERT checkpoint (e.g. "
            "colbert-ir/colbertv2.0, answerdotai/answerai-colbert-small-v1), or add "
            "?backbone=true to use its own token vectors as a weak ColBERT "
            "(see docs/late_interaction.md)"
        )
    return True


def _backbone_modules(path: str, model_kwargs: dict[str, Any]) -> list:
    """Transformer -> scoring mask -> token-level L2 normalisation: no projection, no markers."""
    from winnow.rerankers.hub import _read_json

    with heavy_imports():
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    root = path
    modules = _read_json(path, "modules.json") or []
    sub = next((m.get("path", "") for m in modules if "Transformer" in m.get("type", "")), "")
    if sub and os.path.isdir(os.path.join(path, sub)):
        root = os.path.join(path, sub)
    st_config = _read_json(root, "sentence_bert_config.json") or {}
    kwargs: dict[str, Any] = {"model_kwargs": model_kwargs} if model_kwargs else {}
    if st_config.get("max_seq_length"):
        kwargs["max_seq_length"] = int(st_config["max_seq_length"])
    transformer = Transformer(root, **kwargs)
    return [transformer, MultiVectorMask(), Normalize(module_input_name="token_embeddings")]


def load_multi_vector_encoder(path: str, device: str, dtype: str, backbone: bool):
    """A ``MultiVectorEncoder`` for a ColBERT checkpoint, or built on a backbone's token vectors."""
    with heavy_imports():
        from sentence_transformers import MultiVectorEncoder

    model_kwargs = {} if dtype in ("float32", "int8") else from_pretrained_kwargs(dtype)
    if backbone:
        model = MultiVectorEncoder(modules=_backbone_modules(path, model_kwargs), device=device)
    else:
        kwargs = {"model_kwargs": model_kwargs} if model_kwargs else {}
        model = MultiVectorEncoder(path, device=device, **kwargs)
    model.eval()
    if dtype == "int8":
        model = quantize_int8(model)
    return model


def maxsim_scores(
    queries: list[np.ndarray],
    documents: list[np.ndarray],
    query_index: np.ndarray,
    doc_index: np.ndarray,
    length_normalize: bool = False,
) -> np.ndarray:
    """MaxSim of pairs ``(queries[query_index[i]], documents[doc_index[i]])``, float32.

    For each query, its documents' token matrices are concatenated and multiplied by the query's
    once; the per-document maxima come from one ``np.maximum.reduceat`` over the segments. A
    document with no tokens scores 0. Written by hand because sentence-transformers' pairwise
    MaxSim pads every pair to the longest document and repeats the query per pair.
    """
    scores = np.zeros(len(query_index), dtype=np.float32)
    order = np.argsort(query_index, kind="stable")
    bounds = np.flatnonzero(np.diff(query_index[order])) + 1
    for group in np.split(order, bounds):
        if len(group) == 0:
            continue
        q = queries[int(query_index[group[0]])]
        mats = [documents[int(j)] for j in doc_index[group]]
        lengths = np.fromiter((m.shape[0] for m in mats), dtype=np.int64, count=len(mats))
        live = lengths > 0
        if not live.any() or q.shape[0] == 0:
            continue
        block = np.concatenate([m for m, ok in zip(mats, live) if ok], axis=0)
        starts = np.concatenate([[0], np.cumsum(lengths[live])[:-1]])
        sim = q @ block.T  # (query tokens, document tokens of the group)
        best = np.maximum.reduceat(sim, starts, axis=1).sum(axis=0, dtype=np.float32)
        if length_normalize:
            best = best / np.float32(q.shape[0])
        scores[group[live]] = best
    return scores


class LateInteractionReranker(Reranker):
    """ColBERT-style reranker: the score of a pair is MaxSim of its query and document tokens.

    Options: ``length_normalize`` (divide by the query's token count; default the model's own
    similarity), ``backbone`` (a non-ColBERT model's own token vectors, see the module docstring),
    ``memo_mb`` (bound of the document token memo, default 1024 MiB; 0 turns it off),
    ``max_tokens``, ``max_batch_size``, ``show_progress``. ``max_length`` caps the document length
    (queries keep the model's query length / expansion).

    The same object encodes for late-interaction retrieval (``encode_queries`` /
    ``encode_documents``: one float32 (tokens x dim) array per text).
    """

    kind = "late-interaction"
    options_class = LateInteractionOptions

    def __init__(self, config: RerankerConfig):
        super().__init__(config)
        self.model = None
        self.memo: TokenEmbeddingMemo | None = None
        self.backbone = False
        if os.path.isdir(config.model):  # refuse a non-ColBERT folder now, not on first use
            self.backbone = check_checkpoint(config.model, self.options.backbone)

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        c = self.config
        self.backbone = check_checkpoint(c.model, self.options.backbone)
        key = ("late-interaction", c.model, c.device, c.dtype, self.backbone)
        self.model = MODELS.get_or_create(
            key, lambda: load_multi_vector_encoder(c.model, c.device, c.dtype, self.backbone)
        )
        with heavy_imports():
            from sentence_transformers.base.modules import Transformer
        transformer = next(m for m in self.model if isinstance(m, Transformer))
        self.tokenizer = transformer.tokenizer
        model_max = int(self.model.max_seq_length or 512)
        doc_len = int(transformer.document_length or model_max)
        self._doc_length = min(doc_len, c.max_length) if c.max_length else doc_len
        expansion = transformer.query_expansion
        self._expansion = dict(expansion) if expansion else None
        self._query_length = int(transformer.query_length or model_max)
        if self._expansion and self._expansion["strategy"] == "fixed":
            self._query_length = int(self._expansion["length"])
        self._prompts = (self._prompt("query"), self._prompt("document"))
        normalize = self.options.length_normalize
        if normalize is None:
            normalize = self.model.similarity_fn_name == "meanmaxsim"
        self._length_normalize = bool(normalize)
        memo_mb = self.options.memo_mb
        if isinstance(memo_mb, bool) or not isinstance(memo_mb, (int, float)) or memo_mb < 0:
            raise ConfigError(f"memo_mb must be a number of MiB >= 0 (0: no memo), got {memo_mb!r}")
        self.memo = EMBEDDINGS.get_or_create(
            (*key, self._doc_length, memo_mb), lambda: TokenEmbeddingMemo(int(memo_mb * 2**20))
        )

    def _prompt(self, task: str) -> str:
        prompts = self.model.prompts or {}
        names = ("query",) if task == "query" else ("document", "passage", "corpus")
        return next((prompts[n] for n in names if prompts.get(n)), "")

    def _release(self) -> None:
        self.model = None
        self.memo = None

    def score_identity(self) -> list[Any]:
        """Backbone mode or not (decided from the model's files, without loading it)."""
        backbone = check_checkpoint(self.config.model, self.options.backbone)
        return ["backbone" if backbone else "colbert"]

    @property
    def max_length(self) -> int:
        """Longest document (tokens) the model reads; longer ones are truncated."""
        self.load()
        return self._doc_length

    @property
    def query_length(self) -> int:
        """Tokens of every query (with fixed query expansion) or the most a query keeps."""
        self.load()
        return self._query_length

    @property
    def length_normalize(self) -> bool:
        self.load()
        return self._length_normalize

    @property
    def dimension(self) -> int:
        self.load()
        return int(self.model.get_embedding_dimension())

    def settings(self) -> dict[str, Any]:
        """The model's own late-interaction settings, for ``winnow info`` and cache keys."""
        self.load()
        mask = next((m for m in self.model if type(m).__name__ == "MultiVectorMask"), None)
        return {
            "backbone": self.backbone,
            "dimension": self.dimension,
            "query_prompt": self._prompts[0],
            "document_prompt": self._prompts[1],
            "query_length": self._query_length,
            "query_expansion": self._expansion,
            "document_length": self._doc_length,
            "skiplist": len(getattr(mask, "skiplist_words", []) or []),
            "similarity": "meanmaxsim" if self._length_normalize else "maxsim",
        }

    def info(self, name: str | None = None) -> dict[str, Any]:
        """The common fields plus the late-interaction settings (:meth:`settings`)."""
        out = super().info(name)
        out.update(self.settings())
        return out

    # -- encoding ----------------------------------------------------------------------------
    def token_lengths(self, texts: list[str], task: str) -> np.ndarray:
        """Tokens each text has with its prompt and special tokens, before truncation."""
        prompt = self._prompts[0 if task == "query" else 1]
        enc = self.tokenizer(
            [prompt + t for t in texts], add_special_tokens=True, truncation=False, verbose=False
        )["input_ids"]
        return np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(texts))

    def _limit(self, task: str) -> int:
        return self._query_length if task == "query" else self._doc_length

    def _seen_lengths(self, lengths: np.ndarray, task: str) -> np.ndarray:
        """Tokens the model reads of each text (query expansion pads queries up to its length)."""
        seen = np.minimum(lengths, self._limit(task))
        if task == "query" and self._expansion:
            seen = np.maximum(seen, int(self._expansion["length"]))
        return seen

    def _embed(
        self, texts: list[str], task: str, show_progress: bool | None, lengths: np.ndarray
    ) -> list[np.ndarray]:
        """Run the model on distinct texts in token-budget batches; one float32 matrix per text.

        ``lengths`` are the texts' token counts (``token_lengths``), for planning the batches."""
        model = self.model
        encode = model.encode_query if task == "query" else model.encode_document
        extra: dict[str, Any] = {}
        if task == "document" and self.config.max_length:
            extra["processing_kwargs"] = {"text": {"max_length": self._doc_length}}
        lengths = self._seen_lengths(lengths, task)

        def forward(idx: np.ndarray) -> np.ndarray:
            out = encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                convert_to_numpy=True,
                show_progress_bar=False,
                **extra,
            )
            rows = np.empty(len(idx), dtype=object)
            for i, matrix in enumerate(out):
                rows[i] = np.ascontiguousarray(matrix, dtype=np.float32)
            return rows

        result = self._run_engine(
            lengths, forward, desc=f"encoding {task}s", progress=show_progress
        )
        return list(result)

    def encode_queries(
        self, queries: list[str], *, show_progress: bool | None = None
    ) -> list[np.ndarray]:
        """Token embeddings of each query (float32, tokens x dim); duplicates encoded once."""
        self.load()
        return self._encode(queries, "query", show_progress)

    def encode_documents(
        self, documents: list[str], *, show_progress: bool | None = None
    ) -> list[np.ndarray]:
        """Token embeddings of each document (float32, tokens x dim), through the memo."""
        self.load()
        return self._encode(documents, "document", show_progress)

    def _encode(
        self,
        texts: list[str],
        task: str,
        show_progress: bool | None,
        lengths: dict[str, int] | None = None,
    ) -> list[np.ndarray]:
        """One matrix per text; ``lengths`` ({text: tokens}) saves tokenising them again."""
        if not texts:
            return []
        unique = list(dict.fromkeys(texts))
        known = self.memo.lookup(unique) if task == "document" else {}
        todo = [t for i, t in enumerate(unique) if i not in known]
        fresh: list[np.ndarray] = []
        if todo:
            if lengths is None:
                todo_lengths = self.token_lengths(todo, task)
            else:
                todo_lengths = np.fromiter((lengths[t] for t in todo), np.int64, len(todo))
            fresh = self._embed(todo, task, show_progress, todo_lengths)
        if task == "document":
            self.memo.store(todo, fresh)
        by_text = dict(zip(todo, fresh))
        for i, matrix in known.items():
            by_text[unique[i]] = matrix
        return [by_text[t] for t in texts]

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, pairs: list[tuple[str, str]]) -> PairScores:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        q_pos = {q: i for i, q in enumerate(queries)}
        d_pos = {d: i for i, d in enumerate(docs)}
        qi = np.fromiter((q_pos[q] for q, _ in pairs), dtype=np.int64, count=len(pairs))
        di = np.fromiter((d_pos[d] for _, d in pairs), dtype=np.int64, count=len(pairs))
        q_tokens = self.token_lengths(queries, "query")
        d_tokens = self.token_lengths(docs, "document")
        q_emb = self._encode(queries, "query", None, dict(zip(queries, q_tokens.tolist())))
        d_emb = self._encode(docs, "document", None, dict(zip(docs, d_tokens.tolist())))
        scores = maxsim_scores(q_emb, d_emb, qi, di, self._length_normalize)
        q_len, d_len = q_tokens[qi], d_tokens[di]
        truncated = (d_len > self._doc_length) | (q_len > self._query_length)
        num_tokens = np.minimum(d_len, self._doc_length).astype(np.int32)
        return PairScores(scores, truncated, num_tokens)
