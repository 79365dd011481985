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
    p.add_argument(
        "--model",
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


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from winnow.errors import ConfigError
    from winnow.rerankers.loading import load_model_ref
    from winnow.rerankers.registry import parse_model_ref

    ref = parse_model_ref(args.model)
    if args.kind:
        if ref.kind is not None and ref.kind != args.kind:
            raise ConfigError(f"--kind {args.kind} contradicts the kind in --model {args.model!r}")
        ref = replace(ref, kind=args.kind)
    docs = args.documents or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    reranker = load_model_ref(ref, device=args.device, dtype=args.dtype)
    hits = reranker.rank(args.query, docs, top_k=args.top_k)
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=2))
    else:
        for h in hits:
            print(f"{h.rank:>4}  {h.score:>10.4f}  [{h.index}] {h.document[:100]}")
    return 0
