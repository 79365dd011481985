"""First-stage retrieval: winnow against the libraries it wraps or replaces, side by side.

* BM25: ``winnow.retrieval.BM25Index`` (index + search, building a run dict with ties ordered by
  ``doc_id``) against bare bm25s with the same tokenizer, stemmer and parameters, on a synthetic
  Zipf-distributed corpus. The ratio is winnow's overhead; top-10 agreement should be 1.0.
* Dense exact search: ``winnow.retrieval.dense.exact_top_k`` (numpy float32, argpartition) against
  ``sentence_transformers.util.semantic_search`` (torch) on random unit vectors.

    python benchmarks/retrieval.py --docs 20000 --queries 500 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def zipf_corpus(n_docs: int, n_queries: int, vocab: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(letters[rng.integers(0, 26, size=rng.integers(3, 10))]) for _ in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    docs = [
        " ".join(words[i] for i in rng.choice(vocab, size=rng.integers(20, 200), p=p))
        for _ in range(n_docs)
    ]
    queries = [" ".join(words[i] for i in rng.choice(vocab, size=5, p=p)) for _ in range(n_queries)]
    return docs, queries


def bench_bm25(n_docs: int, n_queries: int, top_k: int) -> dict:
    import bm25s
    import Stemmer

    from winnow.retrieval import BM25Index
    from winnow.types import Document

    texts, queries = zipf_corpus(n_docs, n_queries, vocab=30_000)
    corpus = {f"d{i}": Document(f"d{i}", t) for i, t in enumerate(texts)}
    qmap = {f"q{i}": q for i, q in enumerate(queries)}

    t = time.perf_counter()
    ours = BM25Index().index(corpus)
    ours_index = time.perf_counter() - t
    t = time.perf_counter()
    run = ours.search(qmap, top_k=top_k)
    ours_search = time.perf_counter() - t

    stemmer = Stemmer.Stemmer("english")
    t = time.perf_counter()
    tokens = bm25s.tokenize(
        [f" {x}" for x in texts], stopwords="en", stemmer=stemmer, show_progress=False
    )
    ref = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    ref.index(tokens, show_progress=False)
    ref_index = time.perf_counter() - t
    t = time.perf_counter()
    q_tokens = bm25s.tokenize(
        queries, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    docs, _ = ref.retrieve(q_tokens, k=top_k, show_progress=False)
    ref_search = time.perf_counter() - t

    agree = (
        sum(
            set(list(run[f"q{i}"])[:10]) <= {f"d{j}" for j in docs[i][:11]}
            for i in range(n_queries)
        )
        / n_queries
    )
    return {
        "docs": n_docs,
        "queries": n_queries,
        "top_k": top_k,
        "winnow_index_s": ours_index,
        "bm25s_index_s": ref_index,
        "winnow_search_s": ours_search,
        "bm25s_search_s": ref_search,
        "index_ratio": ours_index / ref_index,
        "search_ratio": ours_search / ref_search,
        "top10_agreement": agree,
    }


def bench_dense(n_docs: int, n_queries: int, dim: int, top_k: int) -> dict:
    import numpy as np
    import torch
    from sentence_transformers.util import semantic_search

    from winnow.retrieval.dense import exact_top_k

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((n_docs, dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    t = time.perf_counter()
    idx, _ = exact_top_k(queries, docs, top_k)
    ours = time.perf_counter() - t
    td, tq = torch.from_numpy(docs), torch.from_numpy(queries)
    t = time.perf_counter()
    hits = semantic_search(tq, td, top_k=top_k)
    ref = time.perf_counter() - t
    agree = np.mean(
        [set(idx[i].tolist()) == {h["corpus_id"] for h in hits[i]} for i in range(n_queries)]
    )
    return {
        "docs": n_docs,
        "queries": n_queries,
        "dim": dim,
        "top_k": top_k,
        "winnow_s": ours,
        "semantic_search_s": ref,
        "ratio": ours / ref,
        "topk_agreement": float(agree),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = {
        "bm25": bench_bm25(args.docs, args.queries, args.top_k),
        "dense": bench_dense(args.docs, args.queries, args.dim, args.top_k),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        b, d = result["bm25"], result["dense"]
        print(
            f"BM25 ({b['docs']} docs, {b['queries']} queries, top {b['top_k']}): "
            f"index {b['winnow_index_s']:.2f}s vs bm25s {b['bm25s_index_s']:.2f}s "
            f"(x{b['index_ratio']:.2f}); search {b['winnow_search_s']:.2f}s vs "
            f"{b['bm25s_search_s']:.2f}s (x{b['search_ratio']:.2f}); "
            f"top-10 agreement {b['top10_agreement']:.3f}"
        )
        print(
            f"Dense exact top-{d['top_k']} ({d['docs']} x {d['dim']}, {d['queries']} queries): "
            f"winnow {d['winnow_s']:.3f}s vs semantic_search {d['semantic_search_s']:.3f}s "
            f"(x{d['ratio']:.2f}); agreement {d['topk_agreement']:.3f}"
        )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
