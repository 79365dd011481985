"""Does fine-tuning on mined negatives help, and does the balanced guided loss keep the gain?

On one collection split 60/40 by query (``train@0.6`` / ``test@0.6``), all on CPU:

1. ``winnow mine`` the train queries: BM25 candidates judged by all-MiniLM-L6-v2 (bi-encoder),
   relative margin 0.05, ``--num-negatives`` per query (default 1) in ``--format`` (``triplet``, or
   ``n-tuple``: one row per positive with all N negatives, only queries that kept N), candidates
   among BM25's top ``--range-max`` (default: mine's own, 10 per negative); with ``--max-positives N``
   at most N rows per query are kept (first in file order; default: all). The weakest positive of a
   query is the margin's reference, so a collection with many positives per query (CISI: ~40)
   needs a deeper ``--range-max`` to find negatives below it;
2. the guide (unless ``--guide SPEC`` names one, e.g. ``bi-encoder:MODEL``, the frozen base as
   GISTEmbed's guide): ``winnow train cross-encoder`` (BCE, ``--guide-epochs``) from
   all-MiniLM-L6-v2 on its own ``labeled-pair`` file of the same train queries: every positive (label 1) and
   ``--guide-negatives`` random BM25 candidates of the top ``--guide-range-max`` that are not
   positives (label 0, no margin filter), since a cross-encoder trained from a bi-encoder needs
   many more pairs than the student's rows (no real cross-encoder is available offline);
3. fine-tune all-MiniLM-L6-v2 (``--epochs``, default 1, batch 32, max_seq_length 128) with MNRL, with the
   reranker-guided GIST loss unfiltered (every in-batch pair to the guide) and with the balanced
   preset (anchor-positive, anchor-anchor and anchor-negative blocks; the guide at 128 tokens, in
   ``--guide-dtype``: float32 by default, since bfloat16 is emulated, and about 20x slower, on CPUs
   without AVX512-BF16 / AMX);
4. ``winnow eval`` dense retrieval with each model on the test queries: nDCG@10 and the paired
   t-test against the base model (evaluated at the same 128-token limit), and the guide itself as a
   reranker of BM25's top 100 beside ``bm25`` (is it a better judge than the student?).

    python benchmarks/training_quality.py --dataset cranfield --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def winnow(*args: str, env: dict) -> str:
    """Run the winnow CLI exactly as a user would; return its stdout."""
    cmd = [sys.executable, "-m", "winnow.cli", *args]
    print("$ winnow " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"winnow {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def cap_rows(src: Path, dst: Path, per_query: int) -> int:
    seen: dict[str, int] = {}
    kept = []
    for line in src.read_text().splitlines():
        row = json.loads(line)
        if per_query <= 0 or seen.get(row["anchor"], 0) < per_query:
            seen[row["anchor"]] = seen.get(row["anchor"], 0) + 1
            kept.append(line)
    dst.write_text("\n".join(kept) + "\n")
    return len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--data-dir", default=os.environ.get("WINNOW_DATA"))
    parser.add_argument("--work", default="/tmp/winnow-training-quality")
    parser.add_argument("--max-positives", type=int, default=0, help="rows kept per query (0: all)")
    parser.add_argument("--range-max", type=int, default=0, help="candidates per query (0: mine's)")
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per query")
    parser.add_argument("--format", default="triplet", choices=["triplet", "n-tuple"])
    parser.add_argument("--guide-negatives", type=int, default=16, help="guide: 0-labels per query")
    parser.add_argument("--guide-range-max", type=int, default=60, help="guide: BM25 depth")
    parser.add_argument("--guide-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--guide-dtype", default="float32")
    parser.add_argument(
        "--guide",
        default=None,
        help="an existing reranker spec as the guide (e.g. bi-encoder:MODEL) instead of training one",
    )
    parser.add_argument("--skip", default="", help="runs to leave out, e.g. guided-unfiltered")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    work = Path(args.work) / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.data_dir:
        env["WINNOW_DATA"] = args.data_dir
    data = ["--dataset", args.dataset, "--data-dir", args.data_dir or ""]
    timings: dict[str, float] = {}

    mined = work / "mined.jsonl"
    t = time.perf_counter()
    if not mined.is_file():
        out = winnow(
            "mine",
            *data,
            *("--split", "train@0.6", "--candidates", "bm25", "--judge", f"bi-encoder:{BASE}"),
            *("--num-negatives", str(args.num_negatives), "--relative-margin", "0.05"),
            *("--format", args.format),
            *("--output", str(mined), "--cache-dir", str(work / "cache"), "--no-progress"),
            *(("--range-max", str(args.range_max)) if args.range_max else ()),
            "--json",
            env=env,
        )
        (work / "mine.json").write_text(out)
    timings["mine"] = time.perf_counter() - t
    train = work / "train.jsonl"
    rows = cap_rows(mined, train, args.max_positives)

    common = [
        *("--data", str(train), "--epochs", str(args.epochs), "--max-length", str(args.max_length)),
        *("--learning-rate", str(args.learning_rate), "--seed", "0", "--no-progress", "--json"),
    ]
    results: dict[str, dict] = {}
    guide_rows = work / "guide-pairs.jsonl"
    if not args.guide and not guide_rows.is_file():
        winnow(
            "mine",
            *data,
            *("--split", "train@0.6", "--candidates", "bm25", "--judge", f"bi-encoder:{BASE}"),
            *("--num-negatives", str(args.guide_negatives), "--sampling", "random"),
            *("--range-max", str(args.guide_range_max), "--format", "labeled-pair"),
            *("--output", str(guide_rows), "--cache-dir", str(work / "cache"), "--no-progress"),
            env=env,
        )
    guide = work / "guide-ce"
    guide_spec = args.guide or f"cross-encoder:{guide}"
    if args.guide:
        pass  # the user's guide: nothing to train
    elif not guide.is_dir():
        out = winnow(
            "train",
            "cross-encoder",
            *("--data", str(guide_rows), "--epochs", str(args.guide_epochs)),
            *("--max-length", str(args.max_length), "--learning-rate", str(args.learning_rate)),
            *("--seed", "0", "--no-progress", "--json"),
            *("--model", BASE, "--loss", "bce", "--batch-size", "16", "--output", str(guide)),
            env=env,
        )
        results["guide-ce"] = json.loads(out)
    else:
        results["guide-ce"] = json.loads((guide / "training.json").read_text())
    # a guided run's folder is named after its guide unless it is the trained cross-encoder: a
    # readable, spec-safe name ("dense:FOLDER" must not read as options) and a hash of the spec
    suffix = ""
    if args.guide:
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", args.guide)[-60:]
        suffix = f"-{readable}-{hashlib.sha256(args.guide.encode()).hexdigest()[:8]}"

    runs = {
        "mnrl": ["--loss", "mnrl"],
        "guided-balanced": ["--loss", "guided", "--preset", "balanced"],
        "guided-unfiltered": ["--loss", "guided", "--preset", "unfiltered"],
    }
    runs = {k: v for k, v in runs.items() if k not in args.skip.split(",")}
    for name, extra in runs.items():
        folder = work / (name + suffix if name.startswith("guided") else name)
        if name.startswith("guided"):
            extra = [
                *extra,
                *("--guide", guide_spec, "--guide-max-length", str(args.max_length)),
                *("--guide-dtype", args.guide_dtype),
                "--no-contrast-positives",
            ]
        if not folder.is_dir():
            out = winnow(
                "train",
                "bi-encoder",
                *common,
                *("--model", BASE, "--batch-size", str(args.batch_size), "--output", str(folder)),
                *extra,
                env=env,
            )
            results[name] = json.loads(out)
        else:
            results[name] = json.loads((folder / "training.json").read_text())

    base = work / "base-128"
    if not base.is_dir():
        from sentence_transformers import SentenceTransformer

        from winnow.rerankers.hub import resolve_model_path

        model = SentenceTransformer(resolve_model_path(BASE))
        model.max_seq_length = args.max_length
        model.save_pretrained(str(base))
    systems = [f"dense:{base}"] + [
        f"dense:{work / (name + suffix if name.startswith('guided') else name)}" for name in runs
    ]
    guide_systems = ["bm25", f"bm25 % 100 >> rerank:{guide_spec}"]
    out = winnow(
        "eval",
        *data,
        *("--split", "test@0.6", "--systems", ",".join(systems + guide_systems)),
        *("--baseline", systems[0]),
        *("--metrics", "nDCG@10", "--cache-dir", str(work / "eval-cache")),
        *("--no-progress", "--no-plot", "--json"),
        env=env,
    )
    metrics = json.loads(out)
    report = {
        "dataset": args.dataset,
        "guide": guide_spec,
        "train_rows": rows,
        "test_queries": metrics["queries"],
        "mine_seconds": round(timings["mine"], 1),
        "mine": json.loads((work / "mine.json").read_text())
        if (work / "mine.json").is_file()
        else None,
        "systems": {},
    }
    base_score = metrics["systems"][systems[0]]["nDCG@10"]
    for label, spec in zip(["base", *runs], systems):
        entry = metrics["systems"][spec]
        row = {"nDCG@10": entry["nDCG@10"], "gain": entry["nDCG@10"] - base_score}
        if "significance" in entry:
            row["significance"] = entry["significance"]
        if label in results:
            r = results[label]
            row["train_seconds"] = r["seconds"]
            row["steps"] = r["steps"]
            if r.get("guide"):
                row["reranker_calls"] = r["guide"]["reranker_calls"]
                row["unfiltered_calls"] = r["guide"]["unfiltered_pairs"]
        report["systems"][label] = row
    if "guide-ce" in results and not args.guide:
        report["guide_train_seconds"] = results["guide-ce"]["seconds"]
        report["guide_train_rows"] = results["guide-ce"]["rows"]
    report["guide_as_reranker"] = {
        label: metrics["systems"][spec]["nDCG@10"]
        for label, spec in zip(["bm25", "bm25 % 100 >> guide"], guide_systems)
    }
    unf = report["systems"].get("guided-unfiltered")
    bal = report["systems"].get("guided-balanced")
    if unf and bal and unf["gain"] > 0:
        report["balanced_kept_gain_pct"] = 100.0 * bal["gain"] / unf["gain"]
    if unf and bal and unf.get("reranker_calls"):
        report["balanced_fewer_calls_pct"] = 100.0 * (
            1 - bal["reranker_calls"] / unf["reranker_calls"]
        )
    print(json.dumps(report, indent=2) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
