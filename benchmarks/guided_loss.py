"""Reranker calls per batch of ``RerankerGuidedGISTLoss``: unfiltered against each preset.

Batches are (query, relevant document) pairs of real collections (Cranfield and CISI judged pairs,
shuffled with a fixed seed), embedded by the real all-MiniLM-L6-v2 as the student (no grad, max 128
tokens), so the similarity distribution the triage sees is a real one. The blocks are GISTEmbed's
defaults: anchor-positive, anchor-anchor and positive-positive (3 x B^2 pairs). A reranker call is
one distinct (query, candidate) pair the loss would send to the guide with an empty score cache
(the anchors' own positives included); the count is taken from the loss's own triage
(``RerankerGuidedGISTLoss.plan``), before any guide runs, so no guide model is needed.

    python benchmarks/guided_loss.py --batch-sizes 64,256,2048 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time


class _CountOnly:
    """Stands in for the guide: the benchmark only plans, it never scores."""

    def score_pairs(self, pairs):  # pragma: no cover - never called
        raise RuntimeError("the call-count benchmark does not score pairs")


def real_pairs(datasets: list[str], data_dir: str | None, seed: int) -> list[tuple[str, str]]:
    from winnow.data import load_dataset

    pairs = []
    for name in datasets:
        ds = load_dataset(name, data_dir=data_dir, download=False)
        for q, docs in ds.qrels.items():
            if q not in ds.queries:
                continue
            for d, rel in docs.items():
                if rel > 0 and d in ds.corpus:
                    pairs.append((ds.queries[q], ds.corpus[d].full_text))
    random.Random(seed).shuffle(pairs)
    return pairs


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="64,256,2048")
    parser.add_argument("--datasets", default="cranfield,cisi")
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA"))
    parser.add_argument("--student", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batches", type=int, default=3, help="batches averaged per size (<=)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    import winnow
    from winnow.training import PRESETS, RerankerGuidedGISTLoss

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    pairs = real_pairs(args.datasets.split(","), args.data_dir, args.seed)
    if len(pairs) < max(sizes):
        raise SystemExit(f"only {len(pairs)} judged pairs; need {max(sizes)} for one batch")
    encoder = winnow.load_reranker(args.student, "bi-encoder", max_length=args.max_length)
    needed = max(b * max(1, min(args.batches, len(pairs) // b)) for b in sizes)
    used = pairs[:needed]
    texts = list(dict.fromkeys(t for pair in used for t in pair))
    t0 = time.perf_counter()
    emb = encoder.encode(texts)
    embed_seconds = time.perf_counter() - t0
    row = {t: i for i, t in enumerate(texts)}
    emb = torch.from_numpy(emb)
    student = SentenceTransformer(encoder.config.model)  # the loss holds it; plan() does not run it
    results = []
    for b in sizes:
        n_batches = max(1, min(args.batches, len(pairs) // b))
        for name in PRESETS:
            loss = RerankerGuidedGISTLoss(student, _CountOnly(), preset=name)
            totals = {"guide_pairs": 0, "unfiltered_pairs": 0, "all_pairs": 0, "text": 0}
            seconds = 0.0
            for k in range(n_batches):
                batch = pairs[k * b : (k + 1) * b]
                columns = [[a for a, _ in batch], [p for _, p in batch]]
                embeddings = [emb[[row[t] for t in col]] for col in columns]
                t = time.perf_counter()
                plan, *_ = loss.plan(embeddings, columns)
                seconds += time.perf_counter() - t
                s = plan.stats
                totals["guide_pairs"] += s.guide_pairs
                totals["unfiltered_pairs"] += s.unfiltered_pairs
                totals["all_pairs"] += s.all_pairs
                totals["text"] += s.masked_by_text
            per = {k: v / n_batches for k, v in totals.items()}
            results.append(
                {
                    "batch_size": b,
                    "preset": name,
                    "batches": n_batches,
                    "top_k": loss.guidance.top_k(b),
                    "reranker_calls": per["guide_pairs"],
                    "unfiltered_calls": per["unfiltered_pairs"],
                    "all_pairs": per["all_pairs"],
                    "decided_by_text": per["text"],
                    "fewer_calls_pct": 100.0 * (1 - per["guide_pairs"] / per["unfiltered_pairs"]),
                    "plan_seconds": seconds / n_batches,
                }
            )
    report = {
        "student": args.student,
        "max_length": args.max_length,
        "datasets": args.datasets,
        "judged_pairs": len(pairs),
        "distinct_texts_embedded": len(texts),
        "embed_seconds": round(embed_seconds, 1),
        "results": results,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(
            f"{'batch':>6} {'preset':<13} {'top_k':>6} {'calls':>12} {'unfiltered':>12} {'fewer':>8}"
        )
        for r in results:
            print(
                f"{r['batch_size']:>6} {r['preset']:<13} {r['top_k'] or '-':>6} "
                f"{r['reranker_calls']:>12,.0f} {r['unfiltered_calls']:>12,.0f} "
                f"{r['fewer_calls_pct']:>7.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
