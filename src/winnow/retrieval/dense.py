"""Dense first-stage retrieval: a bi-encoder embeds the corpus once, search is exact top-k.

Embeddings come from ``winnow.load_reranker(model, kind="bi-encoder")`` (length-sorted,
token-budget batches) and are L2-normalised, so the dot product is the cosine similarity.
Search multiplies query embeddings by the document matrix in chunks of queries (float32),
takes the top k with ``argpartition`` and sorts only those.

Document embeddings are cached under ``cache_dir`` keyed by the model's identity (a fingerprint
of its files: names, sizes and the bytes at both ends of each), the encoding path
(``BiEncoderReranker.embedding_identity``: winnow's engine with the pooling and head it reproduces,
or sentence-transformers and its version), dtype, ``max_length``, document prompt and a hash of
the corpus; stored as ``embeddings.npy`` (float32) and ``doc_ids.json``.

The corpus is encoded in chunks of ``checkpoint_every`` documents (in corpus order). With a cache
folder each finished chunk is saved at once (``<cache_dir>/dense-chunks/<key>/``, keyed by the
same identity plus the chunk's range), so a run killed part-way resumes from the last finished
chunk; the chunks are removed once the whole corpus's entry is saved. The chunk boundaries do not
depend on the cache, so a resumed run gives exactly the embeddings of an uninterrupted one.

With ``index="faiss"`` (extra ``winnow[faiss]``) search goes through a FAISS index built from the
embeddings with ``faiss.index_factory(dim, faiss_factory, METRIC_INNER_PRODUCT)``: ``"Flat"`` (the
default) is exact and multi-threaded, ``"HNSW32"`` and the like are approximate. The FAISS index is
built in memory at ``index()`` time from the (cached) embeddings, not stored.

With ``passages=True`` (MaxP, :mod:`winnow.retrieval.passages`) a document longer than the model's
input is embedded as overlapping windows of ``window`` tokens every ``stride`` tokens and scored by
its best window; ``embeddings`` then has one row per window and ``window_doc`` names each row's
document. The window settings are part of the cache key, and the entry also holds
``window_doc.npy``. Search stays exact (the FAISS index is not available with passages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow._hashing import corpus_hash
from winnow._progress import progress_enabled
from winnow._runs import check_top_k, tie_break_order
from winnow.defaults import DEFAULT_MODEL
from winnow.errors import ConfigError, InputError, require
from winnow.retrieval._cache import checked_checkpoint_every, entry_dir, is_complete, save_entry
from winnow.retrieval._checks import check_corpus, check_queries
from winnow.types import Document, Run

logger = logging.getLogger(__name__)

EMBEDDINGS = "embeddings.npy"
DOC_IDS = "doc_ids.json"
WINDOW_DOC = "window_doc.npy"
#: Version of the window cutting, in the cache key of passage indexes.
PASSAGE_SPLITTER = "window_spans-whitespace-v1"
#: Largest query-by-document score block computed at once (float32 elements: 256 MiB).
SCORE_BLOCK = 1 << 26
_SAMPLE = 1 << 20
#: Documents encoded (and, with a cache folder, checkpointed) at a time: about half a minute of
#: all-MiniLM-L6-v2 on two CPU cores, seconds on a GPU.
CHECKPOINT_EVERY = 4096


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


def encoder_identity(encoder) -> str:
    """What a reranker-backed encoder's outputs depend on: its files' fingerprint (downloading a
    hub model not yet local through the encoder), else ``hub:<id>``."""
    model = encoder.config.model
    local = _local_model_dir(model)
    if local is None:  # a hub model not yet downloaded: download it through the encoder
        encoder.load()
        local = _local_model_dir(model)
    return model_fingerprint(local) if local is not None else f"hub:{model}"


def _local_model_dir(model: str) -> Path | None:
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not downloaded yet, or not a hub id
        return None


class DenseIndex:
    """Bi-encoder retriever. ``index(corpus)`` then ``search(queries, top_k)``.

    Args:
        model: sentence-transformers model folder or hub id.
        cache_dir: folder for cached document embeddings (no caching when ``None``).
        device, dtype: as for ``winnow.load_reranker``.
        show_progress: tqdm bar while encoding (default: only when stderr is a terminal).
        max_length: longest input in tokens (the model's own limit when omitted).
        query_prompt, document_prompt: prefixes such as ``"query: "`` for E5-style models.
        index: ``"exact"`` (numpy matrix product) or ``"faiss"``.
        faiss_factory: FAISS index description for ``index="faiss"`` (``"Flat"``, ``"HNSW32"``, ...).
        checkpoint_every: documents encoded at a time; with ``cache_dir`` each finished chunk is
            saved, so an interrupted ``index()`` resumes where it stopped (windows, with passages).
        passages: embed documents longer than the model's input as overlapping windows and score
            each document by its best window (MaxP); exact search only.
        window, stride: window length and step in tokens with ``passages`` (default: the model's
            whole input, ``max_length`` less special tokens and document prompt; three quarters of
            the window). A window longer than the model's input is refused.
        **options: passed to ``load_reranker`` (``max_tokens``, ``max_batch_size``, ``encoder``:
            ``"winnow"``, the engine, or ``"sentence-transformers"``).

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
        index: str = "exact",
        faiss_factory: str = "Flat",
        checkpoint_every: int = CHECKPOINT_EVERY,
        passages: bool = False,
        window: int | None = None,
        stride: int | None = None,
        **options: Any,
    ):
        from winnow.rerankers.loading import load_reranker
        from winnow.retrieval.passages import PassageSettings

        self.checkpoint_every = checked_checkpoint_every(checkpoint_every)
        if index not in ("exact", "faiss"):
            raise ConfigError(f"index must be 'exact' or 'faiss', got {index!r}")
        if index == "faiss":
            require("faiss", "faiss")
        if not isinstance(passages, bool):
            raise ConfigError(f"passages must be True or False, got {passages!r}")
        if not passages and (window is not None or stride is not None):
            raise ConfigError("window and stride apply with passages=True only")
        if passages and index != "exact":
            raise ConfigError("passages=True searches exactly: index must be 'exact'")
        self.passages = PassageSettings(window, stride) if passages else None
        self.index_type = index
        self.faiss_factory = faiss_factory
        self._faiss = None

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
        #: with passages: the document index of each row of ``embeddings``
        self.window_doc: np.ndarray | None = None

    def __repr__(self) -> str:
        if self.passages is not None:
            rows = 0 if self.embeddings is None else len(self.embeddings)
            return (
                f"DenseIndex({self.model!r}, passages, {len(self._doc_ids)} documents indexed "
                f"as {rows} windows)"
            )
        return f"DenseIndex({self.model!r}, {len(self._doc_ids)} documents indexed)"

    def window_settings(self) -> tuple[int, int] | None:
        """``(window, stride)`` in tokens with passages (defaults resolved), else None."""
        return None if self.passages is None else self.passages.resolve(self.encoder)

    @property
    def doc_ids(self) -> list[str]:
        return list(self._doc_ids)

    def cache_key(self, corpus: Mapping[str, Document]) -> dict[str, Any]:
        """Everything the document embeddings depend on."""
        c = self.encoder.config
        key = {
            "model": encoder_identity(self.encoder),
            # the encoding path (winnow's engine and the module stack it reproduces, or
            # sentence-transformers and its version): a cache made by one is never read by another
            "encoding": self.encoder.embedding_identity(),
            "dtype": c.dtype,
            "max_length": c.max_length,
            "document_prompt": c.option("document_prompt"),
            "text": "title + ' ' + text",
            "corpus": corpus_hash(corpus),
        }
        if self.passages is not None:  # plain dense keys stay as they were
            window, stride = self.window_settings()
            key["passages"] = {"window": window, "stride": stride, "splitter": PASSAGE_SPLITTER}
        return key

    def _set(
        self,
        doc_ids: list[str],
        embeddings: np.ndarray,
        timings: dict[str, float],
        window_doc: np.ndarray | None = None,
    ) -> None:
        self._doc_ids = doc_ids
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.window_doc = window_doc
        self._doc_order = tie_break_order(doc_ids)  # tie-break key: rank of each id in sorted order
        self._faiss = None
        if self.index_type == "faiss":
            t = time.perf_counter()
            self._faiss = self._build_faiss(self.embeddings)
            timings["faiss_build"] = time.perf_counter() - t

    def _build_faiss(self, embeddings: np.ndarray):
        faiss = require("faiss", "faiss")
        try:
            index = faiss.index_factory(
                embeddings.shape[1], self.faiss_factory, faiss.METRIC_INNER_PRODUCT
            )
        except RuntimeError as exc:
            raise ConfigError(f"invalid faiss_factory {self.faiss_factory!r}: {exc}") from exc
        if not index.is_trained:
            index.train(embeddings)
        index.add(embeddings)
        return index

    def index(self, corpus: Mapping[str, Document]) -> DenseIndex:
        """Embed ``corpus`` (``{doc_id: Document}``), or load its embeddings from ``cache_dir``."""
        check_corpus(corpus)
        start = time.perf_counter()
        timings: dict[str, float] = {"cache_hit": 0.0, "encode": 0.0}
        entry = key = None
        if self.cache_dir is not None:
            key = self.cache_key(corpus)
            timings["hash"] = time.perf_counter() - start
            entry = entry_dir(self.cache_dir, "dense", key)
            if is_complete(entry):
                try:
                    doc_ids = json.loads((entry / DOC_IDS).read_text())
                    embeddings = np.load(entry / EMBEDDINGS)
                    window_doc = self._read_window_doc(entry, len(doc_ids), len(embeddings))
                    if len(doc_ids) != len(corpus) or (
                        window_doc is None and embeddings.shape[0] != len(doc_ids)
                    ):
                        raise ValueError("embeddings do not match the documents")
                    if window_doc is None:
                        texts = [corpus[d].full_text for d in doc_ids]
                    else:  # same corpus hash, so the same documents in the same order
                        texts, owner = self._texts(corpus)
                        if not np.array_equal(owner, window_doc):
                            raise ValueError("the windows do not match the cached ones")
                except (OSError, ValueError) as exc:
                    logger.warning("unreadable dense cache entry %s (%s); rebuilding", entry, exc)
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    self._set(doc_ids, embeddings, timings, window_doc)
                    # A later bi-encoder rerank with this model then finds these texts embedded.
                    self.encoder.remember_documents(texts, embeddings)
                    timings["cache_hit"] = 1.0
                    timings["index"] = time.perf_counter() - start
                    self.timings = timings
                    logger.info("dense embeddings loaded from %s", entry)
                    return self
        doc_ids = list(corpus)
        t = time.perf_counter()
        texts, window_doc = self._texts(corpus)
        if window_doc is not None:
            timings["windows"] = time.perf_counter() - t
        t = time.perf_counter()
        embeddings, chunks = self._encode_in_chunks(texts, key)
        timings["encode"] = time.perf_counter() - t
        if entry is not None:

            def write(folder: Path) -> None:
                np.save(folder / EMBEDDINGS, np.asarray(embeddings, dtype=np.float32))
                (folder / DOC_IDS).write_text(json.dumps(doc_ids))
                if window_doc is not None:
                    np.save(folder / WINDOW_DOC, window_doc)

            meta = {**key, "model_path": self.model, "documents": len(doc_ids)}
            if window_doc is not None:
                meta["windows"] = len(texts)
            if save_entry(entry, meta, write):
                logger.info("dense embeddings saved to %s", entry)
                for chunk in chunks:  # the whole entry holds them now
                    shutil.rmtree(chunk, ignore_errors=True)
        self._set(doc_ids, embeddings, timings, window_doc)
        timings["index"] = time.perf_counter() - start
        self.timings = timings
        return self

    def _texts(self, corpus: Mapping[str, Document]) -> tuple[list[str], np.ndarray | None]:
        """What is embedded for ``corpus``, in corpus order: the full texts, or with passages the
        windows and the document index of each (``winnow.retrieval.passages.document_windows``)."""
        if self.passages is None:
            return [d.full_text for d in corpus.values()], None
        from winnow.rerankers.chunking import window_tokenizer
        from winnow.retrieval.passages import document_windows

        window, stride = self.window_settings()
        return document_windows(corpus, window_tokenizer(self.encoder), window, stride)

    def _read_window_doc(self, entry: Path, documents: int, rows: int) -> np.ndarray | None:
        """A passage entry's window -> document indices, checked against its shape."""
        if self.passages is None:
            return None
        window_doc = np.load(entry / WINDOW_DOC)
        if (
            window_doc.shape != (rows,)
            or window_doc.dtype != np.int64
            or (rows and (window_doc.min() < 0 or window_doc.max() >= documents))
            or len(np.unique(window_doc)) != documents
        ):
            raise ValueError("window_doc.npy does not match the embeddings and documents")
        return window_doc

    def _encode_in_chunks(
        self, texts: list[str], key: dict[str, Any] | None
    ) -> tuple[np.ndarray, list[Path]]:
        """Embeddings of ``texts``, ``checkpoint_every`` at a time; with a cache ``key`` each chunk
        is read from its checkpoint when one exists, else encoded and saved. Returns the
        embeddings and the checkpoint folders (to remove once the whole entry is saved)."""
        step = self.checkpoint_every
        if len(texts) <= step:  # one chunk: nothing to resume from
            return self.encode_documents(texts), []
        out: np.ndarray | None = None  # filled chunk by chunk: no second copy of the matrix
        folders: list[Path] = []
        reused = 0
        for begin in range(0, len(texts), step):
            end = min(begin + step, len(texts))
            folder = None
            if key is not None:
                params = {**key, "chunk": [begin, end]}
                folder = entry_dir(self.cache_dir, "dense-chunks", params)
                folders.append(folder)
                emb = _read_chunk(folder, end - begin)
                if emb is not None:
                    reused += end - begin
            if folder is None or emb is None:
                emb = self.encode_documents(texts[begin:end])
                if folder is not None:
                    meta = {**params, "model_path": self.model}
                    save_entry(folder, meta, lambda f, e=emb: np.save(f / EMBEDDINGS, e))
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[begin:end] = emb
        if reused:
            logger.info(
                "dense: %d of %d document embeddings read from checkpoints", reused, len(texts)
            )
        return out, folders

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """Float32 embeddings of documents' texts (one chunk of ``index``); the Daft engine's
        index (``winnow.distributed.stages``) runs this on its workers instead."""
        emb = self.encoder.encode_documents(
            texts, show_progress=progress_enabled(self.show_progress)
        )
        return np.asarray(emb, dtype=np.float32)

    def search(self, queries: Mapping[str, str], top_k: int = 1000) -> Run:
        """Top ``top_k`` documents per query by cosine similarity, best first.

        Equal scores are ordered by ``doc_id``. A query that is empty or only whitespace gets an
        empty ranking. ``top_k`` beyond the corpus size is clamped.
        """
        if self.embeddings is None:
            raise InputError("DenseIndex.search called before index()")
        top_k = check_top_k(top_k)
        start = time.perf_counter()
        qids = check_queries(queries)
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
        """Top-k by dot product for each row of ``query_embeddings`` (float32), best first."""
        if self._faiss is not None:
            k = min(top_k, len(self._doc_ids))
            q = np.ascontiguousarray(query_embeddings, dtype=np.float32)
            top, idx = self._faiss.search(q, k) if len(q) else (np.zeros((0, k)), np.zeros((0, k)))
            idx, top = order_hits(idx.astype(np.int64), top.astype(np.float32), self._doc_order)
        else:
            idx, top = exact_top_k(
                query_embeddings,
                self.embeddings,
                top_k,
                self._doc_order,
                window_doc=self.window_doc,
                num_documents=len(self._doc_ids),
            )
        ids = self._doc_ids
        return [
            {ids[i]: s for i, s in zip(i_row, s_row) if i >= 0}
            for i_row, s_row in zip(idx.tolist(), top.tolist())
        ]


def _read_chunk(folder: Path, rows: int) -> np.ndarray | None:
    """A checkpoint's embeddings when it is complete and has ``rows`` rows, else None."""
    if not is_complete(folder):
        return None
    try:
        emb = np.load(folder / EMBEDDINGS)
        if emb.ndim != 2 or emb.shape[0] != rows or emb.dtype != np.float32:
            raise ValueError(f"shape {emb.shape} {emb.dtype}, expected {rows} float32 rows")
    except (OSError, ValueError) as exc:
        logger.warning("unreadable dense checkpoint %s (%s); encoding again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return emb


def order_hits(
    idx: np.ndarray, scores: np.ndarray, doc_order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of hits by score descending, then by ``doc_order`` (index when omitted).

    Entries with index -1 (padding from approximate FAISS indexes) go last.
    """
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    tie = safe if doc_order is None else doc_order[safe]
    perm = np.lexsort((tie, np.where(valid, -scores, np.inf)), axis=-1)
    return np.take_along_axis(idx, perm, axis=1), np.take_along_axis(scores, perm, axis=1)


def exact_top_k(
    queries: np.ndarray,
    documents: np.ndarray,
    top_k: int,
    doc_order: np.ndarray | None = None,
    block: int = SCORE_BLOCK,
    *,
    window_doc: np.ndarray | None = None,
    num_documents: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner product: ``(indices, scores)`` of shape (queries, min(top_k, documents)).

    With ``window_doc`` (MaxP) the rows of ``documents`` are windows, ``window_doc[i]`` the index of
    row i's document among ``num_documents`` of them, and a document's score is its best
    window's (``winnow.retrieval.passages.max_per_document``).

    Scores are computed in float32 for blocks of queries of at most ``block`` elements and the
    k + 1 best of each row taken with ``torch.topk`` (multi-threaded; numpy's single-threaded
    ``argpartition`` is several times slower on large corpora). Rows are ordered by score
    descending, ties by ``doc_order``; a row whose k-th and (k+1)-th scores are equal is redone
    over all documents so that ``doc_order`` also decides which tied documents are kept.
    """
    import torch

    from winnow.retrieval.passages import max_per_document

    docs = torch.from_numpy(np.ascontiguousarray(documents, dtype=np.float32))
    q = np.ascontiguousarray(queries, dtype=np.float32)
    owner = None if window_doc is None else torch.from_numpy(np.asarray(window_doc, np.int64))
    n = docs.shape[0] if owner is None else int(num_documents)
    k = min(top_k, n)
    kk = min(k + 1, n)
    rows = max(1, block // max(docs.shape[0], n, 1))
    out_idx = np.empty((q.shape[0], k), dtype=np.int64)
    out_top = np.empty((q.shape[0], k), dtype=np.float32)
    with torch.inference_mode():
        for begin in range(0, q.shape[0], rows):
            scores = torch.from_numpy(q[begin : begin + rows]) @ docs.T
            if owner is not None:
                scores = max_per_document(scores, owner, n)
            values, indices = torch.topk(scores, kk, dim=1, largest=True, sorted=True)
            top = values[:, :k].numpy().copy()
            idx = indices[:, :k].numpy().copy()
            if kk > k:
                for row in np.flatnonzero((values[:, k] == values[:, k - 1]).numpy()):
                    full = scores[row].numpy()
                    tie = np.arange(n) if doc_order is None else doc_order
                    best = np.lexsort((tie, -full))[:k]
                    idx[row], top[row] = best, full[best]
            idx, top = order_hits(idx, top, doc_order)
            out_idx[begin : begin + len(idx)] = idx
            out_top[begin : begin + len(idx)] = top
    return out_idx, out_top


def __getattr__(name: str):
    # The old name, kept for code written before the index classes were renamed.
    from winnow._deprecation import renamed

    return renamed(__name__, name, {"Dense": DenseIndex})
