"""``winnow mine``: hard negatives for a collection's queries, judged by a reranker."""

from __future__ import annotations

import argparse
import json
import os
import sys

from winnow._collection_args import data_dir_argument

DEFAULT_CACHE = "~/.cache/winnow"


def register(sub: argparse._SubParsersAction) -> None:
    data_dir = os.environ.get("WINNOW_DATA") or None  # read once, at CLI start
    from winnow.training._formats import FORMATS

    p = sub.add_parser(
        "mine",
        help="mine hard negatives judged by a reranker and write sentence-transformers training data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "For each query of --split with a positive judgment: rank the corpus with the\n"
            "--candidates system, drop every known positive, take ranks --range-min..--range-max,\n"
            "score candidates and positives with the --judge reranker (all pairs in one batched\n"
            "stream, cached per pair), keep candidates below the weakest positive by the margins,\n"
            "pick --num-negatives (top or random) and write them in a sentence-transformers format.\n"
            "Example: winnow mine --dataset cranfield --split train@0.6 --candidates dense\n"
            "  --judge cross-encoder:cross-encoder/ms-marco-MiniLM-L-6-v2 --num-negatives 5\n"
            "  --relative-margin 0.05 --output negatives.jsonl"
        ),
    )
    p.add_argument("--dataset", required=True, help="collection name, BEIR name or BEIR folder")
    data_dir_argument(p, data_dir)
    p.add_argument(
        "--split",
        required=True,
        help="queries to mine: a split spec such as train@0.6 (see 'winnow data split') or a "
        "qrels split name",
    )
    p.add_argument(
        "--candidates",
        default="bm25",
        help="system that ranks the candidates: bm25, dense, hybrid, dense:MODEL or any "
        "'winnow eval' system expression (default: bm25)",
    )
    p.add_argument("--dense-model", default=None, help="model of the 'dense' word in --candidates")
    p.add_argument(
        "--judge",
        required=True,
        help="reranker that scores candidates and positives: [KIND:]MODEL (a hub id or folder)",
    )
    p.add_argument("--num-negatives", type=int, default=3, help="negatives per query (default: 3)")
    p.add_argument(
        "--range-min", type=int, default=0, help="skip this many top candidates (default: 0)"
    )
    p.add_argument(
        "--range-max",
        type=int,
        default=None,
        help="candidates considered per query (default: range-min + 10 x num-negatives with a "
        "filter, else range-min + num-negatives)",
    )
    p.add_argument(
        "--relative-margin",
        type=float,
        default=None,
        help="keep a candidate only if score < pos - |pos| x M (0.05: NV-Retriever's TopK-PercPos)",
    )
    p.add_argument(
        "--absolute-margin",
        type=float,
        default=None,
        help="keep a candidate only if score < pos - M",
    )
    p.add_argument("--max-score", type=float, default=None, help="keep candidates <= this score")
    p.add_argument("--min-score", type=float, default=None, help="keep candidates >= this score")
    p.add_argument("--sampling", choices=("top", "random"), default="top", help="default: top")
    p.add_argument("--seed", type=int, default=0, help="seed of --sampling random (default: 0)")
    p.add_argument(
        "--format",
        dest="output_format",
        choices=FORMATS,
        default="triplet",
        help="sentence-transformers layout (default: triplet)",
    )
    p.add_argument(
        "--scores", action="store_true", help="add the judge's scores (as output_scores=True)"
    )
    p.add_argument(
        "--output", required=True, help="file to write: .jsonl / .json (JSON lines) or .parquet"
    )
    p.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE,
        help=f"indexes, embeddings and judge scores (default: {DEFAULT_CACHE})",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (best available if omitted)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16, int8")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_mine)


def _option_error(exc: Exception) -> str:
    """Name the CLI option behind a library field name (num_negatives -> --num-negatives)."""
    text = str(exc)
    for field in (
        "num_negatives",
        "range_min",
        "range_max",
        "relative_margin",
        "absolute_margin",
        "max_score",
        "min_score",
        "seed",
    ):
        text = text.replace(field, "--" + field.replace("_", "-"))
    return text


def run_mine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from winnow.data import load_dataset
    from winnow.errors import ConfigError, ModelLoadError
    from winnow.training.mining import MiningConfig, check_output_path, mine_hard_negatives

    settings = {
        "num_negatives": args.num_negatives,
        "range_min": args.range_min,
        "range_max": args.range_max,
        "relative_margin": args.relative_margin,
        "absolute_margin": args.absolute_margin,
        "max_score": args.max_score,
        "min_score": args.min_score,
        "sampling": args.sampling,
        "seed": args.seed,
        "output_format": args.output_format,
        "output_scores": args.scores,
    }
    try:  # every check that needs no data or model, before any work
        MiningConfig(**settings)
        check_output_path(args.output, "--output")
    except ConfigError as exc:
        raise ConfigError(_option_error(exc)) from None
    cache = None if args.no_cache else Path(args.cache_dir).expanduser()
    try:
        dataset = load_dataset(
            args.dataset,
            split=args.split,
            data_dir=args.data_dir,
            cache_dir=cache / "datasets" if cache else None,
        )
    except ConfigError as exc:  # a malformed split spec
        raise ConfigError(f"--split: {exc}") from None
    progress = not args.no_progress and sys.stderr.isatty()
    try:
        result = mine_hard_negatives(
            dataset,
            args.judge,
            args.candidates,
            **settings,
            output=args.output,
            cache_dir=cache,
            dense_model=args.dense_model,
            device=args.device,
            dtype=args.dtype,
            progress=progress,
        )
    except ModelLoadError as exc:
        raise ModelLoadError(f"--judge: {exc}") from None
    except ConfigError as exc:
        if "system spec" in str(exc):
            raise ConfigError(f"--candidates: {exc}") from None
        raise
    if args.json:
        print(json.dumps(result.summary.as_dict(), indent=2))
    else:
        print("\n".join(result.summary.lines()))
    return 0
