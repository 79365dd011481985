"""``winnow score-pairs`` and ``winnow encode``: batch jobs over Parquet / JSON-lines tables, and
the ``--engine`` options that ``winnow eval`` and ``winnow rerank`` share (nothing here imports
daft until a command runs)."""

from __future__ import annotations

import argparse
import sys
import time

ENGINES = ("local", "daft")


def add_engine_arguments(p: argparse.ArgumentParser, default: str = "local") -> None:
    """``--engine``, ``--workers``, ``--gpus-per-worker``, ``--ray-address``, ``--batch-size``."""
    g = p.add_argument_group("engine (docs/distributed.md)")
    g.add_argument(
        "--engine",
        choices=ENGINES,
        default=default,
        help=f"where the heavy stages run: local (in this process) or daft (Daft jobs, one "
        f"model per worker; needs winnow[distributed]) (default: {default})",
    )
    g.add_argument(
        "--workers", type=int, default=1, help="--engine daft: model workers (default: 1)"
    )
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="--engine daft: GPUs each worker asks for (default: 0; with a GPU and no --device, "
        "the model runs on cuda)",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="--engine daft: run on Ray: local (a Ray instance on this machine), auto, or a "
        "cluster address such as ray://head:10001 (needs winnow[ray])",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="--engine daft: rows per worker call (default: 1024)",
    )


def engine_options(args: argparse.Namespace):
    """The :class:`EngineOptions` of the parsed arguments (None for ``--engine local``).

    ``--gpus-per-worker`` without ``--device`` sets the device to ``cuda``."""
    from winnow.errors import ConfigError

    if args.engine == "local":
        given = [
            flag
            for flag, value, default in (
                ("--workers", args.workers, 1),
                ("--gpus-per-worker", args.gpus_per_worker, 0.0),
                ("--ray-address", args.ray_address, None),
            )
            if value != default
        ]
        if given:
            raise ConfigError(f"{', '.join(given)} need --engine daft")
        return None
    from winnow.distributed.engine import EngineOptions

    if args.gpus_per_worker > 0 and getattr(args, "device", None) is None:
        args.device = "cuda"
    return EngineOptions(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        ray_address=args.ray_address,
        batch_size=args.batch_size,
    )


def _io_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--input",
        required=True,
        help=f"{what}: a Parquet or JSON-lines file, folder or URL (http(s)://, s3://, gs://)",
    )
    p.add_argument(
        "--output",
        required=True,
        help="folder of Parquet (*.parquet) or JSON-lines (*.jsonl) part files, replaced "
        "atomically when local",
    )
    p.add_argument(
        "--format", default=None, help="input format when its name does not say: parquet, jsonl"
    )
    p.add_argument("--model", required=True, metavar="[KIND:]MODEL[?KEY=VALUE&...]")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (best available if omitted)")
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16, int8 (auto if omitted)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score-pairs",
        help="score a table of (query, document) pairs with a reranker (Daft job)",
        description="Read a table with query_id, doc_id, query, text columns (other columns are "
        "kept), score every pair with --model (one model per worker) and write the table with "
        "score (float32), truncated and num_tokens added. With --engine local the same "
        "reranker scores the whole table in this process.",
    )
    _io_arguments(p, "pairs (query_id, doc_id, query, text)")
    add_engine_arguments(p, default="daft")
    p.set_defaults(func=run_score_pairs)

    e = sub.add_parser(
        "encode",
        help="embed a corpus with a bi-encoder and write (doc_id, embedding) Parquet (Daft job)",
        description="Read a corpus table (BEIR corpus.jsonl: _id, title, text; or doc_id, text) "
        "and write doc_id and embedding (float32, L2-normalised; title + ' ' + text as dense "
        "retrieval embeds it). --model is a bi-encoder (sentence-transformers model).",
    )
    _io_arguments(e, "corpus (_id or doc_id, text, optional title)")
    add_engine_arguments(e, default="daft")
    e.set_defaults(func=run_encode)


def _model(args: argparse.Namespace, kind: str | None = None):
    from dataclasses import replace

    from winnow.rerankers.loading import load_model_ref
    from winnow.rerankers.registry import parse_model_ref

    ref = parse_model_ref(args.model)
    if kind is not None and ref.kind is None:
        ref = replace(ref, kind=kind)
    return load_model_ref(ref, device=args.device, dtype=args.dtype)


def _run_table(args: argparse.Namespace, load, local, job: str, done: str) -> int:
    """Read ``--input``, run it with the model ``load()`` gives through ``local`` (in this
    process) or the Daft ``job`` of ``winnow.distributed.jobs``, write ``--output``."""
    from winnow.distributed import jobs
    from winnow.distributed.io import read_table, write_table

    engine = engine_options(args)  # bad engine flags are named before any model is resolved
    model = load()
    df = read_table(args.input, args.format)
    started = time.perf_counter()
    df = local(df, model) if engine is None else getattr(jobs, job)(df, model, engine)
    out = write_table(df, args.output)
    print(f"{done} in {time.perf_counter() - started:.2f}s; wrote {out}", file=sys.stderr)
    return 0


def run_score_pairs(args: argparse.Namespace) -> int:
    return _run_table(
        args, lambda: _model(args), _score_in_process, "score_pairs_job", "scored pairs"
    )


def _score_in_process(df, reranker):
    """The local engine: the whole table through the workers' own code, in this process."""
    import daft
    import pyarrow as pa

    from winnow import __version__
    from winnow.distributed.jobs import PAIR_COLUMNS, PairScorer, _missing

    _missing(df, PAIR_COLUMNS, "pairs")
    table = df.to_arrow()
    rows = pa.array(range(table.num_rows), pa.uint64())
    scored = PairScorer(reranker, __version__, None, False)(
        rows, *(table.column(c).combine_chunks() for c in PAIR_COLUMNS)
    )
    keep = [c for c in table.column_names if c not in ("score", "truncated", "num_tokens")]
    out = table.select(keep)
    for name in ("score", "truncated", "num_tokens"):
        out = out.append_column(name, scored.field(name))
    return daft.from_arrow(out)


def run_encode(args: argparse.Namespace) -> int:
    load = lambda: _model(args, kind="bi-encoder")  # noqa: E731
    return _run_table(args, load, _encode_in_process, "encode_job", "encoded")


def _encode_in_process(df, encoder):
    """The local engine: the whole corpus through the workers' own code, in this process."""
    import daft
    import pyarrow as pa
    from daft import DataType, col

    from winnow import __version__
    from winnow.distributed.jobs import TextEncoder, _missing

    if "doc_id" not in df.column_names and "_id" in df.column_names:
        df = df.with_column_renamed("_id", "doc_id")
    _missing(df, ("doc_id", "text"), "corpus")
    table = df.to_arrow()
    n = table.num_rows
    title = (
        table.column("title").combine_chunks()
        if "title" in table.column_names
        else pa.nulls(n, pa.string())
    )
    emb = TextEncoder(encoder, __version__, None)(
        pa.array(range(n), pa.uint64()),
        table.column("doc_id").combine_chunks(),
        title,
        table.column("text").combine_chunks(),
    )
    dim = int(emb.shape[1]) if emb.ndim == 2 else int(encoder.dimension)
    out = daft.from_pydict({"doc_id": table.column("doc_id"), "embedding": list(emb)})
    return out.with_column(
        "embedding", col("embedding").cast(DataType.embedding(DataType.float32(), dim))
    )
