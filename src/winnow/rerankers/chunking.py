"""Document-then-chunk reranking: split long documents into overlapping token windows, score every
window, and aggregate window scores per document (max, first, mean, k-max average).

Useful when documents are longer than the model's window: a plain cross-encoder only sees the first
``max_length`` tokens, MaxP-style aggregation (Dai & Callan, "Deeper Text Understanding for IR with
Contextual Neural Language Modeling", SIGIR 2019) lets the best passage speak for the document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from winnow.errors import ConfigError, InputError
from winnow.rerankers.base import (
    RankedDocument,
    Reranker,
    check_documents,
    check_query,
    rank_order,
)

AGGREGATIONS = ("max", "first", "mean", "kmax")
_WORD = re.compile(r"\S+")


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
    is prepended to every window and its tokens count against the window. Windows are cut at token
    boundaries and returned as the original substrings, so no text is altered. ``tokenizer`` is a
    Hugging Face fast tokenizer or a ``tokenizers.Tokenizer``; ``None`` counts whitespace words.
    """
    if window < 1 or stride < 1:
        raise ConfigError(f"window and stride must be >= 1 (got window={window}, stride={stride})")
    if stride > window:
        raise ConfigError(f"stride={stride} > window={window} would skip text between windows")
    if max_chunks is not None and max_chunks < 1:
        raise ConfigError(f"max_chunks must be >= 1, got {max_chunks}")
    prefix = f"{title} " if title else ""
    room = window - (len(_token_offsets(title, tokenizer)) if title else 0)
    if room < 1:
        raise ConfigError(f"the title alone fills the window of {window} tokens")
    offsets = _token_offsets(text, tokenizer)
    if len(offsets) <= room:
        return [prefix + text if text else title]
    step = min(stride, room)
    chunks = []
    for start in range(0, len(offsets), step):
        end = min(start + room, len(offsets))
        chunks.append(prefix + text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets) or (max_chunks is not None and len(chunks) >= max_chunks):
            break
    return chunks


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
    """Tokens per window that leave room for the longest query and special tokens."""
    longest_query = max((len(_token_offsets(q, tokenizer)) for q in queries), default=0)
    return max(16, reranker.max_length - longest_query - 8)


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
) -> list[list[RankedDocument]]:
    """Rank each query's documents by the aggregate score of their windows.

    Window pairs of all queries go through ``reranker.score_pairs_detailed`` in one call (so the
    engine batches them together). Defaults: ``window`` fills the model's ``max_length`` after the
    longest query, ``stride`` is three quarters of the window (25% overlap). A result is marked
    ``truncated`` when a window was cut by the model or ``max_chunks_per_doc`` dropped part of the
    document; ``num_tokens`` is the most tokens the model scored for any one window of it.
    """
    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"aggregate={aggregate!r} is not one of {', '.join(AGGREGATIONS)}")
    queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
    docs = [check_documents(d, f"docs_per_query[{i}]") for i, d in enumerate(docs_per_query)]
    if len(queries) != len(docs):
        raise InputError(f"got {len(queries)} queries but {len(docs)} document lists")
    if titles is not None and [len(t) for t in titles] != [len(d) for d in docs]:
        raise InputError("titles must have the same shape as docs_per_query")
    if not any(docs):
        return [[] for _ in queries]
    tokenizer = window_tokenizer(reranker)
    window = window or default_window(reranker, queries, tokenizer)
    stride = stride or max(1, (window * 3) // 4)

    pairs: list[tuple[str, str]] = []
    spans: list[list[tuple[int, int, bool]]] = []  # per query, per doc: (start, stop, dropped)
    chunk_cache: dict[tuple[str, str], tuple[list[str], bool]] = {}
    for qi, (query, qdocs) in enumerate(zip(queries, docs)):
        qspans = []
        for di, doc in enumerate(qdocs):
            title = titles[qi][di] if titles is not None else ""
            key = (title, doc)
            if key not in chunk_cache:
                all_chunks = split_windows(doc, tokenizer, window, stride, title=title)
                kept = all_chunks[:max_chunks_per_doc] if max_chunks_per_doc else all_chunks
                chunk_cache[key] = (kept, len(kept) < len(all_chunks))
            chunks, dropped = chunk_cache[key]
            qspans.append((len(pairs), len(pairs) + len(chunks), dropped))
            pairs.extend((query, c) for c in chunks)
        spans.append(qspans)

    scored = reranker.score_pairs_detailed(pairs)
    results = []
    for qdocs, qspans in zip(docs, spans):
        agg = np.array(
            [aggregate_scores(scored.scores[a:b], aggregate, k) for a, b, _ in qspans],
            dtype=np.float32,
        )
        order = rank_order(agg)
        if top_k is not None:
            order = order[:top_k]
        results.append(
            [
                RankedDocument(
                    index=int(i),
                    score=float(agg[i]),
                    rank=r + 1,
                    document=qdocs[i] if return_documents else None,
                    truncated=bool(
                        qspans[i][2] or scored.truncated[qspans[i][0] : qspans[i][1]].any()
                    ),
                    num_tokens=int(scored.num_tokens[qspans[i][0] : qspans[i][1]].max()),
                )
                for r, i in enumerate(order)
            ]
        )
    return results
