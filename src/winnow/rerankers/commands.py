"""``winnow score`` (rerank documents for a query) and ``winnow info`` (what a model is): a quick look
at a model from the command line."""

from __future__ import annotations

import argparse
import json
import sys


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
