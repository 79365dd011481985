"""PLAID: a compressed multi-vector index searched by centroid interaction.

The recipe of Santhanam et al., 2022, "PLAID: An Efficient Engine for Late Interaction Retrieval"
(and ColBERTv2's residual compression before it):

* Training (on the first ``add``): k-means (``faiss.Kmeans``, spherical) over a sample of the
  token vectors; ``ncentroids`` defaults to the power of two at or below ``4 * sqrt(tokens)``
  (ColBERT's rule has 16; see ``centroid_factor``).
* Storage: each token is its nearest centroid's id (``faiss.IndexFlatIP``) plus its residual
  (token - centroid) quantised by a faiss scalar quantiser trained on the sample's residuals,
  ``nbits`` (8, the default, or 4) per dimension with per-dimension ranges (``QT_8bit`` /
  ``QT_4bit``). The
  inverted lists map each centroid to the documents that have a token assigned to it.
* Search, per query: (1) the ``nprobe`` centroids closest to each query token give the candidate
  documents; (2) centroid interaction with pruning: MaxSim computed from the query-centroid scores
  alone, counting a token whose centroid scores below ``centroid_score_threshold`` for every query
  token as 0, keeps the best ``ndocs``; (3) the same without pruning keeps ``ndocs // 4`` (at least
  k); (4) those documents are scored with MaxSim over their stored vectors (centroid + residual,
  re-normalised), computed from the residual buckets without decompressing them (see
  ``_score_candidates``); the best k are returned with those scores.

faiss provides the k-means, the nearest-centroid search and the quantiser; the candidate
generation, centroid interaction, inverted lists and bucket scoring (steps 1-4 and the layout) are
PLAID's own (ColBERT's C++ and CUDA kernels) and no library that runs on this project's pins
implements them (fast-plaid and PyLate do not), so they are written here with numpy.

Documents added later are assigned to the existing centroids and coded with the existing
quantiser (no retraining), so adding in batches gives the same index as adding at once with the
same centroids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from winnow.errors import ConfigError, DatasetError, InputError, require
from winnow.retrieval.late_interaction import (
    META,
    Hits,
    MultiVectorIndex,
    load_array,
    top_hits,
)

CENTROIDS = "centroids.npy"
CODES = "codes.npy"
RESIDUALS = "residuals.npy"
CODEC = "codec.faiss"
IVF = "ivf.npy"
IVF_LENGTHS = "ivf_lengths.npy"
#: Optional: the norm of each token's centroid + residual (computed on first search if absent).
NORMS = "norms.npy"
#: Tokens assigned to centroids / coded per faiss call (bounds the temporary arrays).
ASSIGN_BLOCK = 1 << 16
#: Largest query-token x candidate-token block scored at once in centroid interaction.
GATHER_BLOCK = 1 << 24
#: Candidate tokens scored at once in the final MaxSim (bounds the temporary arrays: a block of
#: 16,384 384-d tokens is 24 MiB of float32; one query's whole candidate set could be 300 MiB).
SCORE_BLOCK_TOKENS = 1 << 14
_QTYPES = {4: "QT_4bit", 8: "QT_8bit"}


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Start offset of each of the consecutive segments of ``lengths``."""
    return np.concatenate([[0], np.cumsum(lengths[:-1])]).astype(np.int64)


def default_ncentroids(num_tokens: int, factor: float = 4.0) -> int:
    """The power of two at or below ``factor * sqrt(tokens)`` (ColBERT uses factor 16)."""
    return 2 ** max(0, math.floor(math.log2(factor * math.sqrt(max(num_tokens, 1)))))


def colbert_search_defaults(k: int) -> dict[str, Any]:
    """Search settings for a given k: ColBERT's (``colbert/searcher.py``), except that k <= 100
    takes ColBERT's k > 100 row (nprobe 4, ndocs 4096): with ColBERT's (2, 1024) PLAID found 87% of
    exact's top 100 on the 100k-document benchmark, with these 98.6% (docs/retrieval.md)."""
    if k <= 10:
        return {"nprobe": 1, "centroid_score_threshold": 0.5, "ndocs": 256}
    return {"nprobe": 4, "centroid_score_threshold": 0.4, "ndocs": max(k * 4, 4096)}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class PlaidIndex(MultiVectorIndex):
    """PLAID multi-vector index (see the module docstring).

    Build options:
        ncentroids: k-means centroids (default: the power of two at or below
            ``centroid_factor * sqrt(tokens)`` of the first batch, at most its token count).
        centroid_factor: 4 by default; ColBERT's rule is 16, which makes k-means and the
            assignment four times slower on a CPU and, with short queries, finds fewer candidates
            (docs/retrieval.md has the measurements).
        nbits: bits per dimension of the residual codes, 8 (default) or 4 (half the size; on the
            100k-document benchmark the top 10 then agreed with exact's 95.5% against 99.3%).
        kmeans_niters: k-means iterations (ColBERT's default, 4).
        points_per_centroid: training sample size per centroid (tokens drawn at random).
        seed: seed of the sample and of k-means.

    Search options (``None``: ColBERT's defaults for the given k, see
    :func:`colbert_search_defaults`): ``nprobe`` centroids per query token, ``ndocs`` documents
    kept by pruned centroid interaction, ``centroid_score_threshold`` for the pruning. Defaults
    given here are stored and used by every ``search`` that does not pass its own.
    """

    kind = "plaid"
    search_knobs = ("nprobe", "ndocs", "centroid_score_threshold")

    def __init__(
        self,
        dim: int,
        *,
        ncentroids: int | None = None,
        centroid_factor: float = 4.0,
        nbits: int = 8,
        kmeans_niters: int = 4,
        points_per_centroid: int = 32,
        seed: int = 0,
        nprobe: int | None = None,
        ndocs: int | None = None,
        centroid_score_threshold: float | None = None,
    ):
        super().__init__(dim)
        if ncentroids is not None:
            _positive_int("ncentroids", ncentroids)
        if (
            isinstance(centroid_factor, bool)
            or not isinstance(centroid_factor, (int, float))
            or not centroid_factor > 0
        ):
            raise ConfigError(f"centroid_factor must be a positive number, got {centroid_factor!r}")
        if nbits not in _QTYPES:
            raise ConfigError(f"nbits must be one of {sorted(_QTYPES)}, got {nbits!r}")
        _positive_int("kmeans_niters", kmeans_niters)
        _positive_int("points_per_centroid", points_per_centroid)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.ncentroids = ncentroids
        self.centroid_factor = float(centroid_factor)
        self.nbits = nbits
        self.kmeans_niters = kmeans_niters
        self.points_per_centroid = points_per_centroid
        self.seed = seed
        self.defaults = self._check_search_knobs(
            {"nprobe": nprobe, "ndocs": ndocs, "centroid_score_threshold": centroid_score_threshold}
        )
        self.centroids: np.ndarray | None = None
        self._codec = None  # faiss.IndexScalarQuantizer over residuals
        self.codes = np.zeros(0, dtype=np.int32)
        self.residuals = np.zeros((0, 0), dtype=np.uint8)
        self.ivf = np.zeros(0, dtype=np.int32)
        self.ivf_offsets = np.zeros(1, dtype=np.int64)
        self._norms: np.ndarray | None = None  # per-token norm of centroid + residual, lazily
        self._padded: np.ndarray | bool | None = None  # see _doc_codes
        self._affine: tuple[np.ndarray, np.ndarray] | bool | None = None  # see _residual_affine

    @staticmethod
    def _check_search_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
        for name in ("nprobe", "ndocs"):
            if knobs.get(name) is not None:
                _positive_int(name, knobs[name])
        t = knobs.get("centroid_score_threshold")
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
        ):
            raise ConfigError(f"centroid_score_threshold must be a finite number, got {t!r}")
        return dict(knobs)

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    # -- training and coding ----------------------------------------------------------------

    def train(self, tokens: np.ndarray | Sequence[np.ndarray]) -> None:
        """Fit the centroids and the residual quantiser on (a sample of) ``tokens``: one
        (tokens x dim) float matrix, or a sequence of them (chunks of the corpus, in order; the
        sample is the one the concatenated matrix would give, without concatenating it)."""
        faiss = require("faiss", "faiss")
        parts = [tokens] if isinstance(tokens, np.ndarray) else list(tokens)
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        n = int(sizes.sum())
        if n == 0:
            raise InputError("cannot train a plaid index on zero tokens")
        k = min(self.ncentroids or default_ncentroids(n, self.centroid_factor), n)
        rng = np.random.default_rng(self.seed)
        size = min(n, k * self.points_per_centroid)
        picks = np.arange(n) if size == n else np.sort(rng.choice(n, size, replace=False))
        # the picks that fall in each part, as positions within it
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        cuts = np.searchsorted(picks, bounds)
        sample = np.concatenate(
            [
                np.asarray(part[picks[a:b] - start], dtype=np.float32)
                for part, start, a, b in zip(parts, bounds[:-1], cuts[:-1], cuts[1:])
                if b > a
            ]
        )
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        kmeans = faiss.Kmeans(
            self.dim,
            k,
            niter=self.kmeans_niters,
            seed=self.seed,
            spherical=True,
            max_points_per_centroid=self.points_per_centroid,
            min_points_per_centroid=1,
            verbose=False,
        )
        kmeans.train(sample)
        centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        self.centroids = centroids
        codes = self._assign(sample)
        qtype = getattr(faiss.ScalarQuantizer, _QTYPES[self.nbits])
        codec = faiss.IndexScalarQuantizer(self.dim, qtype, faiss.METRIC_INNER_PRODUCT)
        codec.train(sample - centroids[codes])
        self._codec = codec
        self._affine = None

    def _assign(self, tokens: np.ndarray) -> np.ndarray:
        faiss = require("faiss", "faiss")
        flat = faiss.IndexFlatIP(self.dim)
        flat.add(self.centroids)
        out = np.empty(len(tokens), dtype=np.int32)
        for begin in range(0, len(tokens), ASSIGN_BLOCK):
            block = np.ascontiguousarray(tokens[begin : begin + ASSIGN_BLOCK], dtype=np.float32)
            _, idx = flat.search(block, 1)
            out[begin : begin + len(block)] = idx[:, 0]
        return out

    def _append(self, tokens: np.ndarray, lens: np.ndarray) -> None:
        if not self.is_trained:
            self.train(tokens)
        codes = self._assign(tokens)
        residuals = np.empty((len(tokens), self._codec.sa_code_size()), dtype=np.uint8)
        for begin in range(0, len(tokens), ASSIGN_BLOCK):
            end = min(begin + ASSIGN_BLOCK, len(tokens))
            res = tokens[begin:end] - self.centroids[codes[begin:end]]
            residuals[begin:end] = self._codec.sa_encode(np.ascontiguousarray(res))
        first_doc = len(self.doc_ids)  # the base class appends the ids after this returns
        self._norms = self._padded = None
        self.codes = np.concatenate([self.codes, codes])
        self.residuals = (
            residuals if not len(self.residuals) else np.concatenate([self.residuals, residuals])
        )
        self._build_ivf(first_doc + len(lens), np.concatenate([self.doclens, lens]))

    def _build_ivf(self, n_docs: int, doclens: np.ndarray) -> None:
        """Inverted lists: for each centroid, the sorted distinct documents with a token in it."""
        doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int64), doclens)
        pairs = np.unique(self.codes.astype(np.int64) * n_docs + doc_of_token)
        self.ivf = (pairs % n_docs).astype(np.int32)
        lengths = np.bincount(pairs // n_docs, minlength=len(self.centroids))
        self.ivf_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def decompress(self, token_positions: np.ndarray) -> np.ndarray:
        """The stored (approximate) vectors of the given tokens: centroid + residual, normalised."""
        vecs = self._raw_vectors(token_positions)
        norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs))
        vecs /= np.maximum(norms, 1e-12)[:, None]
        return vecs

    def _raw_vectors(self, token_positions: np.ndarray) -> np.ndarray:
        """Centroid + decoded residual of the given tokens (not normalised)."""
        codes = np.asarray(self.codes[token_positions])
        res = np.ascontiguousarray(self.residuals[token_positions])
        vecs = self._codec.sa_decode(res)
        vecs += self.centroids[codes]
        return vecs

    def _residual_affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(offset, step)`` per dimension when the quantiser decodes bucket ``b`` of dimension
        ``d`` to ``offset[d] + b * step[d]`` (faiss's uniform scalar quantisers do), else None.

        Read off the quantiser by decoding every bucket value (PLAID's lookup table of bucket
        weights) and checked against that table, so nothing depends on faiss's internals.
        """
        if self._affine is None:
            levels = 1 << self.nbits
            size = self._codec.sa_code_size()
            per_byte = 8 // self.nbits
            # row b: every dimension in bucket b (4 bits: both nibbles of each byte)
            byte = np.arange(levels, dtype=np.int64) * (1 if per_byte == 1 else 0x11)
            table = self._codec.sa_decode(np.repeat(byte.astype(np.uint8)[:, None], size, 1))
            table = table.astype(np.float64)
            offset, step = table[0], (table[-1] - table[0]) / (levels - 1)
            predicted = offset + np.arange(levels)[:, None] * step
            # affine to within a thousandth of a bucket (float32 rounding of faiss's decoder)
            ok = bool((np.abs(table - predicted) <= 1e-3 * np.abs(step) + 1e-9).all())
            self._affine = (offset.astype(np.float32), step.astype(np.float32)) if ok else False
        return self._affine or None

    def _buckets(self, token_positions: np.ndarray) -> np.ndarray:
        """The residual bucket numbers of the given tokens as a (tokens x dim) float32 matrix."""
        res = np.asarray(self.residuals[token_positions])
        if self.nbits == 8:
            return res.astype(np.float32)
        out = np.empty((len(res), 2 * res.shape[1]), dtype=np.float32)
        out[:, 0::2] = res & 0x0F  # faiss packs dimension 2i in the low nibble
        out[:, 1::2] = res >> 4
        return out[:, : self.dim]

    def token_norms(self) -> np.ndarray:
        """The norm of every stored token's centroid + residual (computed once, block by block)."""
        if self._norms is None or len(self._norms) != self.num_tokens:
            norms = np.empty(self.num_tokens, dtype=np.float32)
            for begin in range(0, self.num_tokens, ASSIGN_BLOCK):
                end = min(begin + ASSIGN_BLOCK, self.num_tokens)
                vecs = self._codec.sa_decode(np.ascontiguousarray(self.residuals[begin:end]))
                vecs += self.centroids[np.asarray(self.codes[begin:end])]
                norms[begin:end] = np.sqrt(np.einsum("ij,ij->i", vecs, vecs))
            self._norms = np.maximum(norms, 1e-12)
        return self._norms

    def _score_candidates(self, q: np.ndarray, table: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """MaxSim of query ``q`` with the stored vectors of ``docs`` (sorted document numbers).

        The stored vector of a token is (centroid + residual) / norm. With an affine quantiser
        (offset + bucket * step) the query's dot product with it is
        ``(q . centroid + q . offset + (q * step) . buckets) / norm``: the first term is a row of
        ``table`` (centroids x query tokens, already computed for the candidate search), the
        norms are computed once per index, so only the buckets are converted to float and
        multiplied; nothing else is decompressed. Documents are scored in blocks of about
        ``SCORE_BLOCK_TOKENS`` tokens so the temporary arrays stay small.
        """
        lens = self.doclens[docs]
        ends = np.cumsum(lens)
        out = np.empty(len(docs), dtype=np.float32)
        affine = self._residual_affine()
        if affine is not None:
            norms = self.token_norms()
            offset, step = affine
            q_step = np.ascontiguousarray((q * step).T)  # dim x query tokens
            q_offset = q @ offset
        begin = 0
        while begin < len(docs):
            done = ends[begin - 1] if begin else 0
            end = int(np.searchsorted(ends, done + SCORE_BLOCK_TOKENS, side="right"))
            end = min(max(end, begin + 1), len(docs))
            pos = self._token_positions(docs[begin:end])
            if affine is None:
                scores = self.decompress(pos) @ q.T  # doc tokens x query tokens
            else:
                scores = self._buckets(pos) @ q_step
                scores += table[np.asarray(self.codes[pos])]
                scores += q_offset
                scores /= norms[pos][:, None]
            per_doc = np.maximum.reduceat(scores, _starts(lens[begin:end]), axis=0)
            out[begin:end] = per_doc.sum(axis=1)
            begin = end
        return out

    def _token_positions(self, docs: np.ndarray) -> np.ndarray:
        """Positions in the token arrays of all tokens of ``docs``, document after document."""
        lens = self.doclens[docs]
        starts = self._offsets[docs]
        seg = np.repeat(starts - (np.cumsum(lens) - lens), lens)
        return np.arange(int(lens.sum()), dtype=np.int64) + seg

    def _doc_codes(self) -> np.ndarray | None:
        """Each document's distinct centroid ids as a (documents x widest) int32 matrix padded
        with ``ncentroids`` (built once per index), or None when the padding would make it more
        than 4 times the size of the distinct (document, centroid) pairs."""
        if self._padded is None:
            n_docs, n_c = len(self.doclens), len(self.centroids)
            doc = np.repeat(np.arange(n_docs, dtype=np.int64), self.doclens)
            pairs = np.unique(doc * n_c + np.asarray(self.codes, dtype=np.int64))
            owner = pairs // n_c
            counts = np.bincount(owner, minlength=n_docs)
            width = int(counts.max())
            if n_docs * width > 4 * len(pairs) + 4096:
                self._padded = False
            else:
                padded = np.full((n_docs, width), n_c, dtype=np.int32)
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
                padded[owner, np.arange(len(pairs)) - np.repeat(starts, counts)] = pairs % n_c
                self._padded = padded
        return self._padded if self._padded is not False else None

    def _centroid_maxsim(self, table: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """Approximate MaxSim of ``docs`` from ``table``, the (centroids x query tokens) scores.

        Each document's distinct centroid ids are laid out in a (documents x widest) matrix
        (:meth:`_doc_codes`, or per call from the token codes when that would be too large),
        padded with an extra centroid that scores -inf; its rows of the table are gathered (one
        short contiguous copy per centroid), the maximum taken over the document's tokens and
        the sum over query tokens (``np.maximum.reduceat`` is several times slower).
        """
        n_c, lq = table.shape
        ext = np.vstack([table, np.full((1, lq), -np.inf, dtype=table.dtype)])
        out = np.empty(len(docs), dtype=np.float32)
        padded = self._doc_codes()
        if padded is not None:
            per_block = max(1, GATHER_BLOCK // (lq * padded.shape[1]))
            for begin in range(0, len(docs), per_block):
                part = docs[begin : begin + per_block]
                out[begin : begin + len(part)] = ext[padded[part]].max(axis=1).sum(axis=1)
            return out
        lens_all = self.doclens[docs]
        longest = int(lens_all.max())
        steps = np.arange(longest)
        last = self.num_tokens - 1
        per_block = max(1, GATHER_BLOCK // (lq * longest))
        for begin in range(0, len(docs), per_block):
            part = docs[begin : begin + per_block]
            lens = lens_all[begin : begin + per_block]
            pos = np.minimum(self._offsets[part][:, None] + steps, last)
            codes = np.where(steps < lens[:, None], self.codes[pos], n_c)
            out[begin : begin + len(part)] = ext[codes].max(axis=1).sum(axis=1)
        return out

    def _search(self, queries: list[np.ndarray], k: int, **knobs: Any) -> list[Hits]:
        knobs = self._check_search_knobs(knobs)
        auto = colbert_search_defaults(k)
        settings = {
            name: next(
                v for v in (knobs.get(name), self.defaults.get(name), auto[name]) if v is not None
            )
            for name in self.search_knobs
        }
        # One thread per query: its products are small, and multi-threaded BLAS / OpenMP on
        # small products is slower than one thread (and far slower on a busy machine).
        threadpoolctl = require("threadpoolctl", "faiss")

        with threadpoolctl.threadpool_limits(limits=1):
            return [self._search_one(q, k, **settings) for q in queries]

    def _search_one(
        self, q: np.ndarray, k: int, *, nprobe: int, ndocs: int, centroid_score_threshold: float
    ) -> Hits:
        scores = q @ self.centroids.T  # query tokens x centroids
        n_c = scores.shape[1]
        # (1) candidates: documents in the nprobe nearest centroids of any query token
        probe = min(nprobe, n_c)
        cells = np.unique(np.argpartition(-scores, probe - 1, axis=1)[:, :probe])
        starts, ends = self.ivf_offsets[cells], self.ivf_offsets[cells + 1]
        cand = np.unique(np.concatenate([self.ivf[s:e] for s, e in zip(starts, ends)]))
        if not len(cand):
            return []
        # (2) centroid interaction with pruning, (3) without, on the survivors
        table = np.ascontiguousarray(scores.T)  # centroids x query tokens
        pruned = table.copy()
        pruned[table.max(axis=1) < centroid_score_threshold] = 0.0
        approx = self._centroid_maxsim(pruned, cand)
        cand = cand[top_hits(approx, ndocs, self._doc_order, cand)]
        approx = self._centroid_maxsim(table, cand)
        cand = cand[top_hits(approx, max(ndocs // 4, k), self._doc_order, cand)]
        # (4) decompress the survivors and score them with MaxSim
        cand = np.sort(cand)
        return self._hits(self._score_candidates(q, table, cand), k, cand)

    # -- saving and loading -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "knobs": {
                "ncentroids": len(self.centroids),
                "centroid_factor": self.centroid_factor,
                "nbits": self.nbits,
                "kmeans_niters": self.kmeans_niters,
                "points_per_centroid": self.points_per_centroid,
                "seed": self.seed,
                **self.defaults,
            },
            "codec": {
                "residuals": f"faiss ScalarQuantizer {_QTYPES[self.nbits]} (per-dimension range)",
                "code_bytes_per_token": int(self._codec.sa_code_size()),
                "file": CODEC,
            },
        }

    def _write_arrays(self, folder: Path) -> None:
        faiss = require("faiss", "faiss")
        np.save(folder / CENTROIDS, self.centroids)
        np.save(folder / CODES, np.ascontiguousarray(self.codes))
        np.save(folder / RESIDUALS, np.ascontiguousarray(self.residuals))
        np.save(folder / IVF, self.ivf)
        np.save(folder / IVF_LENGTHS, np.diff(self.ivf_offsets))
        np.save(folder / NORMS, self.token_norms())
        faiss.serialize_index(self._codec).tofile(folder / CODEC)

    @classmethod
    def _from_meta(cls, meta: dict[str, Any], folder: Path) -> PlaidIndex:
        knobs = dict(meta.get("knobs") or {})
        try:
            return cls(meta["dim"], **knobs)
        except (ConfigError, TypeError) as exc:
            raise DatasetError(f"invalid knobs: {exc}", path=folder / META) from exc

    def _read_arrays(self, folder: Path, meta: dict[str, Any], mmap: bool) -> None:
        faiss = require("faiss", "faiss")
        n_tok, dim = meta["tokens"], self.dim
        c = self.ncentroids
        self.centroids = np.ascontiguousarray(
            load_array(folder, CENTROIDS, mmap=False, shape=(c, dim), kind="f"), dtype=np.float32
        )
        file = folder / CODEC
        if not file.is_file():
            raise DatasetError("missing file", path=file)
        try:
            codec = faiss.deserialize_index(np.fromfile(file, dtype=np.uint8))
        except RuntimeError as exc:
            raise DatasetError(f"unreadable faiss quantiser: {exc}", path=file) from exc
        if codec.d != dim:
            raise DatasetError(f"quantiser of dim {codec.d}, meta.json says {dim}", path=file)
        self._codec = codec
        self._affine = None
        self.codes = load_array(folder, CODES, mmap=mmap, shape=(n_tok,), kind="i")
        self.residuals = load_array(
            folder, RESIDUALS, mmap=mmap, shape=(n_tok, codec.sa_code_size()), kind="u"
        )
        lengths = load_array(folder, IVF_LENGTHS, mmap=False, shape=(c,), kind="i")
        self.ivf_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.ivf = load_array(
            folder, IVF, mmap=False, shape=(int(self.ivf_offsets[-1]),), kind="i"
        ).astype(np.int32)
        self._norms = None
        if (folder / NORMS).is_file():  # absent from indexes saved before it: computed on use
            self._norms = load_array(folder, NORMS, mmap=False, shape=(n_tok,), kind="f")
        if len(self.ivf) and int(self.ivf.max()) >= meta["documents"]:
            raise DatasetError("document number beyond the document count", path=folder / IVF)
        if n_tok and int(np.max(self.codes)) >= c:
            raise DatasetError("centroid id beyond the centroid count", path=folder / CODES)

    def empty_copy(self) -> PlaidIndex:
        """A new empty index with the same centroids, quantiser and knobs (no retraining on add)."""
        if not self.is_trained:
            raise InputError("empty_copy of an index that is not trained yet (add documents first)")
        out = PlaidIndex(
            self.dim,
            ncentroids=len(self.centroids),
            centroid_factor=self.centroid_factor,
            nbits=self.nbits,
            kmeans_niters=self.kmeans_niters,
            points_per_centroid=self.points_per_centroid,
            seed=self.seed,
            **self.defaults,
        )
        out.centroids = self.centroids.copy()
        out._codec = self._codec
        out.residuals = np.zeros((0, self._codec.sa_code_size()), dtype=np.uint8)
        return out
