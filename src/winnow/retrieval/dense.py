"""Dense first-stage retrieval: a bi-encoder embeds the corpus once, search is exact top-k.

Embeddings come from ``winnow.load_reranker(model, kind="bi-encoder")`` (length-sorted,
token-budget batches) and are L2-normalised, so the dot product is the cosine similarity.
Search multiplies query embeddings by the document matrix in chunks of queries (float32),
takes the top k with ``argpartition`` and sorts only those.

Document embeddings are cached under ``cache_dir`` keyed by the model's identity (a fingerprint
of its files: names, sizes and the bytes at both ends of each), dtype, ``max_length``, document
prompt and a hash of the corpus; stored as ``embeddings.npy`` (float32) and ``doc_ids.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow._fs import atomic_directory
from winnow._hashing import corpus_hash
from winnow._runs import check_top_k
from winnow.errors import InputError
from winnow.retrieval._cache import entry_dir, is_complete, write_meta
from winnow.types import Document, Run

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDINGS = "embeddings.npy"
DOC_IDS = "doc_ids.json"
#: Largest query-by-document score block computed at once (float32 elements: 256 MiB).
SCORE_BLOCK = 1 << 26
_SAMPLE = 1 << 20


def _file_fingerprint(h: Any, path: Path, rel: str) -> None:
    size = path.stat().st_size
    h.update(f"{rel}\0{size}\0".encode())
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
            h.update(f.read(_SAMPLE))
        elif size > _SAMPLE:
            h.update(f.read())


def model_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over a model folder's file names, sizes and first/last MiB of each file.

    Independent of where the folder lives, and changed by any retraining (the weights differ in
    their first bytes after the small safetensors header). Hashing whole multi-GB weight files on
    every run would cost seconds; the two samples plus the exact size are enough to tell
    checkpoints apart.
    """
    root = Path(path)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        _file_fingerprint(h, file, rel)
    return h.hexdigest()


def _local_model_dir(model: str) -> Path | None:
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not downloaded yet, or not a hub id
        return None


class Dense:
    """Bi-encoder retriever. ``index(corpus)`` then ``search(queries, top_k)``.

    Args:
        model: sentence-transformers model folder or hub id.
        cache_dir: folder for cached document embeddings (no caching when ``None``).
        device, dtype: as for ``winnow.load_reranker``.
        show_progress: tqdm bar while encoding (default: only when stderr is a terminal).
        max_length: longest input in tokens (the model's own limit when omitted).
        query_prompt, document_prompt: prefixes such as ``"query: "`` for E5-style models.
        **options: passed to ``load_reranker`` (``max_tokens``, ``max_batch_size``).

    ``timings`` holds the seconds of the last ``index`` (``hash``, ``cache_hit``, ``encode``,
    ``index``) or ``search`` (``encode``, ``retrieve``, ``search``) call.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        cache_dir: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        show_progress: bool | None = None,
        *,
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        **options: Any,
    ):
        from winnow.rerankers.loading import load_reranker

        if query_prompt:
            options["query_prompt"] = query_prompt
        if document_prompt:
            options["document_prompt"] = document_prompt
        self.encoder = load_reranker(
            model, kind="bi-encoder", device=device, dtype=dtype, max_length=max_length, **options
        )
        self.model = self.encoder.config.model
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self.embeddings: np.ndarray | None = None
        self._doc_ids: list[str] = []
        self._doc_order: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Dense({self.model!r}, {len(self._doc_ids)} documents indexed)"

    @property
    def doc_ids(self) -> list[str]:
        return list(self._doc_ids)

    def _progress(self) -> bool:
        import sys

        return sys.stderr.isatty() if self.show_progress is None else bool(self.show_progress)

    def cache_key(self, corpus: Mapping[str, Document]) -> dict[str, Any]:
        """Everything the document embeddings depend on."""
        c = self.encoder.config
        local = _local_model_dir(c.model)
        if local is None:  # a hub model not yet downloaded: download it through the encoder
            self.encoder.load()
            local = _local_model_dir(c.model)
        identity = model_fingerprint(local) if local is not None else f"hub:{c.model}"
        return {
            "model": identity,
            "dtype": c.dtype,
            "max_length": c.max_length,
            "document_prompt": c.option("document_prompt"),
            "text": "title + ' ' + text",
            "corpus": corpus_hash(corpus),
        }

    def _set(self, doc_ids: list[str], embeddings: np.ndarray) -> None:
        self._doc_ids = doc_ids
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        order = np.empty(len(doc_ids), dtype=np.int64)
        order[np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")] = np.arange(
            len(doc_ids)
        )
        self._doc_order = order  # rank of each document's id in sorted order, for tie-breaking

    def index(self, corpus: Mapping[str, Document]) -> Dense:
        """Embed ``corpus`` (``{doc_id: Document}``), or load its embeddings from ``cache_dir``."""
        if not corpus:
            raise InputError("cannot index an empty corpus")
        start = time.perf_counter()
        timings: dict[str, float] = {"cache_hit": 0.0, "encode": 0.0}
        entry = key = None
        if self.cache_dir is not None:
            key = self.cache_key(corpus)
            timings["hash"] = time.perf_counter() - start
            entry = entry_dir(self.cache_dir, "dense", key)
            if is_complete(entry):
                doc_ids = json.loads((entry / DOC_IDS).read_text())
                self._set(doc_ids, np.load(entry / EMBEDDINGS))
                timings["cache_hit"] = 1.0
                timings["index"] = time.perf_counter() - start
                self.timings = timings
                logger.info("dense embeddings loaded from %s", entry)
                return self
        doc_ids = list(corpus)
        t = time.perf_counter()
        texts = [f"{d.title} {d.text}".strip() for d in corpus.values()]
        embeddings = self.encoder.encode_documents(texts, show_progress=self._progress())
        timings["encode"] = time.perf_counter() - t
        if entry is not None:
            with atomic_directory(entry) as tmp:
                np.save(tmp / EMBEDDINGS, np.asarray(embeddings, dtype=np.float32))
                (tmp / DOC_IDS).write_text(json.dumps(doc_ids))
                write_meta(tmp, {**key, "model_path": self.model, "documents": len(doc_ids)})
            logger.info("dense embeddings saved to %s", entry)
        self._set(doc_ids, embeddings)
        timings["index"] = time.perf_counter() - start
        self.timings = timings
        return self

    def search(self, queries: Mapping[str, str], top_k: int = 1000) -> Run:
        """Top ``top_k`` documents per query by cosine similarity, best first.

        Equal scores are ordered by ``doc_id``. A query that is empty or only whitespace gets an
        empty ranking. ``top_k`` beyond the corpus size is clamped.
        """
        if self.embeddings is None:
            raise InputError("Dense.search called before index()")
        top_k = check_top_k(top_k)
        start = time.perf_counter()
        qids = list(queries)
        for qid in qids:
            if not isinstance(queries[qid], str):
                raise InputError(
                    f"query {qid!r} must be a string, got {type(queries[qid]).__name__}"
                )
        run: Run = {qid: {} for qid in qids}
        live = [q for q in qids if queries[q].strip()]
        t = time.perf_counter()
        q_emb = (
            self.encoder.encode_queries([queries[q] for q in live], show_progress=False)
            if live
            else np.zeros((0, self.embeddings.shape[1]), dtype=np.float32)
        )
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        for qid, docs in zip(live, self.top_k(q_emb, top_k)):
            run[qid] = docs
        self.timings = {
            "encode": encode_s,
            "retrieve": time.perf_counter() - t,
            "search": time.perf_counter() - start,
        }
        return run

    def top_k(self, query_embeddings: np.ndarray, top_k: int) -> list[dict[str, float]]:
        """Exact top-k by dot product for each row of ``query_embeddings`` (float32)."""
        docs = self.embeddings
        n = docs.shape[0]
        k = min(top_k, n)
        q = np.asarray(query_embeddings, dtype=np.float32)
        rows = max(1, SCORE_BLOCK // max(n, 1))
        ids, order = self._doc_ids, self._doc_order
        out: list[dict[str, float]] = []
        for begin in range(0, q.shape[0], rows):
            scores = q[begin : begin + rows] @ docs.T
            if k < n:
                idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            else:
                idx = np.broadcast_to(np.arange(n), scores.shape)
            top = np.take_along_axis(scores, idx, axis=1)
            # sort by score descending, then by doc_id ascending
            perm = np.lexsort((order[idx], -top), axis=-1)
            idx = np.take_along_axis(idx, perm, axis=1)
            top = np.take_along_axis(top, perm, axis=1)
            for i_row, s_row in zip(idx.tolist(), top.tolist()):
                out.append({ids[i]: s for i, s in zip(i_row, s_row)})
        return out
