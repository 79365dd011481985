"""Reranker calls per batch of ``RerankerGuidedGISTLoss``: unfiltered against each preset.

Batches are rows of real collections (Cranfield and CISI), shuffled with a fixed seed: ``--rows
judged`` (query, relevant document) pairs, or ``--rows titles`` (title, text) of each document
(enough distinct rows for a batch of 2,048; ``--no-duplicates`` batches have no text twice, as
with sentence-transformers' NO_DUPLICATES sampler). The real all-MiniLM-L6-v2 embeds them as the
student (no grad, max 128 tokens), so the similarity distribution the triage sees is a real one. The blocks are GISTEmbed's
defaults: anchor-positive, anchor-anchor and positive-positive (3 x B^2 pairs). A reranker call is
one distinct (query, candidate) pair the loss would send to the guide with an empty score cache
(the anchors' own positives included); the count is taken from the loss's own triage
(``RerankerGuidedGISTLoss.plan``), before any guide runs, so no guide model is needed.

    python benchmarks/guided_loss.py --batch-sizes 64,256,2048 --json
    python benchmarks/guided_loss.py --rows titles --no-duplicates --batch-sizes 64,256,2048 --json
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


def real_pairs(
    datasets: list[str], data_dir: str | None, seed: int, rows: str
) -> list[tuple[str, str]]:
    """``judged``: (query, relevant document) pairs; ``titles``: (title, text) of each document."""
    from winnow.data import load_dataset

    pairs = []
    for name in datasets:
        ds = load_dataset(name, data_dir=data_dir, download=False)
        if rows == "titles":
            pairs += [(d.title, d.text) for d in ds.corpus.values() if d.title.strip()]
            continue
        for q, docs in ds.qrels.items():
            if q not in ds.queries:
                continue
            for d, rel in docs.items():
                if rel > 0 and d in ds.corpus:
                    pairs.append((ds.queries[q], ds.corpus[d].full_text))
    random.Random(seed).shuffle(pairs)
    return pairs


def batches(pairs, size: int, count: int, no_duplicates: bool):
    """Consecutive batches; with ``no_duplicates`` a pair whose text is already in the batch waits
    for a later one (as sentence-transformers' NoDuplicatesBatchSampler)."""
    if not no_duplicates:
        return [pairs[k * size : (k + 1) * size] for k in range(min(count, len(pairs) // size))]
    out, pending = [], list(pairs)
    while pending and len(out) < count:
        batch, seen, rest = [], set(), []
        for pair in pending:
            if len(batch) < size and not (set(pair) & seen):
                batch.append(pair)
                seen.update(pair)
            else:
                rest.append(pair)
        if len(batch) < size:
            break
        out.append(batch)
        pending = rest
    return out


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
    parser.add_argument(
        "--rows",
        choices=("judged", "titles"),
        default="judged",
        help="judged: (query, relevant document) pairs; titles: (title, text) of each document",
    )
    parser.add_argument(
        "--no-duplicates",
        action="store_true",
        help="no text twice in a batch (NO_DUPLICATES sampler); sizes that cannot fill are skipped",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    import winnow
    from winnow.training import PRESETS, RerankerGuidedGISTLoss

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    pairs = real_pairs(args.datasets.split(","), args.data_dir, args.seed, args.rows)
    plan = {b: batches(pairs, b, args.batches, args.no_duplicates) for b in sizes}
    skipped = [b for b in sizes if not plan[b]]
    encoder = winnow.load_reranker(args.student, "bi-encoder", max_length=args.max_length)
    texts = list(
        dict.fromkeys(t for bs in plan.values() for batch in bs for pair in batch for t in pair)
    )
    t0 = time.perf_counter()
    emb = encoder.encode(texts)
    embed_seconds = time.perf_counter() - t0
    row = {t: i for i, t in enumerate(texts)}
    emb = torch.from_numpy(emb)
    student = SentenceTransformer(encoder.config.model)  # the loss holds it; plan() does not run it
    results = []
    for b in sizes:
        n_batches = len(plan[b])
        if not n_batches:
            continue
        for name in PRESETS:
            loss = RerankerGuidedGISTLoss(student, _CountOnly(), preset=name)
            totals = {"guide_pairs": 0, "unfiltered_pairs": 0, "all_pairs": 0, "text": 0}
            seconds = 0.0
            for batch in plan[b]:
                columns = [[a for a, _ in batch], [p for _, p in batch]]
                embeddings = [emb[[row[t] for t in col]] for col in columns]
                t = time.perf_counter()
                triage, *_ = loss.plan(embeddings, columns)
                seconds += time.perf_counter() - t
                s = triage.stats
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
        "rows": args.rows,
        "no_duplicates": args.no_duplicates,
        "pairs": len(pairs),
        "skipped_batch_sizes": skipped,
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
