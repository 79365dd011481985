"""``winnow score``: rerank documents for a query from the command line (a quick look at a model)."""

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
    p.add_argument("--model", required=True, help="hub id or local model folder")
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
    from winnow import load_reranker
    from winnow.errors import ConfigError, InputError

    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
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
    reranker = load_reranker(args.model, args.kind, device=args.device, dtype=args.dtype)
    hits = reranker.rank(query, docs, top_k=args.top_k)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
    else:
        for h in hits:
            print(f"{h.rank:>4}  {h.score:>10.4f}  [{h.index}] {h.document[:100]}")
    return 0
