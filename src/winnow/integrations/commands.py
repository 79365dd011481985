"""``winnow mcp``: serve rerankers (and search over a collection) as MCP tools over stdio or HTTP."""

from __future__ import annotations

import argparse

from winnow.defaults import DEFAULT_MODEL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve rerankers (and search over a collection) as MCP tools (stdio or HTTP)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve winnow over the Model Context Protocol: a 'rerank' tool for every --model and,\n"
            "with --dataset, a 'search' tool running --system over that collection. Models load\n"
            "and the collection is indexed before the server accepts a client. stdio (the default)\n"
            "is what desktop MCP clients start; --transport http serves streamable HTTP at\n"
            "http://HOST:PORT/mcp. Needs pip install 'winnow[mcp]'. See docs/api.md."
        ),
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[ALIAS=][KIND:]MODEL[?KEY=VALUE&...]",
        help="a reranker to serve; repeatable (the first is the default); "
        f"default {DEFAULT_MODEL} when no --dataset is given",
    )
    p.add_argument("--dataset", help="a collection (name or folder) for the search tool")
    p.add_argument(
        "--system",
        default="bm25",
        help="the pipeline the search tool runs (a system spec, e.g. 'bm25 %% 100 >> rerank'; "
        "default bm25)",
    )
    p.add_argument("--data-dir", help="folders holding datasets by name (default $WINNOW_DATA)")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.set_defaults(func=run)


def _models(specs: list[str], device: str | None) -> dict:
    from winnow.errors import ConfigError
    from winnow.rerankers.loading import load_spec

    out = {}
    for spec in specs:
        alias, sep, rest = spec.partition("=")
        if not sep or "/" in alias or ":" in alias or "?" in alias:
            alias, rest = "", spec
        reranker = load_spec(rest, device=device)
        name = alias or rest
        if name in out:
            raise ConfigError(f"--model {spec!r}: the name {name!r} is given twice")
        out[name] = reranker
    return out


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from winnow.errors import require

    require("mcp", "mcp")
    from winnow.integrations.mcp import build_server, run_http

    specs = args.model or ([] if args.dataset else [DEFAULT_MODEL])
    models = _models(specs, args.device)
    pipeline = None
    if args.dataset:
        from winnow.pipeline.bound import BoundPipeline
        from winnow.pipeline.spec import SpecOptions, parse_system

        options = SpecOptions(device=args.device)
        data_dir = args.data_dir or os.environ.get("WINNOW_DATA")
        pipeline = BoundPipeline(
            parse_system(args.system, options), args.dataset, data_dir=data_dir
        )
    server = build_server(models, pipeline=pipeline)
    # stderr: on stdio, stdout carries the protocol
    print(
        f"winnow mcp: ready ({args.transport}): {', '.join(models) or 'search only'}",
        file=sys.stderr,
    )
    if args.transport == "stdio":
        server.run("stdio")
    else:
        run_http(server, args.host, args.port)
    return 0
