"""Options and helpers shared by the commands that read a collection (``eval``, ``rerank``,
``tune``): the dataset, its cache, device and dtype, the rerank depth, progress and the engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from winnow.defaults import DEFAULT_MODEL as DEFAULT_DENSE

DEFAULT_CACHE = "~/.cache/winnow"


def data_dir_argument(p: argparse.ArgumentParser, data_dir: str | None) -> None:
    """``--data-dir``, defaulting to ``data_dir`` (``$WINNOW_DATA``), shown in the help."""
    p.add_argument(
        "--data-dir",
        default=data_dir,
        help="folder holding collections by name (default: $WINNOW_DATA"
        + (f" = {data_dir})" if data_dir else ", unset)"),
    )


def collection_arguments(p: argparse.ArgumentParser, data_dir: str | None) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="collection name (looked up in --data-dir, or a BEIR name to download) or a BEIR folder",
    )
    data_dir_argument(p, data_dir)
    p.add_argument(
        "--split",
        default="test",
        help="qrels split, or a split spec such as test@0.6:seed0 (the test part of a seeded "
        "60/40 split of the judged queries; see 'winnow data split') (default: test)",
    )
    p.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE,
        help=f"where indexes, embeddings and rerank scores are kept (default: {DEFAULT_CACHE})",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (best available if omitted)")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16, int8 (auto if omitted)"
    )
    p.add_argument(
        "--depth",
        type=int,
        default=100,
        help="documents per query a reranker re-scores (default: 100)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from winnow.distributed.commands import add_engine_arguments

    add_engine_arguments(p)


def progress_wanted(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def cache_folder(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else Path(args.cache_dir).expanduser()


def load_collection(args: argparse.Namespace):
    from winnow.data import load_dataset

    if "://" in args.dataset:  # a BEIR folder at a URL: read by Daft (winnow[distributed])
        from winnow.distributed.io import load_dataset_url

        return load_dataset_url(args.dataset, args.split)
    cache = cache_folder(args)
    return load_dataset(
        args.dataset,
        split=args.split,
        data_dir=args.data_dir,
        cache_dir=cache / "datasets" if cache else None,
    )


def spec_options(args: argparse.Namespace, reranker: str):
    from winnow.errors import ConfigError
    from winnow.pipeline.spec import SpecOptions

    if args.depth < 1:
        raise ConfigError(f"--depth must be >= 1, got {args.depth}")
    return SpecOptions(
        reranker=reranker,
        depth=args.depth,
        dense_model=getattr(args, "dense_model", DEFAULT_DENSE),
        device=args.device,
        dtype=args.dtype,
        progress=progress_wanted(args),
    )
