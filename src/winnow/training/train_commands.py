"""``winnow train bi-encoder`` / ``winnow train cross-encoder``: fine-tune on a mined file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading

from winnow._collection_args import data_dir_argument


def _common(p: argparse.ArgumentParser, data_dir: str | None, batch_size: int) -> None:
    p.add_argument("--data", required=True, help="mined file (.jsonl or .parquet; see winnow mine)")
    p.add_argument("--model", required=True, help="base model: hub id or local folder")
    p.add_argument("--output", required=True, help="model folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (default: 1)")
    p.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"rows per step (default: {batch_size})"
    )
    p.add_argument(
        "--learning-rate", type=float, default=2e-5, help="peak learning rate (default: 2e-5)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--max-length", type=int, default=None, help="longest input in tokens (default: model's)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument(
        "--dev",
        default=None,
        help="evaluate after each epoch and keep the best: a split spec of --dataset (e.g. "
        "dev@0.6/0.2) or a mined file (its loss)",
    )
    p.add_argument("--dataset", default=None, help="collection the --dev split spec refers to")
    data_dir_argument(p, data_dir)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    data_dir = os.environ.get("WINNOW_DATA") or None  # read once, at CLI start
    from winnow.training.guidance import PRESETS

    p = sub.add_parser(
        "train",
        help="fine-tune a bi-encoder or cross-encoder on a mined file",
        description="Fine-tune a model on a mined file. The output folder loads with "
        "winnow.load_reranker(DIR), dense:DIR (bi-encoders) and rerank:DIR.",
    )
    kinds = p.add_subparsers(dest="train_kind", metavar="KIND", required=True)
    bi = kinds.add_parser(
        "bi-encoder",
        help="an embedding model (guided GIST, GIST or MNRL loss)",
        description="Fine-tune a sentence-transformers embedding model with in-batch negatives.",
    )
    _common(bi, data_dir, batch_size=32)
    bi.add_argument(
        "--loss",
        choices=("guided", "gist", "mnrl"),
        default="guided",
        help="guided: GISTEmbed guided by the --guide reranker (any kind); gist: GISTEmbed with a "
        "bi-encoder --guide; mnrl: MultipleNegativesRankingLoss (default: guided)",
    )
    bi.add_argument(
        "--guide", default=None, help="[KIND:]MODEL of the guide (needed by guided and gist)"
    )
    bi.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="balanced",
        help="how many in-batch pairs the guided loss sends to the guide (default: balanced; "
        "unfiltered: all of them)",
    )
    bi.add_argument(
        "--mini-batch-size",
        type=int,
        default=None,
        help="gradient caching with mini-batches of this size (large batches in little memory)",
    )
    bi.add_argument(
        "--guide-cache", default=None, help="SQLite file keeping guide scores across runs"
    )
    bi.add_argument(
        "--guide-max-length", type=int, default=None, help="longest guide input in tokens"
    )
    bi.add_argument(
        "--guide-dtype",
        default=None,
        help="guide dtype: float32, bfloat16 (faster on recent CPUs), float16, int8 (default: auto)",
    )
    bi.add_argument(
        "--no-contrast-anchors",
        action="store_true",
        help="guided/gist: leave out the anchor-anchor block",
    )
    bi.add_argument(
        "--no-contrast-positives",
        action="store_true",
        help="guided/gist: leave out the positive-positive block",
    )
    bi.set_defaults(func=run_bi_encoder)
    ce = kinds.add_parser(
        "cross-encoder",
        help="a reranker with one relevance logit (BCE, LambdaLoss or MNRL)",
        description="Fine-tune a cross-encoder; a bi-encoder base gets a fresh one-logit head.",
    )
    _common(ce, data_dir, batch_size=16)
    ce.add_argument(
        "--loss",
        choices=("bce", "lambda", "mnrl"),
        default="bce",
        help="bce: binary cross-entropy on labelled pairs; lambda: LambdaLoss on each query's "
        "list; mnrl: MultipleNegativesRankingLoss on tuples (default: bce)",
    )
    ce.set_defaults(func=run_cross_encoder)


def _shared(args: argparse.Namespace) -> dict:
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "max_length": args.max_length,
        "max_steps": args.max_steps,
        "dev": args.dev,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "progress": False if args.no_progress else None,
        "overwrite": args.overwrite,
    }


def _report(result, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(
        f"trained {result.loss} for {result.steps} steps in {result.seconds:.1f} s: {result.output}"
    )
    if result.guide:
        g = result.guide
        print(
            f"guide: {g['reranker_calls']} reranker calls, {g['cache_hits']} cache hits "
            f"(unfiltered: {g['unfiltered_pairs']} pairs) over {g['batches']} batches"
        )
    if result.best_metric is not None:
        print(f"best dev score: {result.best_metric:.4f}")
    return 0


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (kill, schedulers) raises KeyboardInterrupt, so the temporary folder is removed and
    the command exits 130 as on Ctrl-C, instead of dying with the folder left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_bi_encoder(args: argparse.Namespace) -> int:
    from winnow.training.trainer import train_bi_encoder

    guide_options = {}
    if args.loss in ("guided", "gist"):
        guide_options["contrast_anchors"] = not args.no_contrast_anchors
        guide_options["contrast_positives"] = not args.no_contrast_positives
    if args.guide_cache and args.loss == "guided":
        from winnow.training.guidance import GuideScoreCache

        guide_options["cache"] = GuideScoreCache(path=args.guide_cache)
    with _sigterm_interrupts():
        result = train_bi_encoder(
            args.data,
            args.model,
            args.output,
            loss=args.loss,
            guide=args.guide,
            preset=args.preset,
            guide_options=guide_options,
            guide_max_length=args.guide_max_length,
            guide_dtype=args.guide_dtype,
            mini_batch_size=args.mini_batch_size,
            **_shared(args),
        )
    return _report(result, args.json)


def run_cross_encoder(args: argparse.Namespace) -> int:
    from winnow.training.trainer import train_cross_encoder

    with _sigterm_interrupts():
        result = train_cross_encoder(
            args.data, args.model, args.output, loss=args.loss, **_shared(args)
        )
    return _report(result, args.json)
