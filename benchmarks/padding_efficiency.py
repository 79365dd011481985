"""Padding efficiency of the engine's batches on the Cranfield pairs: what unpadded batches could save.

Real / padded tokens (``BatchStats.padding_efficiency``) when the pairs (Cranfield queries x BM25 top
``--depth``) are cut into length-sorted token-budget batches, for the MiniLM-L6 cross-encoder's
tokenizer at each ``--max-lengths`` and each ``--budgets`` (4096: the CPU default; 32768: the
accelerator default). Only tokenisation and batch planning run (no model), so it runs on any CPU;
1 - efficiency bounds what packed (varlen) batches could save in the dense layers (docs/gpu.md).

    python benchmarks/padding_efficiency.py [--queries 225] [--depth 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA", "../shared/datasets"))
    parser.add_argument("--queries", type=int, default=225, help="Cranfield queries (all: 225)")
    parser.add_argument("--depth", type=int, default=100, help="BM25 documents per query")
    parser.add_argument("--max-lengths", default="256,512")
    parser.add_argument("--budgets", default="4096,32768")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    import winnow
    from gpu_throughput import cranfield_pairs
    from winnow.rerankers.engine import DEFAULT_MAX_BATCH_SIZE, run_batches
    from winnow.testing import build_minilm_cross_encoder

    queries, documents, index = cranfield_pairs(Path(args.data_dir), args.queries, args.depth)
    pairs = [(queries[q], documents[d]) for q, d in index]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_minilm_cross_encoder(Path(tmp) / "minilm-ce"))
        for max_length in (int(x) for x in args.max_lengths.split(",")):
            rr = winnow.load_reranker(path, device="cpu", max_length=max_length)
            rr.load()
            _, _, lengths, _ = rr.pairs.encode_pairs(pairs)
            for budget in (int(x) for x in args.budgets.split(",")):
                _, stats = run_batches(
                    lengths,
                    lambda idx: np.zeros(len(idx), dtype=np.float32),
                    max_tokens=budget,
                    max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                )
                rows.append(
                    {
                        "pairs": len(pairs),
                        "max_length": max_length,
                        "mean_tokens": float(lengths.mean()),
                        "max_tokens": budget,
                        "batches": stats.batches,
                        "padding_efficiency": stats.padding_efficiency,
                    }
                )
            winnow.unload(path)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(
            f"{r['pairs']} pairs, max_length {r['max_length']} (mean {r['mean_tokens']:.1f} "
            f"tokens), budget {r['max_tokens']}: {r['batches']} batches, "
            f"padding efficiency {r['padding_efficiency']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
