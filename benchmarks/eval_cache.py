"""``winnow eval`` twice with one fresh cache folder: the second run reuses the cached BM25 index,
document embeddings and rerank scores. Prints both wall times (each a fresh subprocess, start-up
and imports included) and their ratio, and checks that both runs give the same metrics.

    WINNOW_DATA=../shared/datasets python benchmarks/eval_cache.py --dataset cranfield
    python benchmarks/eval_cache.py --dataset cranfield --systems bm25,dense,hybrid --json

Extra arguments after ``--`` go to ``winnow eval`` (e.g. ``-- --queries 50 --device cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from winnow.evaluation.commands import DEFAULT_SYSTEMS


def run_eval(args: argparse.Namespace, cache: Path, output: Path) -> tuple[float, dict]:
    command = [sys.executable, "-m", "winnow.cli", "eval", "--dataset", args.dataset]
    command += ["--systems", args.systems, "--cache-dir", str(cache), "--output", str(output)]
    command += ["--no-progress", "--no-plot", *args.extra]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"winnow eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads((output / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("extra", nargs="*", help="more winnow eval arguments (after --)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="winnow-eval-cache-") as tmp:
        cache = Path(tmp) / "cache"
        cold, first = run_eval(args, cache, Path(tmp) / "cold")
        warm, second = run_eval(args, cache, Path(tmp) / "warm")
    same = all(
        first["systems"][s][m] == second["systems"][s][m]
        for s in first["systems"]
        for m in first["metrics"]
    )
    result = {
        "dataset": args.dataset,
        "systems": args.systems,
        "cold_seconds": round(cold, 3),
        "warm_seconds": round(warm, 3),
        "speedup": round(cold / warm, 2),
        "same_metrics": same,
        "nDCG@10": {s: round(v["nDCG@10"], 4) for s, v in second["systems"].items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"winnow eval --dataset {args.dataset} --systems {args.systems}")
        print(f"  first run (empty cache): {cold:8.2f} s")
        print(f"  second run (cached):     {warm:8.2f} s")
        print(f"  ratio:                   {cold / warm:8.1f}x   same metrics: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
