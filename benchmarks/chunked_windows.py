"""How many texts ``bm25+chunked`` makes the default bi-encoder embed, before and after the fix.

``bm25+chunked`` re-scores each query's BM25 top ``depth`` by the best of its documents' windows.
Until this benchmark's change, the default window was the model's ``max_length`` less the query's
tokens and 8, for every reranker kind: right for a cross-encoder (query and window share one input),
wasteful for a bi-encoder, which embeds the query apart. Queries of different lengths then cut the
same long document into different windows, and the bi-encoder embedded every one of them. Now a
bi-encoder's windows fill its whole input (``document_window()``), the same for every query.

This counts, with the tokenizer only (no model run), the distinct texts each rule sends to the model
(a text is embedded once per run: the embedding memo), and how many of them plain dense retrieval
has already embedded (the full texts of documents that fit one window). Embedding time is about
proportional to the count.

    WINNOW_DATA=../shared/datasets python benchmarks/chunked_windows.py [--dataset cranfield] [--queries N] [--depth 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    import winnow
    from winnow.data import load_dataset
    from winnow.errors import ConfigError
    from winnow.rerankers.chunking import (
        _token_offsets,
        window_spans,
        window_text,
        window_tokenizer,
    )
    from winnow.retrieval import BM25Index

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="cranfield")
    ap.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA"))
    ap.add_argument("--queries", type=int, default=None, help="first N judged queries (all)")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    qids = [q for q in ds.queries if q in ds.qrels]
    qids = qids[: args.queries] if args.queries else qids
    queries = {q: ds.queries[q] for q in qids}
    run = BM25Index().index(ds.corpus).search(queries, top_k=args.depth)
    bi = winnow.load_reranker(
        "sentence-transformers/all-MiniLM-L6-v2", kind="bi-encoder", device="cpu"
    )
    tokenizer = window_tokenizer(bi)
    whole = bi.document_window()

    def texts(window_for) -> set[str]:
        out: set[str] = set()
        for q in qids:
            window = window_for(queries[q])
            for d in run[q]:
                doc = ds.corpus[d]
                spans = window_spans(
                    doc.text, tokenizer, window, max(1, window * 3 // 4), doc.title
                )
                out.update(window_text(doc.text[a:b], doc.title) for a, b in spans)
        return out

    # the old rule, as chunking.default_window had it for every kind
    try:
        before = texts(lambda q: max(16, bi.max_length - len(_token_offsets(q, tokenizer)) - 8))
        before_error = None
    except ConfigError as exc:  # a long query left less room than a title needs
        before, before_error = set(), str(exc)
    after = texts(lambda q: whole)
    full = {d.full_text for d in ds.corpus.values()}
    result = {
        "dataset": args.dataset,
        "queries": len(qids),
        "pairs": sum(len(run[q]) for q in qids),
        "window_after": whole,
        "distinct_query_windows_before": len(
            {max(16, bi.max_length - len(_token_offsets(queries[q], tokenizer)) - 8) for q in qids}
        ),
        "before_failed": before_error,
        "texts_before": len(before),
        "texts_before_not_full_texts": len(before - full),
        "texts_after": len(after),
        "texts_after_not_full_texts": len(after - full),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:30} {v}")


if __name__ == "__main__":
    main()
