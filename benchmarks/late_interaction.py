"""Late interaction: the MaxSim reranker kind against sentence-transformers done naively, per query.

Same pairs for both: the first ``--queries`` Cranfield queries x their BM25 top ``--depth``.

* winnow: ``load_reranker(MODEL, "late-interaction").score_pairs(pairs)`` from an empty memo
  (every distinct document and query encoded once, token-budget batches, grouped MaxSim);
* naive: the same ``MultiVectorEncoder`` object, per query ``encode_query([q])``,
  ``encode_document(its documents)`` and ``similarity_pairwise`` (what a user of
  sentence-transformers writes first).

Printed: pairs/s of each, the ratio and the largest score difference, for the tiny ColBERT of
``winnow.testing`` and all-MiniLM-L6-v2 as a backbone.

    python benchmarks/late_interaction.py --queries 50 --depth 100 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def candidate_pairs(dataset: str, queries: int, depth: int) -> list[tuple[str, str]]:
    from winnow.data import load_dataset
    from winnow.retrieval import BM25Index

    ds = load_dataset(dataset, data_dir=os.environ.get("WINNOW_DATA"), download=False)
    judged = [q for q in ds.queries if q in ds.qrels][:queries]
    run = BM25Index().index(ds.corpus).search({q: ds.queries[q] for q in judged}, top_k=depth)
    return [(ds.queries[q], ds.corpus[d].full_text) for q in judged for d in run[q]]


def bench_model(model: str, pairs: list[tuple[str, str]], label: str) -> dict:
    import numpy as np
    import torch

    import winnow

    winnow.clear_cache()
    rr = winnow.load_reranker(model, "late-interaction", device="cpu")
    rr.load()  # weights loaded before the clock starts, for both sides
    t = time.perf_counter()
    ours = rr.score_pairs(pairs)
    ours_s = time.perf_counter() - t

    st = rr.model  # the very same MultiVectorEncoder, so only the scoring path differs
    by_query: dict[str, list[int]] = {}
    for i, (q, _) in enumerate(pairs):
        by_query.setdefault(q, []).append(i)
    naive = np.empty(len(pairs), dtype=np.float32)
    t = time.perf_counter()
    with torch.inference_mode():
        for q, idx in by_query.items():
            qe = st.encode_query([q])
            de = st.encode_document([pairs[i][1] for i in idx])
            naive[idx] = st.similarity_pairwise(qe * len(idx), de).float().cpu().numpy()
    naive_s = time.perf_counter() - t
    return {
        "model": label,
        "pairs": len(pairs),
        "queries": len(by_query),
        "distinct_documents": len({d for _, d in pairs}),
        "winnow_s": round(ours_s, 3),
        "naive_s": round(naive_s, 3),
        "winnow_pairs_per_s": round(len(pairs) / ours_s, 1),
        "naive_pairs_per_s": round(len(pairs) / naive_s, 1),
        "speedup": round(naive_s / ours_s, 2),
        "max_abs_diff": float(np.abs(ours - naive).max()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="cranfield")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--depth", type=int, default=100)
    p.add_argument(
        "--models",
        default="tiny,minilm",
        help="comma list of tiny (the tiny ColBERT), minilm (all-MiniLM-L6-v2 backbone) or paths",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)

    import torch

    from winnow.testing import build_tiny_colbert

    pairs = candidate_pairs(args.dataset, args.queries, args.depth)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "tiny":
                model = str(build_tiny_colbert(os.path.join(tmp, "tiny-colbert")))
            elif name == "minilm":
                model = "sentence-transformers/all-MiniLM-L6-v2"
            else:
                model = name
            results.append(bench_model(model, pairs, name))
    out = {"dataset": args.dataset, "threads": torch.get_num_threads(), "rerank": results}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            print(
                f"{r['model']}: {r['pairs']} pairs ({r['queries']} queries, "
                f"{r['distinct_documents']} distinct documents): winnow "
                f"{r['winnow_pairs_per_s']} pairs/s, naive {r['naive_pairs_per_s']} pairs/s, "
                f"{r['speedup']}x, max |diff| {r['max_abs_diff']:.2e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
