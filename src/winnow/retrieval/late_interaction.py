"""Multi-vector (late-interaction) indexes: exact MaxSim and a PLAID-style compressed index.

A document is a (tokens x dim) float32 matrix of L2-normalised token vectors (a ColBERT encoder's
output); a query is one too. Its score is MaxSim: the sum over query tokens of the largest dot
product with any document token (Khattab and Zaharia, 2020, "ColBERT").

* :class:`ExactIndex` (``kind="exact"``) scores every document by brute force: the query tokens
  of a batch of queries times a block of document tokens (numpy BLAS, float32), the maximum over
  each document's tokens with ``np.maximum.reduceat``, the sum over each query's tokens with
  ``np.add.reduceat``. It is the reference the approximate index is measured against.
* :class:`~winnow.retrieval._plaid.PlaidIndex` (``kind="plaid"``, the default) is the PLAID
  engine (Santhanam et al., 2022): k-means centroids, each token stored as centroid id + a
  compressed residual, inverted lists, and search by centroid interaction before decompressing a
  few candidates. See ``_plaid.py``.

Both are built with :func:`build_index`, grown with ``add``, searched with ``search`` (best
first, equal scores ordered by ``doc_id``), written with ``save`` (a folder written beside the
target and renamed into place) and read back with :meth:`MultiVectorIndex.load` (memory-mapped by
default). :func:`cached_index` keeps one under a cache folder keyed by a sha256 of what it was
built from. The on-disk format is described in docs/retrieval.md ("Late interaction index").

No library that works with this project's pins provides a multi-vector index (PyLate and
fast-plaid do not run on torch 2.13), so the MaxSim blocks and the file layout are written here;
the k-means, nearest-centroid search and residual quantiser come from faiss.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from winnow._fs import replace_directory
from winnow._runs import check_top_k, tie_break_order
from winnow.errors import ConfigError, DatasetError, InputError
from winnow.retrieval._cache import entry_dir, is_complete, save_entry

logger = logging.getLogger(__name__)

#: Version of the folder layout written by ``save``; ``load`` refuses any other.
FORMAT_VERSION = 1
META = "meta.json"
DOC_IDS = "doc_ids.json"
DOCLENS = "doclens.npy"
TOKENS = "tokens.npy"
#: Largest block of query-token x document-token scores computed at once (float32: 64 MiB).
SCORE_BLOCK = 1 << 24
#: Query tokens multiplied against each block of document tokens at once.
QUERY_ROWS = 512
#: Sub-folder of a cache entry that holds the index (the entry's own meta.json holds the key).
CACHE_SUBDIR = "index"
#: ``kind="auto"`` builds an exact index for corpora of fewer documents (see :func:`auto_kind`).
AUTO_EXACT_DOCUMENTS = 4096

Hits = list[tuple[str, float]]


def _as_matrix(value: Any, what: str, dim: int | None) -> np.ndarray:
    """``value`` as a C-contiguous float32 (tokens x dim) matrix, or :class:`InputError`."""
    if hasattr(value, "detach"):  # a torch tensor (what sentence-transformers' encoders return)
        value = value.detach().float().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise InputError(f"{what} must be a numpy array (tokens x dim), got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise InputError(f"{what} must hold floating-point token vectors, got dtype {value.dtype}")
    if value.ndim != 2:
        raise InputError(f"{what} must be a 2-d (tokens x dim) matrix, got shape {value.shape}")
    if value.shape[0] == 0:
        raise InputError(f"{what} has zero tokens")
    if dim is not None and value.shape[1] != dim:
        raise InputError(f"{what} has token vectors of dim {value.shape[1]}, the index has {dim}")
    out = np.ascontiguousarray(value, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{what} holds NaN or infinite values")
    return out


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over the query's tokens of the largest dot product with any of the document's tokens."""
    q = _as_matrix(query, "query", None)
    d = _as_matrix(doc, "document", q.shape[1])
    return float((q @ d.T).max(axis=1).sum())


def _segment_starts(lengths: np.ndarray) -> np.ndarray:
    """Start offset of each segment of consecutive ``lengths`` (which must all be >= 1)."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def segment_maxsim(
    token_scores: np.ndarray, q_lens: np.ndarray, doc_lens: np.ndarray
) -> np.ndarray:
    """MaxSim from a (query tokens x document tokens) score block: a (queries x documents) block.

    ``token_scores`` rows are the tokens of consecutive queries (``q_lens`` each, all >= 1), its
    columns the tokens of consecutive documents (``doc_lens`` each, all >= 1).
    """
    per_doc = np.maximum.reduceat(token_scores, _segment_starts(doc_lens), axis=1)
    return np.add.reduceat(per_doc, _segment_starts(q_lens), axis=0)


def top_hits(scores: np.ndarray, k: int, doc_order: np.ndarray, candidates=None) -> np.ndarray:
    """Positions (into ``scores``) of the ``k`` best, best first, equal scores by ``doc_order``.

    ``candidates`` (document numbers of the entries of ``scores``; all documents when omitted)
    index ``doc_order``. Every entry tied with the k-th is considered, so the tie-break also
    decides which tied documents make the cut.
    """
    n = len(scores)
    k = min(k, n)
    docs = np.arange(n) if candidates is None else candidates
    if k < n:
        cut = scores[np.argpartition(-scores, k - 1)[:k]].min()
        keep = np.flatnonzero(scores >= cut)
    else:
        keep = np.arange(n)
    order = np.lexsort((doc_order[docs[keep]], -scores[keep]))[:k]
    return keep[order]


class MultiVectorIndex:
    """What every multi-vector index offers; :class:`ExactIndex` and ``PlaidIndex`` implement it.

    ``add(doc_ids, vectors)`` appends documents (one float (tokens x dim) matrix each; ids must be
    new), ``search(queries, k)`` returns for each query the ``k`` best ``(doc_id, score)`` pairs,
    best first, equal scores ordered by ``doc_id``.
    """

    kind: ClassVar[str] = ""
    #: Search-time knobs ``search(**knobs)`` accepts (with their defaults).
    search_knobs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.doc_ids: list[str] = []
        self.doclens = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._ids: set[str] = set()
        self._doc_order = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} documents, "
            f"{int(self.doclens.sum())} tokens, dim {self.dim})"
        )

    @property
    def num_tokens(self) -> int:
        return int(self._offsets[-1])

    # -- adding -----------------------------------------------------------------------------

    def add(self, doc_ids: Sequence[str], vectors: Iterable[np.ndarray]) -> None:
        """Append documents: ``vectors`` holds one (tokens x dim) float matrix per id."""
        if isinstance(doc_ids, str) or not isinstance(doc_ids, Sequence):
            raise InputError(f"doc_ids must be a sequence of strings, got {type(doc_ids).__name__}")
        ids = list(doc_ids)
        seen = set(self._ids)
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str):
                raise InputError(f"doc_ids[{i}] must be a string, got {type(doc_id).__name__}")
            if doc_id in seen:
                raise InputError(f"doc_ids[{i}]: duplicate document id {doc_id!r}")
            seen.add(doc_id)
        mats = []
        for i, v in enumerate(vectors):
            if i >= len(ids):
                raise InputError(f"more token matrices than doc_ids ({len(ids)})")
            mats.append(_as_matrix(v, f"document {ids[i]!r} (doc_ids[{i}])", self.dim))
        if len(mats) != len(ids):
            raise InputError(f"{len(ids)} doc_ids but {len(mats)} token matrices")
        if not ids:
            raise InputError("no documents to add")
        lens = np.array([m.shape[0] for m in mats], dtype=np.int64)
        self._append(np.concatenate(mats), lens)
        self.doc_ids.extend(ids)
        self._ids.update(ids)
        self.doclens = np.concatenate([self.doclens, lens])
        self._offsets = np.concatenate([[0], np.cumsum(self.doclens)]).astype(np.int64)
        self._doc_order = tie_break_order(self.doc_ids)

    def _append(self, tokens: np.ndarray, lens: np.ndarray) -> None:
        raise NotImplementedError

    # -- searching --------------------------------------------------------------------------

    def search(self, queries: Sequence[np.ndarray], k: int = 100, **knobs: Any) -> list[Hits]:
        """The ``k`` best ``(doc_id, score)`` of each query (a (tokens x dim) matrix), best first."""
        k = check_top_k(k)
        if k is None:
            raise ConfigError("k must be a positive integer, got None")
        unknown = sorted(set(knobs) - set(self.search_knobs))
        if unknown:
            valid = ", ".join(self.search_knobs) or "none"
            raise ConfigError(
                f"unknown search option(s) for a {self.kind} index: {', '.join(unknown)} "
                f"(valid: {valid})"
            )
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            raise InputError(
                "queries must be a sequence of (tokens x dim) matrices, got one matrix"
            )
        qs = [_as_matrix(q, f"queries[{i}]", self.dim) for i, q in enumerate(queries)]
        if not len(self):
            raise InputError(f"cannot search an empty {self.kind} index")
        if not qs:
            return []
        return self._search(qs, k, **knobs)

    def _search(self, queries: list[np.ndarray], k: int, **knobs: Any) -> list[Hits]:
        raise NotImplementedError

    def _hits(self, scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> Hits:
        pos = top_hits(scores, k, self._doc_order, candidates)
        docs = pos if candidates is None else candidates[pos]
        ids = self.doc_ids
        return [(ids[d], float(s)) for d, s in zip(docs.tolist(), scores[pos].tolist())]

    # -- saving and loading -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """What ``meta.json`` records: format version, kind, dim, counts and the knobs."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "documents": len(self),
            "tokens": self.num_tokens,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to the folder ``path`` (replaced whole; readers never see a mix)."""
        if not len(self):
            raise InputError(f"cannot save an empty {self.kind} index")
        with replace_directory(path) as tmp:
            self._write(tmp)

    def _write(self, folder: Path) -> None:
        (folder / DOC_IDS).write_text(json.dumps(self.doc_ids), encoding="utf-8")
        np.save(folder / DOCLENS, self.doclens)
        self._write_arrays(folder)
        (folder / META).write_text(json.dumps(self.meta(), indent=2) + "\n", encoding="utf-8")

    def _write_arrays(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> MultiVectorIndex:
        """Read an index saved by ``save``; its kind comes from ``meta.json``.

        With ``mmap`` the large arrays are memory-mapped read-only (``np.load(mmap_mode="r")``):
        loading is instant and pages are read on first use. A later ``add`` copies them into memory.
        """
        folder = Path(path)
        meta = _read_meta(folder)
        kind = meta.get("kind")
        classes = _kinds()
        if kind not in classes:
            raise DatasetError(
                f"unknown index kind {kind!r} (known: {', '.join(classes)})", path=folder / META
            )
        target = classes[kind]
        if cls is not MultiVectorIndex and not issubclass(target, cls):
            raise DatasetError(f"holds a {kind} index, not a {cls.kind} one", path=folder / META)
        index = target._from_meta(meta, folder)
        doc_ids = _read_doc_ids(folder, meta["documents"])
        doclens = load_array(folder, DOCLENS, mmap=False, shape=(meta["documents"],), kind="i")
        doclens = doclens.astype(np.int64)
        if (doclens < 1).any() or int(doclens.sum()) != meta["tokens"]:
            raise DatasetError(
                f"document lengths must be >= 1 and sum to {meta['tokens']} tokens (meta.json)",
                path=folder / DOCLENS,
            )
        index.doc_ids = doc_ids
        index._ids = set(doc_ids)
        index.doclens = doclens
        index._offsets = np.concatenate([[0], np.cumsum(doclens)]).astype(np.int64)
        index._doc_order = tie_break_order(doc_ids)
        index._read_arrays(folder, meta, mmap)
        return index

    @classmethod
    def _from_meta(cls, meta: dict[str, Any], folder: Path) -> MultiVectorIndex:
        raise NotImplementedError

    def _read_arrays(self, folder: Path, meta: dict[str, Any], mmap: bool) -> None:
        raise NotImplementedError


def _read_meta(folder: Path) -> dict[str, Any]:
    file = folder / META
    if not folder.is_dir():
        raise DatasetError("no such index folder", path=folder)
    if not file.is_file():
        raise DatasetError("missing file: not a saved multi-vector index", path=file)
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable index metadata: {exc}", path=file) from exc
    if not isinstance(meta, dict):
        raise DatasetError("index metadata must be a JSON object", path=file)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"index format version {version!r}, this winnow reads version {FORMAT_VERSION}",
            path=file,
        )
    for field in ("dim", "documents", "tokens"):
        value = meta.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < (field == "dim"):
            raise DatasetError(f"field {field!r} must be a non-negative integer", path=file)
    return meta


def _read_doc_ids(folder: Path, count: int) -> list[str]:
    file = folder / DOC_IDS
    if not file.is_file():
        raise DatasetError("missing file", path=file)
    try:
        ids = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable document ids: {exc}", path=file) from exc
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DatasetError("must be a JSON list of strings", path=file)
    if len(ids) != count:
        raise DatasetError(f"{len(ids)} ids, meta.json says {count} documents", path=file)
    if len(set(ids)) != len(ids):
        raise DatasetError("repeated document id", path=file)
    return ids


def load_array(
    folder: Path, name: str, *, mmap: bool, shape: tuple[int | None, ...], kind: str
) -> np.ndarray:
    """``np.load`` of ``folder/name`` after checking it exists and has ``shape`` (None: any) and a
    dtype of ``kind`` ("f" float, "i" integer, "u" unsigned); :class:`DatasetError` naming it."""
    file = folder / name
    if not file.is_file():
        raise DatasetError("missing file", path=file)
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"unreadable array: {exc}", path=file) from exc
    kinds = {"i": "iu", "u": "u", "f": "f"}[kind]
    if arr.dtype.kind not in kinds:
        raise DatasetError(f"dtype {arr.dtype} is not the expected kind {kind!r}", path=file)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "x".join("*" if s is None else str(s) for s in shape)
        raise DatasetError(
            f"shape {'x'.join(map(str, arr.shape))}, expected {want} from meta.json", path=file
        )
    return arr


class ExactIndex(MultiVectorIndex):
    """Brute-force MaxSim over every document: the reference for the approximate indexes.

    Args:
        dim: token vector size.
        dtype: ``"float32"`` (default) or ``"float16"`` (half the memory and disk; scores are
            computed in float32 from the rounded vectors).
    """

    kind = "exact"
    search_knobs = ("block",)

    def __init__(self, dim: int, *, dtype: str = "float32"):
        super().__init__(dim)
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        self.dtype = dtype
        self.tokens = np.zeros((0, dim), dtype=dtype)

    def _append(self, tokens: np.ndarray, lens: np.ndarray) -> None:
        self.tokens = np.concatenate([self.tokens, tokens.astype(self.dtype)])

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "knobs": {"dtype": self.dtype}}

    def _write_arrays(self, folder: Path) -> None:
        np.save(folder / TOKENS, np.ascontiguousarray(self.tokens))

    @classmethod
    def _from_meta(cls, meta: dict[str, Any], folder: Path) -> ExactIndex:
        knobs = meta.get("knobs") or {}
        try:
            return cls(meta["dim"], dtype=knobs.get("dtype", "float32"))
        except ConfigError as exc:
            raise DatasetError(str(exc), path=folder / META) from exc

    def _read_arrays(self, folder: Path, meta: dict[str, Any], mmap: bool) -> None:
        tokens = load_array(folder, TOKENS, mmap=mmap, shape=(meta["tokens"], self.dim), kind="f")
        if tokens.dtype != np.dtype(self.dtype):
            raise DatasetError(
                f"dtype {tokens.dtype}, meta.json says {self.dtype}", folder / TOKENS
            )
        self.tokens = tokens

    def _search(self, queries: list[np.ndarray], k: int, block: int = SCORE_BLOCK) -> list[Hits]:
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ConfigError(f"block must be a positive number of scores, got {block!r}")
        out: list[Hits] = []
        # Batches of up to QUERY_ROWS query tokens (one BLAS product per block of documents).
        max_rows = QUERY_ROWS
        batch: list[np.ndarray] = []
        rows = 0
        for q in queries:
            if batch and rows + len(q) > max_rows:
                out.extend(self._search_batch(batch, k, block))
                batch, rows = [], 0
            batch.append(q)
            rows += len(q)
        out.extend(self._search_batch(batch, k, block))
        return out

    def scores(self, queries: list[np.ndarray], block: int = SCORE_BLOCK) -> np.ndarray:
        """MaxSim of each query with every document: a (queries x documents) float32 matrix."""
        q = np.concatenate(queries)
        q_lens = np.array([len(x) for x in queries], dtype=np.int64)
        n = len(self)
        scores = np.empty((len(queries), n), dtype=np.float32)
        cols = max(int(self.doclens.max()), block // len(q))
        offsets = self._offsets
        begin = 0
        while begin < n:
            # The largest run of whole documents from ``begin`` with at most ``cols`` tokens.
            end = int(np.searchsorted(offsets, offsets[begin] + cols, side="right")) - 1
            end = min(max(end, begin + 1), n)
            chunk = np.asarray(self.tokens[offsets[begin] : offsets[end]], dtype=np.float32)
            token_scores = q @ chunk.T
            scores[:, begin:end] = segment_maxsim(token_scores, q_lens, self.doclens[begin:end])
            begin = end
        return scores

    def _search_batch(self, queries: list[np.ndarray], k: int, block: int) -> list[Hits]:
        scores = self.scores(queries, block)
        return [self._hits(row, k) for row in scores]


def _kinds() -> dict[str, type[MultiVectorIndex]]:
    """Index kinds by name (the plaid module, and with it faiss, loads on first use)."""
    from winnow.retrieval._plaid import PlaidIndex

    return {"exact": ExactIndex, "plaid": PlaidIndex}


def available_kinds() -> list[str]:
    return ["exact", "plaid"]


def make_index(kind: str, dim: int, **knobs: Any) -> MultiVectorIndex:
    """An empty index of ``kind`` with build ``knobs``; unknown kinds and knobs are refused."""
    if kind not in available_kinds():
        raise ConfigError(
            f"unknown multi-vector index kind {kind!r} (valid: {', '.join(available_kinds())})"
        )
    cls = _kinds()[kind]
    import inspect

    params = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(knobs) - set(params))
    if unknown:
        raise ConfigError(
            f"unknown option(s) for a {kind} index: {', '.join(unknown)} "
            f"(valid: {', '.join(params) or 'none'})"
        )
    return cls(dim, **knobs)


def build_index(
    doc_ids: Sequence[str], vectors: Iterable[np.ndarray], *, kind: str = "plaid", **knobs: Any
) -> MultiVectorIndex:
    """An index of ``kind`` (``"plaid"`` or ``"exact"``) holding the documents.

    ``vectors`` holds one (tokens x dim) float matrix per id (a list, or any iterable: it is read
    once). ``knobs`` are the index class's keyword options (``ExactIndex(dtype=...)``,
    ``PlaidIndex(ncentroids=..., nbits=..., ...)``).
    """
    mats = list(vectors)
    if isinstance(doc_ids, str) or not isinstance(doc_ids, Sequence):
        raise InputError(f"doc_ids must be a sequence of strings, got {type(doc_ids).__name__}")
    if not doc_ids or not mats:
        raise InputError("cannot index an empty corpus")
    dim = _as_matrix(mats[0], f"document {doc_ids[0]!r} (doc_ids[0])", None).shape[1]
    index = make_index(kind, dim, **knobs)
    index.add(doc_ids, mats)
    return index


def auto_kind(num_documents: int) -> str:
    """The kind ``kind="auto"`` builds for a corpus of ``num_documents``: ``exact`` below
    :data:`AUTO_EXACT_DOCUMENTS`, else ``plaid``.

    PLAID's search cost is set by its candidate counts (``ndocs``, 4,096 by default for k <= 100,
    of which a quarter are scored in full), exact's by the whole corpus; below 4,096 documents
    the pruning keeps every candidate and exact was faster on the corpora measured
    (docs/retrieval.md: Cranfield, 1,400 long documents, and synthetic corpora of 2,000 and 5,000
    short ones).
    """
    return "exact" if num_documents < AUTO_EXACT_DOCUMENTS else "plaid"


def build_index_chunked(
    doc_ids: Sequence[str],
    chunks: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str = "plaid",
    **knobs: Any,
) -> MultiVectorIndex:
    """The index :func:`build_index` gives, built from ``chunks`` of the corpus without ever
    holding all its token vectors as float32 at once.

    Each chunk is ``(tokens, doclens)``: the token vectors of consecutive documents one after
    another (any float dtype; a memory-mapped array is read as needed) and the token count of
    each. The chunks together hold ``doc_ids`` in order. A PLAID index is trained on a sample
    drawn from all chunks exactly as ``build_index`` draws it, then each chunk is added, so the
    result equals ``build_index`` of the same (float32-converted) vectors.
    """
    if isinstance(doc_ids, str) or not isinstance(doc_ids, Sequence):
        raise InputError(f"doc_ids must be a sequence of strings, got {type(doc_ids).__name__}")
    if not doc_ids or not chunks:
        raise InputError("cannot index an empty corpus")
    lens = [np.asarray(n, dtype=np.int64) for _, n in chunks]
    if sum(len(n) for n in lens) != len(doc_ids):
        raise InputError(
            f"{len(doc_ids)} doc_ids but the chunks hold {sum(len(n) for n in lens)} documents"
        )
    for i, ((tokens, _), n) in enumerate(zip(chunks, lens)):
        if getattr(tokens, "ndim", 0) != 2 or len(tokens) != int(n.sum()) or (n < 1).any():
            raise InputError(
                f"chunk {i}: {int(n.sum())} tokens in its document lengths (each >= 1), "
                f"token matrix of shape {getattr(tokens, 'shape', None)}"
            )
    dim = int(chunks[0][0].shape[1])
    index = make_index(kind, dim, **knobs)
    if hasattr(index, "train"):
        index.train([tokens for tokens, _ in chunks])
    first = 0
    for (tokens, _), n in zip(chunks, lens):
        ends = np.cumsum(n)
        starts = ends - n
        index.add(
            list(doc_ids[first : first + len(n)]),
            [tokens[a:b] for a, b in zip(starts.tolist(), ends.tolist())],
        )
        first += len(n)
    return index


def load_index(path: str | os.PathLike, mmap: bool = True) -> MultiVectorIndex:
    """:meth:`MultiVectorIndex.load`: read a saved index of any kind."""
    return MultiVectorIndex.load(path, mmap=mmap)


def cached_index(
    cache_dir: str | os.PathLike | None,
    key_parts: Mapping[str, Any],
    build: Callable[[], MultiVectorIndex],
    *,
    mmap: bool = True,
) -> MultiVectorIndex:
    """The index keyed by ``key_parts`` from ``cache_dir``, or ``build()`` it and save it there.

    ``key_parts`` must name everything the index depends on (model identity, a hash of the corpus
    content, the index kind and knobs); its sha256 keys ``<cache_dir>/late-interaction/<key>/``,
    whose ``meta.json`` records ``key_parts`` and whose ``index/`` folder holds the index. With
    ``cache_dir=None`` this is ``build()``. An unreadable entry is logged, removed and rebuilt; a
    cache that cannot be written is logged and the built index returned.
    """
    if cache_dir is None:
        return build()
    entry = entry_dir(cache_dir, "late-interaction", key_parts)
    if is_complete(entry):
        try:
            index = load_index(entry / CACHE_SUBDIR, mmap=mmap)
        except DatasetError as exc:
            logger.warning(
                "unreadable late-interaction cache entry %s (%s); rebuilding", entry, exc
            )
            shutil.rmtree(entry, ignore_errors=True)
        else:
            logger.info("late-interaction index loaded from %s", entry)
            return index
    index = build()
    if not isinstance(index, MultiVectorIndex):
        raise InputError(f"build() must return a MultiVectorIndex, got {type(index).__name__}")
    meta = {**key_parts, "index_kind": index.kind, "documents": len(index)}
    if save_entry(entry, meta, lambda folder: _write_sub(index, folder)):
        logger.info("late-interaction index saved to %s", entry)
    return index


def _write_sub(index: MultiVectorIndex, folder: Path) -> None:
    sub = folder / CACHE_SUBDIR
    sub.mkdir()
    index._write(sub)
