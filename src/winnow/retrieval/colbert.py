"""ColBERT first-stage retrieval: encode the corpus once into token vectors, index them, MaxSim.

The encoder is the ``late-interaction`` reranker kind (:mod:`winnow.rerankers.late_interaction`),
so documents and queries get exactly the vectors the reranker scores with (prompts, query
expansion, lengths, skiplist, normalisation of the model), in token-budget batches. The index is
the multi-vector index of :mod:`winnow.retrieval.late_interaction`: ``plaid`` (approximate,
compressed), ``exact`` (brute-force MaxSim), or ``auto`` (the default): ``exact`` for corpora of
fewer than 4,096 documents, where it is the faster (``late_interaction.auto_kind``), else
``plaid``; PLAID knobs given with ``auto`` ask for ``plaid``.

The corpus is encoded ``checkpoint_every`` documents at a time and each chunk's token vectors
kept compactly: float16 for a PLAID index (whose residuals are quantised to 8 or 4 bits anyway),
the exact index's own dtype (float32 by default, so exact scores are unchanged) otherwise. With a
cache folder each finished chunk is saved under ``<cache_dir>/late-interaction-chunks/<key>/``
(keyed by the encoding's identity and the chunk's range) and read back memory-mapped, so an
interrupted run resumes from the last finished chunk and the float32 token matrices are never
all in memory at once; the chunks are removed once the index entry is saved.

With a cache folder the index is kept under ``<cache_dir>/late-interaction/<key>/`` by
:func:`~winnow.retrieval.late_interaction.cached_index`, the key a sha256 of the model's identity
(a fingerprint of its files), its late-interaction settings, dtype, document length, a hash of the
corpus, the index kind and its knobs: a later run loads the index and encodes only the queries.
Document token vectors encoded here also fill the reranker's memo, so ``rerank:colbert:MODEL`` on
the same corpus encodes no document again while they fit.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow._progress import progress_enabled
from winnow.defaults import DEFAULT_MODEL
from winnow.errors import ConfigError, InputError
from winnow.retrieval._checks import check_corpus, check_queries
from winnow.types import Document, Run

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "plaid", "exact")
#: Documents encoded (and, with a cache folder, checkpointed) at a time: a few minutes of
#: all-MiniLM-L6-v2 on a loaded 2-core CPU for Cranfield-length abstracts, seconds on a GPU.
CHECKPOINT_EVERY = 1024
TOKENS = "tokens.npy"
DOCLENS = "doclens.npy"


def index_option_types(kind: str) -> dict[str, Any]:
    """{knob: type} of an index kind's keyword options (build and search knobs); ``auto`` takes
    the ``plaid`` knobs (giving one asks for a PLAID index)."""
    from winnow.retrieval.late_interaction import _kinds

    if kind not in INDEX_KINDS:
        raise ConfigError(f"index must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    cls = _kinds()["plaid" if kind == "auto" else kind]
    hints = typing.get_type_hints(cls.__init__)
    import inspect

    return {
        p.name: hints.get(p.name, Any)
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


def parse_index_options(kind: str, options: Mapping[str, str]) -> dict[str, Any]:
    """The text ``KEY=VALUE`` knobs of a spec converted to the index kind's declared types."""
    from winnow.rerankers.options import parse_text

    types = index_option_types(kind)
    out: dict[str, Any] = {}
    for key, text in options.items():
        if key not in types:
            raise ConfigError(
                f"unknown option {key!r} for a {kind} index (valid: {', '.join(types) or 'none'})"
            )
        try:
            out[key] = parse_text(text, types[key])
        except ValueError as exc:
            raise ConfigError(f"index option {key}={text!r}: {exc}") from None
    return out


class ColBERTIndex:
    """Late-interaction retriever. ``index(corpus)`` then ``search(queries, top_k)``.

    Args:
        model: a ColBERT checkpoint (folder or hub id), or a backbone (see
            ``late-interaction``'s ``backbone`` option; all-MiniLM-L6-v2 by default).
        cache_dir: folder for the cached index (no caching when ``None``).
        device, dtype, max_length: as for ``winnow.load_reranker``.
        show_progress: tqdm bar while encoding (default: only when stderr is a terminal).
        index: ``"auto"`` (default: ``exact`` below 4,096 documents, else ``plaid``),
            ``"plaid"`` or ``"exact"``.
        index_options: the index's knobs (``nbits``, ``ncentroids``, ``nprobe``, ``ndocs``...,
            see :mod:`winnow.retrieval._plaid`); part of the cache key.
        checkpoint_every: documents encoded at a time; with ``cache_dir`` each finished chunk is
            saved, so an interrupted ``index()`` resumes where it stopped.
        **options: the ``late-interaction`` kind's options (``backbone``, ``length_normalize``,
            ``max_tokens``, ``memo_mb``...).

    ``timings`` holds the seconds of the last ``index`` (``hash``, ``cache_hit``, ``encode``,
    ``build``, ``index``) or ``search`` (``encode``, ``retrieve``, ``search``) call;
    ``resolved_kind`` the kind of the index built or loaded (``auto`` resolved).
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
        index: str = "auto",
        index_options: Mapping[str, Any] | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        **options: Any,
    ):
        from winnow.rerankers.loading import load_reranker
        from winnow.retrieval._cache import checked_checkpoint_every

        self.checkpoint_every = checked_checkpoint_every(checkpoint_every)

        types = index_option_types(index)
        knobs = dict(index_options or {})
        unknown = sorted(set(knobs) - set(types))
        if unknown:
            raise ConfigError(
                f"unknown option(s) for a {index} index: {', '.join(unknown)} "
                f"(valid: {', '.join(types) or 'none'})"
            )
        self.index_kind = index
        self.index_options = knobs
        self.encoder = load_reranker(
            model,
            kind="late-interaction",
            device=device,
            dtype=dtype,
            max_length=max_length,
            **options,
        )
        self.model = self.encoder.config.model
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.timings: dict[str, float] = {}
        self.resolved_kind: str | None = None
        self._index = None

    def __repr__(self) -> str:
        n = len(self._index) if self._index is not None else 0
        return f"ColBERTIndex({self.model!r}, {self.index_kind}, {n} documents indexed)"

    @property
    def multi_vector_index(self):
        """The built :class:`~winnow.retrieval.late_interaction.MultiVectorIndex` (after index())."""
        return self._index

    def resolve_kind(self, num_documents: int) -> str:
        """The index kind built for a corpus of ``num_documents`` (``auto`` resolved)."""
        from winnow.retrieval.late_interaction import auto_kind

        if self.index_kind != "auto":
            return self.index_kind
        if self.index_options:  # PLAID knobs given: the caller wants PLAID
            return "plaid"
        return auto_kind(num_documents)

    def token_dtype(self, kind: str) -> str:
        """How the encoded token vectors are kept until the index is built."""
        return self.index_options.get("dtype", "float32") if kind == "exact" else "float16"

    def encoding_key(self, corpus: Mapping[str, Document]) -> dict[str, Any]:
        """Everything the documents' token vectors depend on."""
        from winnow._hashing import corpus_hash
        from winnow.retrieval.dense import encoder_identity

        c = self.encoder.config
        settings = self.encoder.settings()
        settings.pop("similarity", None)  # scores are divided at search time, not stored
        return {
            "model": encoder_identity(self.encoder),
            "dtype": c.dtype,
            "settings": settings,
            "text": "title + ' ' + text",
            "corpus": corpus_hash(corpus),
        }

    def cache_key(self, corpus: Mapping[str, Document]) -> dict[str, Any]:
        """Everything the index depends on."""
        return self._index_key(self.encoding_key(corpus), len(corpus))

    def _index_key(self, encoding_key: dict[str, Any], num_documents: int) -> dict[str, Any]:
        kind = self.resolve_kind(num_documents)
        key = {
            **encoding_key,
            "index": kind,
            "index_options": dict(sorted(self.index_options.items())),
        }
        if kind == "plaid":  # built from float16 token vectors (earlier versions: float32)
            key["tokens"] = "float16"
        return key

    def index(self, corpus: Mapping[str, Document]) -> ColBERTIndex:
        """Encode ``corpus`` and build the index, or load it from ``cache_dir``."""
        from winnow.retrieval._cache import entry_dir, is_complete
        from winnow.retrieval.late_interaction import build_index_chunked, cached_index

        check_corpus(corpus)
        start = time.perf_counter()
        timings: dict[str, float] = {"cache_hit": 1.0, "encode": 0.0, "build": 0.0}
        doc_ids = list(corpus)
        kind = self.resolve_kind(len(doc_ids))
        if self.index_kind == "auto":
            logger.info(
                "late-interaction index for %d documents: %s (index=auto)", len(doc_ids), kind
            )
        knobs = dict(self.index_options)
        chunk_folders: list[Path] = []
        encode_key = None if self.cache_dir is None else self.encoding_key(corpus)

        def build():
            timings["cache_hit"] = 0.0
            t = time.perf_counter()
            texts = [corpus[d].full_text for d in doc_ids]
            chunks, folders = self._encode_in_chunks(texts, encode_key, self.token_dtype(kind))
            chunk_folders.extend(folders)
            timings["encode"] = time.perf_counter() - t
            t = time.perf_counter()
            built = build_index_chunked(doc_ids, chunks, kind=kind, **knobs)
            timings["build"] = time.perf_counter() - t
            return built

        if self.cache_dir is None:
            index = build()
        else:
            key = self._index_key(encode_key, len(doc_ids))
            timings["hash"] = time.perf_counter() - start
            index = cached_index(self.cache_dir, key, build)
            if chunk_folders and is_complete(entry_dir(self.cache_dir, "late-interaction", key)):
                for folder in chunk_folders:  # the index entry holds them now
                    shutil.rmtree(folder, ignore_errors=True)
        if list(index.doc_ids) != doc_ids:  # a cache entry is keyed by the corpus; never trust
            raise InputError("the late-interaction index does not hold the corpus's documents")
        self._index = index
        self.resolved_kind = index.kind
        timings["index"] = time.perf_counter() - start
        self.timings = timings
        return self

    def _encode_in_chunks(
        self, texts: list[str], key: dict[str, Any] | None, dtype: str
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Path]]:
        """``(tokens, doclens)`` of ``texts``, ``checkpoint_every`` documents at a time, kept as
        ``dtype``; with a cache ``key`` each chunk is read (memory-mapped) from its checkpoint
        when one exists, else encoded and saved. Returns the chunks and the checkpoint folders.
        The chunk boundaries do not depend on the cache, so a resumed run gives exactly the
        vectors of an uninterrupted one."""
        from winnow.retrieval._cache import entry_dir, save_entry

        step = self.checkpoint_every
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        folders: list[Path] = []
        reused = 0
        for begin in range(0, len(texts), step):
            end = min(begin + step, len(texts))
            folder = chunk = None
            if key is not None and len(texts) > step:  # one chunk: nothing to resume from
                params = {**key, "tokens": dtype, "chunk": [begin, end]}
                folder = entry_dir(self.cache_dir, "late-interaction-chunks", params)
                folders.append(folder)
                chunk = _read_chunk(folder, end - begin, dtype)
                reused += 0 if chunk is None else end - begin
            if chunk is None:
                mats = self.encoder.encode_documents(
                    texts[begin:end], show_progress=progress_enabled(self.show_progress)
                )
                lens = np.array([len(m) for m in mats], dtype=np.int64)
                tokens = np.concatenate([np.asarray(m, dtype=dtype) for m in mats])
                del mats
                if folder is not None:

                    def write(f: Path, t=tokens, n=lens) -> None:
                        np.save(f / TOKENS, t)
                        np.save(f / DOCLENS, n)

                    if save_entry(folder, {**params, "model_path": self.model}, write):
                        read = _read_chunk(folder, end - begin, dtype)  # memory-mapped
                        tokens, lens = read if read is not None else (tokens, lens)
                chunk = (tokens, lens)
            chunks.append(chunk)
        if reused:
            logger.info(
                "colbert: %d of %d documents' token vectors read from checkpoints",
                reused,
                len(texts),
            )
        return chunks, folders

    def search(self, queries: Mapping[str, str], top_k: int = 1000, **knobs: Any) -> Run:
        """Top ``top_k`` documents per query by MaxSim (length-normalised when the encoder is),
        best first, equal scores ordered by ``doc_id``; ``knobs`` are the index's search knobs.

        A query that is empty or only whitespace gets an empty ranking.
        """
        from winnow._runs import check_top_k

        if self._index is None:
            raise InputError("ColBERTIndex.search called before index()")
        top_k = check_top_k(top_k)
        start = time.perf_counter()
        qids = check_queries(queries)
        run: Run = {qid: {} for qid in qids}
        live = [q for q in qids if queries[q].strip()]
        t = time.perf_counter()
        vectors = self.encoder.encode_queries([queries[q] for q in live], show_progress=False)
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        k = min(top_k or len(self._index), len(self._index))
        hits = self._index.search(vectors, k, **knobs) if live else []
        normalize = self.encoder.length_normalize
        for qid, q, found in zip(live, vectors, hits):
            scale = np.float32(q.shape[0]) if normalize else np.float32(1.0)
            run[qid] = {doc_id: float(np.float32(s) / scale) for doc_id, s in found}
        self.timings = {
            "encode": encode_s,
            "retrieve": time.perf_counter() - t,
            "search": time.perf_counter() - start,
        }
        return run


def _read_chunk(folder: Path, documents: int, dtype: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A complete checkpoint's ``(tokens, doclens)`` (tokens memory-mapped), else None."""
    from winnow.retrieval._cache import is_complete

    if not is_complete(folder):
        return None
    try:
        lens = np.load(folder / DOCLENS)
        tokens = np.load(folder / TOKENS, mmap_mode="r")
        if lens.shape != (documents,) or lens.dtype != np.int64 or (lens < 1).any():
            raise ValueError(f"{DOCLENS}: shape {lens.shape} {lens.dtype}, expected {documents}")
        if tokens.ndim != 2 or len(tokens) != int(lens.sum()) or tokens.dtype != np.dtype(dtype):
            raise ValueError(
                f"{TOKENS}: shape {tokens.shape} {tokens.dtype}, "
                f"expected {int(lens.sum())} {dtype} rows"
            )
    except (OSError, ValueError) as exc:
        logger.warning("unreadable colbert checkpoint %s (%s); encoding again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return tokens, lens


def __getattr__(name: str):
    # The old name, kept for code written before the index classes were renamed.
    from winnow._deprecation import renamed

    return renamed(__name__, name, {"ColBERT": ColBERTIndex})
