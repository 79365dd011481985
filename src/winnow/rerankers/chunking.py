"""Document-then-chunk reranking: split long documents into overlapping token windows, score every
window, and aggregate window scores per document (max, first, mean, k-max average).

Useful when documents are longer than the model's window: a plain cross-encoder only sees the first
``max_length`` tokens, MaxP-style aggregation (Dai & Callan, "Deeper Text Understanding for IR with
Contextual Neural Language Modeling", SIGIR 2019) lets the best passage speak for the document.

For retrieval-augmented generation the passages themselves are what is wanted: :func:`rank_chunks`
returns the best windows across all documents as :class:`ChunkHit` (text, document index,
character span into the original text, score, title), and ``rank_chunked(..., return_chunks=True)``
gives each ranked document its best windows. Spans come from the tokenizer's offset mapping, so
``document[hit.start:hit.end] == hit.text`` exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from winnow.errors import ConfigError, InputError
from winnow.rerankers.base import (
    PairScores,
    RankedDocument,
    Reranker,
    check_documents,
    check_query,
    rank_order,
)

AGGREGATIONS = ("max", "first", "mean", "kmax")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ChunkHit:
    """One scored window of a document.

    ``text`` is ``document[start:end]``, verbatim (character offsets into the document text as the
    caller gave it); the model scored :attr:`scored_text`, which is ``text`` with the title, when
    there is one, prepended. ``chunk`` is the window's number within its document (0 = first),
    ``rank`` its rank among the hits returned with it (1 = best).
    """

    doc_index: int
    chunk: int
    start: int
    end: int
    text: str
    score: float
    rank: int = 0
    title: str = ""
    truncated: bool = False  # the model cut the window (it did not fit max_length)
    num_tokens: int = 0

    @property
    def scored_text(self) -> str:
        """The window exactly as the model scored it (title, a space, then the text)."""
        return window_text(self.text, self.title)


@dataclass(frozen=True)
class ChunkedDocument(RankedDocument):
    """A :class:`RankedDocument` with its best windows, best first (``rank_chunked(return_chunks=)``)."""

    chunks: tuple[ChunkHit, ...] = ()


def _token_offsets(text: str, tokenizer) -> list[tuple[int, int]]:
    """Character spans of the tokens of ``text`` (whitespace words when there is no tokenizer)."""
    if tokenizer is None:
        return [m.span() for m in _WORD.finditer(text)]
    if not hasattr(tokenizer, "backend_tokenizer") and hasattr(tokenizer, "post_process"):
        # a bare tokenizers.Tokenizer: the caller owns its truncation settings
        return [tuple(o) for o in tokenizer.encode(text, add_special_tokens=False).offsets]
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    return [tuple(o) for o in enc["offset_mapping"]]


def window_text(text: str, title: str = "") -> str:
    """What a window of ``text`` looks like to the model: the title, a space, then the text."""
    if not title:
        return text
    return f"{title} {text}" if text else title


def window_spans(
    text: str,
    tokenizer,
    window: int,
    stride: int,
    title: str = "",
    max_chunks: int | None = None,
) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the windows :func:`split_windows` cuts from ``text``.

    A text that fits one window is one span, ``(0, len(text))``; otherwise each span runs from the
    first character of its first token to the last character of its last token.
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window and stride must be >= 1 (got window={window}, stride={stride})")
    if stride > window:
        raise ConfigError(f"stride={stride} > window={window} would skip text between windows")
    if max_chunks is not None and max_chunks < 1:
        raise ConfigError(f"max_chunks must be >= 1, got {max_chunks}")
    room = window - (len(_token_offsets(title, tokenizer)) if title else 0)
    if room < 1:
        raise ConfigError(f"the title alone fills the window of {window} tokens")
    offsets = _token_offsets(text, tokenizer)
    if len(offsets) <= room:
        return [(0, len(text))]
    step = min(stride, room)
    n = len(offsets)
    starts = _word_starts(text, offsets)

    def word_start(i: int, floor: int, ceiling: int) -> int:
        """The word start nearest token i in (floor, ceiling]: looking back first; i if none."""
        for j in (*range(i, floor, -1), *range(i + 1, ceiling + 1)):
            if starts[j]:
                return j
        return i

    spans = []
    start = 0
    while True:
        end = min(start + room, n)
        if end < n:  # leave a word that does not fit whole to the next window
            end = word_start(end, start, end)
        spans.append((offsets[start][0], offsets[end - 1][1]))
        if end == n or (max_chunks is not None and len(spans) >= max_chunks):
            break
        # the next window starts ``step`` tokens on, at a word start, and never after this end
        start = word_start(min(start + step, end), start, end)
    return spans


def _word_starts(text: str, offsets: list[tuple[int, int]]) -> list[bool]:
    """Whether each token begins a whitespace-delimited word (the first token, or one with
    whitespace before it). Subwords ("##ows") and attached punctuation continue a word."""
    return [i == 0 or a == 0 or text[a - 1].isspace() for i, (a, _) in enumerate(offsets)]


def split_windows(
    text: str,
    tokenizer,
    window: int,
    stride: int,
    title: str = "",
    max_chunks: int | None = None,
) -> list[str]:
    """Cut ``text`` into windows of ``window`` tokens, a new one every ``stride`` tokens.

    ``stride < window`` gives overlapping windows (overlap = window - stride). The title, when given,
    is prepended to every window and its tokens count against the window. Windows are cut at
    whitespace (a word that does not fit whole moves to the next window; only a word longer than
    the window, or text without spaces, is cut inside) and returned as the original substrings,
    so no text is altered. ``tokenizer`` is a Hugging Face fast tokenizer or a
    ``tokenizers.Tokenizer``; ``None`` counts whitespace words. :func:`window_spans` gives where
    each window lies in ``text``.
    """
    spans = window_spans(text, tokenizer, window, stride, title=title, max_chunks=max_chunks)
    return [window_text(text[a:b], title) for a, b in spans]


def truncate_to_tokens(text: str, tokenizer, max_tokens: int) -> tuple[str, bool]:
    """The first ``max_tokens`` tokens of ``text`` (cut at a token end), and whether it was cut.

    Cohere's ``max_tokens_per_doc``: the text is cut before the model sees it, so the result is
    the original prefix ``text[:end]``, not a re-decoded token sequence.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    offsets = _token_offsets(text, tokenizer)
    if len(offsets) <= max_tokens:
        return text, False
    return text[: offsets[max_tokens - 1][1]], True


def chunk_hits(
    doc_index: int,
    text: str,
    spans: Sequence[tuple[int, int]],
    scored: PairScores,
    title: str = "",
) -> list[ChunkHit]:
    """One :class:`ChunkHit` per window of a document, in document order (``rank`` left 0)."""
    return [
        ChunkHit(
            doc_index=doc_index,
            chunk=c,
            start=a,
            end=b,
            text=text[a:b],
            score=float(scored.scores[c]),
            title=title,
            truncated=bool(scored.truncated[c]),
            num_tokens=int(scored.num_tokens[c]),
        )
        for c, (a, b) in enumerate(spans)
    ]


def best_chunks(hits: Sequence[ChunkHit], limit: int | None = None) -> tuple[ChunkHit, ...]:
    """``hits`` best first (ties in input order), ranked 1..n, at most ``limit`` of them."""
    order = rank_order(np.array([h.score for h in hits], dtype=np.float32))
    if limit is not None:
        order = order[:limit]
    return tuple(replace(hits[int(i)], rank=r + 1) for r, i in enumerate(order))


def aggregate_scores(scores: np.ndarray, method: str = "max", k: int = 3) -> float:
    """One document score from its window scores (in document order)."""
    if len(scores) == 0:
        raise InputError("cannot aggregate an empty list of window scores")
    if method == "max":
        return float(np.max(scores))
    if method == "first":
        return float(scores[0])
    if method == "mean":
        return float(np.mean(scores))
    if method == "kmax":
        top = np.sort(scores)[::-1][: max(1, k)]
        return float(np.mean(top))
    raise ConfigError(f"aggregate={method!r} is not one of {', '.join(AGGREGATIONS)}")


def window_tokenizer(reranker: Reranker):
    """The tokenizer whose tokens a reranker's ``max_length`` counts (None: whitespace words)."""
    reranker.load()
    tok = getattr(reranker, "tokenizer", None)
    if tok is None:
        tok = getattr(getattr(reranker, "model", None), "tokenizer", None)
    return tok


def default_window(reranker: Reranker, queries: Sequence[str], tokenizer) -> int:
    """Tokens per window that leave room for the longest query and special tokens.

    A reranker that encodes the query apart from the document (a bi-encoder) needs no room for
    the query: its windows fill the model's input (``reranker.document_window()``), so they are the
    same for every query and each distinct window is embedded once, however many queries see it.
    """
    own = reranker.document_window()
    if own is not None:
        return own
    longest_query = max((len(_token_offsets(q, tokenizer)) for q in queries), default=0)
    return max(16, reranker.max_length - longest_query - 8)


def _check_inputs(queries, docs_per_query, titles):
    queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
    docs = [check_documents(d, f"docs_per_query[{i}]") for i, d in enumerate(docs_per_query)]
    if len(queries) != len(docs):
        raise InputError(f"got {len(queries)} queries but {len(docs)} document lists")
    if titles is not None and [len(t) for t in titles] != [len(d) for d in docs]:
        raise InputError("titles must have the same shape as docs_per_query")
    return queries, docs


def _check_limit(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"{name} must be a positive integer or None, got {value!r}")


def _score_windows(
    reranker: Reranker,
    queries: list[str],
    docs: list[list[str]],
    titles: Sequence[Sequence[str]] | None,
    window: int | None,
    stride: int | None,
    max_chunks_per_doc: int | None,
) -> list[list[tuple[list[ChunkHit], bool]]]:
    """Per query, per document: its windows scored (document order) and whether some were dropped.

    Window pairs of all queries go through ``reranker.score_pairs_detailed`` in one call. The
    default window is sized for each query on its own, so a query's windows (and scores) do not
    depend on the other queries of the call; a bi-encoder's fills the model's input whatever the
    query, so every query sees the same windows of a document and each is embedded once.
    """
    tokenizer = window_tokenizer(reranker)
    pairs: list[tuple[str, str]] = []
    plans = []  # per query, per doc: (pair offset, spans, dropped, title)
    span_cache: dict[tuple, tuple[list[tuple[int, int]], bool]] = {}
    limit = max_chunks_per_doc + 1 if max_chunks_per_doc else None
    for qi, (query, qdocs) in enumerate(zip(queries, docs)):
        q_window = window or default_window(reranker, [query], tokenizer)
        q_stride = stride or max(1, (q_window * 3) // 4)
        qplans = []
        for di, doc in enumerate(qdocs):
            title = titles[qi][di] if titles is not None else ""
            key = (title, doc, q_window, q_stride)
            if key not in span_cache:
                spans = window_spans(doc, tokenizer, q_window, q_stride, title, max_chunks=limit)
                kept = spans[:max_chunks_per_doc] if max_chunks_per_doc else spans
                span_cache[key] = (kept, len(kept) < len(spans))
            spans, dropped = span_cache[key]
            qplans.append((len(pairs), spans, dropped, title))
            pairs.extend((query, window_text(doc[a:b], title)) for a, b in spans)
        plans.append(qplans)
    scored = reranker.score_pairs_detailed(pairs)
    return [
        [
            (chunk_hits(di, doc, spans, scored.take(slice(at, at + len(spans))), title), dropped)
            for di, (doc, (at, spans, dropped, title)) in enumerate(zip(qdocs, qplans))
        ]
        for qdocs, qplans in zip(docs, plans)
    ]


def rank_chunked(
    reranker: Reranker,
    queries: Sequence[str],
    docs_per_query: Sequence[Sequence[str]],
    *,
    window: int | None = None,
    stride: int | None = None,
    max_chunks_per_doc: int | None = None,
    aggregate: str = "max",
    k: int = 3,
    titles: Sequence[Sequence[str]] | None = None,
    top_k: int | None = None,
    return_documents: bool = True,
    return_chunks: bool = False,
    chunks_per_doc: int | None = None,
) -> list[list[RankedDocument]]:
    """Rank each query's documents by the aggregate score of their windows.

    Window pairs of all queries go through ``reranker.score_pairs_detailed`` in one call (so the
    engine batches them together). Defaults: ``window`` fills the model's ``max_length`` after the
    query (each query's own; for a bi-encoder, which embeds the query apart, the model's whole
    input), ``stride`` is three quarters of the window (25% overlap). A result is marked
    ``truncated`` when a window was cut by the model or ``max_chunks_per_doc`` dropped part of the
    document; ``num_tokens`` is the most tokens the model scored for any one window of it.

    With ``return_chunks`` the results are :class:`ChunkedDocument` carrying their best
    ``chunks_per_doc`` windows (all scored windows when None) as :class:`ChunkHit`, best first.
    """
    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"aggregate={aggregate!r} is not one of {', '.join(AGGREGATIONS)}")
    _check_limit("chunks_per_doc", chunks_per_doc)
    queries, docs = _check_inputs(queries, docs_per_query, titles)
    if not any(docs):
        return [[] for _ in queries]
    windows = _score_windows(reranker, queries, docs, titles, window, stride, max_chunks_per_doc)
    results = []
    for qdocs, qwindows in zip(docs, windows):
        agg = np.array(
            [
                aggregate_scores(np.array([h.score for h in hits], dtype=np.float32), aggregate, k)
                for hits, _ in qwindows
            ],
            dtype=np.float32,
        )
        order = rank_order(agg)
        if top_k is not None:
            order = order[:top_k]
        ranked = []
        for r, i in enumerate(order):
            hits, dropped = qwindows[i]
            fields = dict(
                index=int(i),
                score=float(agg[i]),
                rank=r + 1,
                document=qdocs[i] if return_documents else None,
                truncated=bool(dropped or any(h.truncated for h in hits)),
                num_tokens=max(h.num_tokens for h in hits),
            )
            if return_chunks:
                ranked.append(ChunkedDocument(**fields, chunks=best_chunks(hits, chunks_per_doc)))
            else:
                ranked.append(RankedDocument(**fields))
        results.append(ranked)
    return results


def rank_chunks(
    reranker: Reranker,
    queries: Sequence[str],
    docs_per_query: Sequence[Sequence[str]],
    *,
    window: int | None = None,
    stride: int | None = None,
    max_chunks_per_doc: int | None = None,
    titles: Sequence[Sequence[str]] | None = None,
    top_k: int | None = None,
    chunks_per_doc: int | None = None,
) -> list[list[ChunkHit]]:
    """The best windows of each query's documents, across documents, best first (for RAG).

    Documents are cut as in :func:`rank_chunked`; ``top_k`` keeps the best windows of a query,
    ``chunks_per_doc`` at most that many of any one document. Ties keep document then window order.
    """
    _check_limit("top_k", top_k)
    _check_limit("chunks_per_doc", chunks_per_doc)
    queries, docs = _check_inputs(queries, docs_per_query, titles)
    if not any(docs):
        return [[] for _ in queries]
    windows = _score_windows(reranker, queries, docs, titles, window, stride, max_chunks_per_doc)
    out = []
    for qwindows in windows:
        hits = [h for doc_hits, _ in qwindows for h in best_chunks(doc_hits, chunks_per_doc)]
        # best_chunks re-orders within a document; put them back in document order for the ties
        hits.sort(key=lambda h: (h.doc_index, h.chunk))
        out.append(list(best_chunks(hits, top_k)))
    return out
