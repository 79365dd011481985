"""``winnow score`` (rerank documents for a query), ``winnow rerank`` (re-score a TREC run over a
collection) and ``winnow info`` (what a model is): a reranker from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from winnow._collection_args import (
    cache_folder,
    collection_arguments,
    load_collection,
    progress_wanted,
    spec_options,
)
from winnow.defaults import DEFAULT_RERANKER

#: ``winnow.rerankers.chunking.AGGREGATIONS`` (written out: the parser must not import numpy;
#: a test keeps the two equal)
AGGREGATIONS = ("max", "first", "mean", "kmax")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="rerank documents for one query with a model and print the ranking",
        description="Rerank documents (arguments, or one per line on stdin) for QUERY.",
    )
    p.add_argument(
        "--model",
        "--reranker",
        dest="model",
        required=True,
        metavar="[KIND:]MODEL[?KEY=VALUE&...]",
        help="hub id or local model folder, optionally with its kind and the kind's options, "
        "e.g. llm:BAAI/bge-reranker-v2-gemma?template=bge-gemma (see docs/llm.md)",
    )
    p.add_argument(
        "--kind", default=None, help="reranker kind (inferred from the model if omitted)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, mps (best available if omitted)")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16, int8 (auto if omitted)"
    )
    p.add_argument("--top-k", type=int, default=None, help="print only the best K documents")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("query")
    p.add_argument(
        "documents", nargs="*", help="documents (read from stdin, one per line, if none)"
    )
    p.set_defaults(func=run)
    register_rerank(sub)
    register_info(sub)


def _check_text(text: str, where: str) -> str:
    """Refuse text holding a lone surrogate: what Python makes of bytes that are not UTF-8 in
    arguments and on stdin (``surrogateescape``); the tokenizers would fail on it."""
    from winnow.errors import InputError

    bad = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        code = ord(text[bad])
        what = (
            f"byte {code - 0xDC00:#04x}"
            if 0xDC80 <= code <= 0xDCFF
            else f"lone surrogate U+{code:04X}"
        )
        raise InputError(f"{where} is not valid UTF-8 ({what} at character {bad})")
    return text


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from winnow.errors import ConfigError, InputError
    from winnow.rerankers.loading import load_model_ref
    from winnow.rerankers.registry import parse_model_ref

    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    ref = parse_model_ref(args.model)
    if args.kind:
        if ref.kind is not None and ref.kind != args.kind:
            raise ConfigError(f"--kind {args.kind} contradicts the kind in --model {args.model!r}")
        ref = replace(ref, kind=args.kind)
    query = _check_text(args.query, "QUERY")
    if args.documents:
        docs = [_check_text(d, f"document argument {i}") for i, d in enumerate(args.documents, 1)]
    else:
        docs = [
            _check_text(line.rstrip("\r\n"), f"stdin line {number}")
            for number, line in enumerate(sys.stdin, 1)
            if line.strip()
        ]
    if not docs:
        raise InputError("no documents to rank: give them as arguments or one per line on stdin")
    reranker = load_model_ref(ref, device=args.device, dtype=args.dtype)
    hits = reranker.rank(query, docs, top_k=args.top_k)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
    else:
        for h in hits:
            print(f"{h.rank:>4}  {h.score:>10.4f}  [{h.index}] {h.document[:100]}")
    return 0


def register_rerank(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "rerank",
        help="rerank a TREC run file with a model and write the reranked run",
        description="Re-score the top --depth documents of every query of a TREC run (documents "
        "below keep their order underneath) and write a TREC run.",
    )
    collection_arguments(r, os.environ.get("WINNOW_DATA") or None)  # read once, at CLI start
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


def check_output_file(output: str) -> None:
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
    check_output_file(args.output)
    if "://" in args.run:  # read by Daft (winnow[distributed])
        from winnow.distributed.io import read_run_table

        run = read_run_table(args.run)
    else:
        run = read_run(args.run)
    if not run:
        raise DatasetError("the run file holds no lines: nothing to rerank", args.run)
    dataset = load_collection(args)
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
    options = spec_options(args, args.model)
    reranker = options.load(args.model)
    if args.chunked:
        stage = ChunkedRerank(reranker, args.window, args.stride, args.aggregate, depth=args.depth)
    elif engine is not None:
        from winnow.distributed.stages import DaftRerank

        stage = DaftRerank(reranker, depth=args.depth, engine=engine)
    else:
        stage = Rerank(reranker, depth=args.depth)
    ctx = Context(dataset, cache_dir=cache_folder(args), progress=progress_wanted(args))
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


def register_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="load a model and print its architecture, size and settings",
        description=(
            "Load MODEL through winnow.load_reranker (on the CPU unless --device says otherwise) and "
            "print its architecture, layers, hidden size, attention heads, parameters, vocabulary, "
            "max positions, dtype, device, kind and path (what /v1/models of winnow serve shows). "
            "Fields a backend cannot tell (an Ollama model) print as unknown."
        ),
    )
    p.add_argument(
        "model",
        help="hub id, local model folder, a model spec (KIND:MODEL?KEY=VALUE, e.g. "
        "colbert:MODEL), or an Ollama model (--backend ollama)",
    )
    p.add_argument(
        "--kind", default=None, help="reranker kind (inferred from the model if omitted)"
    )
    p.add_argument("--device", default="cpu", help="device to load on (default cpu)")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16, int8 (auto if omitted)"
    )
    p.add_argument(
        "--backend", default=None, help="llm kinds: hf (default) or ollama (needs --kind)"
    )
    p.add_argument("--ollama-url", default=None, help="Ollama server (default 127.0.0.1:11434)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from winnow import load_reranker
    from winnow.rerankers.info import INFO_FIELDS

    options = {}
    if args.backend is not None:
        options["backend"] = args.backend
    if args.ollama_url is not None:
        options["ollama_url"] = args.ollama_url
    from winnow.rerankers.loading import load_model_ref
    from winnow.rerankers.registry import KIND_ALIASES, parse_model_ref

    kind = KIND_ALIASES.get(args.kind) or args.kind
    ref = parse_model_ref(args.model)
    if kind is None and not options and (ref.kind is not None or ref.options):
        # a model spec (colbert:MODEL, KIND:MODEL?KEY=VALUE) as every other command takes
        reranker = load_model_ref(ref, device=args.device, dtype=args.dtype)
    else:
        reranker = load_reranker(args.model, kind, device=args.device, dtype=args.dtype, **options)
    info = reranker.info(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [(k, "unknown" if info[k] is None else _readable(k, info[k])) for k in INFO_FIELDS]
    rows += [(k, str(v)) for k, v in info.items() if k not in INFO_FIELDS and v is not None]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is optional: plain aligned text
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k.ljust(width)}  {v}")
        return 0
    table = Table(title=str(args.model), title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    Console(width=max(80, max(len(v) for _, v in rows) + 30)).print(table)
    return 0


def _readable(field: str, value) -> str:
    if field == "model_bytes":
        return f"{value} ({value / 2**20:.1f} MiB)"
    if field == "parameters":
        return f"{value:,}"
    return str(value)
