"""winnow's ``mine_hard_negatives`` against sentence-transformers' on the same data, side by side.

Both mine Cranfield's ``train@0.6`` queries (135 queries, 1400 abstracts) with the same embedding
model (all-MiniLM-L6-v2: winnow's ``dense:`` candidates, ST's ``model=``), the same judge (a
cross-encoder with all-MiniLM-L6-v2's encoder and a fresh one-logit head, ``winnow.testing.
build_minilm_cross_encoder``: the compute of ms-marco-MiniLM-L-6-v2; raw logits on both sides) and
the same settings (``range_max``, ``relative_margin``, ``num_negatives``, ``top`` sampling). Both
models are loaded and warmed up on a few queries before the clock starts; neither side reads a
cache (winnow writes its own during the timed run, for the re-run). Prints each side's seconds and their ratio, the fraction of queries whose negative sets
are identical, and why the others differ; then winnow again with a warm judge cache and another
margin (no model call).

    WINNOW_DATA=../shared/datasets python benchmarks/mining.py
    python benchmarks/mining.py --range-max 30 --num-negatives 5 --relative-margin 0.05 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def st_mine(dataset, args, model, cross_encoder):
    """ST's mine_hard_negatives over (query, positive) rows; per query text: {negative: score}."""
    from datasets import Dataset as HFDataset
    from sentence_transformers.util import mine_hard_negatives

    corpus = dataset.corpus
    rows = {"anchor": [], "positive": []}
    for qid, judged in dataset.qrels.items():
        for doc_id, rel in judged.items():
            if rel > 0:
                rows["anchor"].append(dataset.queries[qid])
                rows["positive"].append(corpus[doc_id].full_text)
    positives: dict[str, set[str]] = {}
    for q, p in zip(rows["anchor"], rows["positive"]):
        positives.setdefault(q, set()).add(p)
    started = time.perf_counter()
    out = mine_hard_negatives(
        HFDataset.from_dict(rows),
        model,
        corpus=[d.full_text for d in corpus.values()],
        cross_encoder=cross_encoder,
        range_max=args.range_max,
        relative_margin=args.relative_margin,
        num_negatives=args.num_negatives,
        sampling_strategy="top",
        output_format="labeled-pair",
        output_scores=True,
        batch_size=args.batch_size,
        verbose=False,
    )
    seconds = time.perf_counter() - started
    negatives: dict[str, dict[str, float]] = {q: {} for q in positives}
    for q, text, score in zip(out["anchor"], out["positive"], out["score"]):
        if text not in positives[q]:
            negatives[q][text] = score
    return seconds, negatives


def winnow_mine(dataset, args, judge, cache_dir=None, relative_margin=None, st_pool=False):
    """winnow's mining; ``st_pool``: the candidates ST considers instead (the top ``range_max +
    max positives`` embedding neighbours, positives removed), to check that the rest agrees."""
    from winnow.training import mine_hard_negatives

    candidates, range_max = f"dense:{args.model}", args.range_max
    if st_pool:
        most = max(sum(1 for r in j.values() if r > 0) for j in dataset.qrels.values())
        candidates, range_max = f"dense:{args.model} % {range_max + most}", range_max + most
    started = time.perf_counter()
    result = mine_hard_negatives(
        dataset,
        judge,
        candidates,
        range_max=range_max,
        relative_margin=args.relative_margin if relative_margin is None else relative_margin,
        num_negatives=args.num_negatives,
        sampling="top",
        output_format="labeled-pair",
        cache_dir=cache_dir,
        device="cpu",
    )
    seconds = time.perf_counter() - started
    corpus = dataset.corpus
    negatives = {
        dataset.queries[qid]: {corpus[d].full_text: s for d, s in picked}
        for qid, picked in result.negatives.items()
    }
    return seconds, negatives, result


def explain(dataset, ours, theirs, result) -> Counter:
    """Why a query's negative sets differ: ST's deeper pool, or judge / embedding float noise."""
    corpus = dataset.corpus
    window_texts = {
        dataset.queries[qid]: {corpus[d].full_text for d in docs}
        for qid, docs in result.candidates.items()
    }
    reasons: Counter = Counter()
    for query, mine in ours.items():
        st = theirs.get(query, {})
        if set(mine) == set(st):
            continue
        only_st = set(st) - set(mine)
        if any(text not in window_texts[query] for text in only_st):
            # ST ranks range_max + max_positives embedding neighbours and drops the positives
            # afterwards, so for queries with fewer positives its pool reaches deeper than
            # winnow's window of exactly range_max positive-free candidates
            reasons["ST's pool reaches past winnow's range_max positive-free candidates"] += 1
        elif len(st) != len(mine):
            reasons["as many negatives would need a score on the other side of the margin"] += 1
        else:
            reasons["near-tied judge or embedding scores (float noise of batching)"] += 1
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--split", default="train@0.6")
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA"))
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--range-max", type=int, default=30)
    parser.add_argument("--num-negatives", type=int, default=5)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32, help="ST's batch_size")
    parser.add_argument("--queries", type=int, default=None, help="only the first N queries")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    import winnow
    from winnow.data import load_dataset
    from winnow.rerankers.hub import resolve_model_path
    from winnow.testing import build_minilm_cross_encoder
    from winnow.types import Dataset, Document

    dataset = load_dataset(args.dataset, split=args.split, data_dir=args.data_dir)
    if args.queries:
        keep = list(dataset.queries)[: args.queries]
        dataset = Dataset(
            dataset.name,
            dataset.corpus,
            {q: dataset.queries[q] for q in keep},
            {q: dataset.qrels[q] for q in keep},
        )
    # warm-up on 3 queries over 60 documents, their texts marked so that no embedding the
    # bi-encoder memo keeps from it can serve the timed runs
    first = list(dataset.queries)[:3]
    docs = {d for q in first for d in dataset.qrels[q]} | set(list(dataset.corpus)[:60])
    warm = Dataset(
        "warm",
        {
            d: Document(d, "warm-up " + doc.text, doc.title)
            for d, doc in dataset.corpus.items()
            if d in docs
        },
        {q: "warm-up " + dataset.queries[q] for q in first},
        {q: dataset.qrels[q] for q in first},
    )
    with tempfile.TemporaryDirectory(prefix="winnow-mining-") as tmp:
        ce_path = build_minilm_cross_encoder(Path(tmp) / "minilm-ce")
        st_model = SentenceTransformer(resolve_model_path(args.model), device="cpu")
        st_judge = CrossEncoder(
            str(ce_path), device="cpu", max_length=512, activation_fn=torch.nn.Identity()
        )
        judge = winnow.load_reranker(str(ce_path), "cross-encoder", device="cpu", max_length=512)
        st_mine(warm, args, st_model, st_judge)  # warm-up: loads, first-call costs
        winnow_mine(warm, args, judge)

        st_seconds, theirs = st_mine(dataset, args, st_model, st_judge)
        # cold: the cache folder is empty (this run only writes it, which it pays for)
        cache = Path(tmp) / "cache"
        our_seconds, ours, result = winnow_mine(dataset, args, judge, cache_dir=cache)
        rerun_seconds, _, rerun = winnow_mine(
            dataset, args, judge, cache_dir=cache, relative_margin=args.relative_margin * 2
        )
        _, emulated, _ = winnow_mine(dataset, args, judge, cache_dir=cache, st_pool=True)

    same = sum(set(ours[q]) == set(theirs.get(q, {})) for q in ours)
    same_pool = sum(set(emulated[q]) == set(theirs.get(q, {})) for q in emulated)
    common = [
        abs(ours[q][t] - theirs[q][t]) for q in ours for t in set(ours[q]) & set(theirs.get(q, {}))
    ]
    s = result.summary
    report = {
        "dataset": f"{args.dataset} {args.split}",
        "queries": len(ours),
        "settings": {
            "range_max": args.range_max,
            "relative_margin": args.relative_margin,
            "num_negatives": args.num_negatives,
            "sampling": "top",
        },
        "seconds": {"sentence_transformers": st_seconds, "winnow": our_seconds},
        "speedup": st_seconds / our_seconds,
        "winnow_phases": s.seconds,
        "winnow_judge_pairs": s.judge_pairs,
        "identical_negative_sets": same / len(ours),
        "differences": dict(explain(dataset, ours, theirs, result)),
        "identical_with_st_candidate_pool": same_pool / len(emulated),
        "max_abs_judge_score_difference_on_common_negatives": max(common, default=0.0),
        "negatives": {
            "winnow": sum(len(v) for v in ours.values()),
            "sentence_transformers": sum(len(v) for v in theirs.values()),
        },
        "rerun_with_cache": {
            "relative_margin": args.relative_margin * 2,
            "seconds": rerun_seconds,
            "pairs_scored_by_model": rerun.summary.judge_scored,
            "speedup_vs_sentence_transformers": st_seconds / rerun_seconds,
        },
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['dataset']}: {len(ours)} queries, range_max {args.range_max}, relative_margin "
        f"{args.relative_margin}, {args.num_negatives} negatives, top sampling"
    )
    print(f"sentence-transformers mine_hard_negatives  {st_seconds:8.1f} s")
    phases = ", ".join(f"{k} {v:.1f}" for k, v in s.seconds.items())
    print(f"winnow mine_hard_negatives                 {our_seconds:8.1f} s  ({phases})")
    print(f"speed-up                                   {report['speedup']:8.2f}x")
    print(
        f"identical negative sets                    {same}/{len(ours)} = "
        f"{report['identical_negative_sets']:.1%}"
    )
    for reason, count in report["differences"].items():
        print(f"  differ: {count:4d}  {reason}")
    print(
        f"identical with ST's candidate pool         {same_pool}/{len(emulated)} = "
        f"{report['identical_with_st_candidate_pool']:.1%}  (winnow given dense % (range_max + "
        "max positives), the pool ST draws from)"
    )
    print(
        f"max |judge score difference| on common negatives: "
        f"{report['max_abs_judge_score_difference_on_common_negatives']:.2e}"
    )
    print(
        f"negatives: winnow {report['negatives']['winnow']}, "
        f"sentence-transformers {report['negatives']['sentence_transformers']}"
    )
    r = report["rerun_with_cache"]
    print(
        f"winnow again, relative_margin {r['relative_margin']}, warm judge cache: "
        f"{r['seconds']:.1f} s, {r['pairs_scored_by_model']} pairs scored by the model, "
        f"{r['speedup_vs_sentence_transformers']:.1f}x faster than sentence-transformers"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
