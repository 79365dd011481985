"""``winnow serve``: run the reranking server (settings from flags, then ``WINNOW_*`` variables)."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve rerankers over HTTP (Cohere/Jina /v1/rerank and TEI /rerank APIs)",
        description=(
            "Serve rerankers over HTTP. Every flag can also be set with a WINNOW_* environment "
            "variable (WINNOW_MODELS comma-separated, WINNOW_HOST, WINNOW_PORT, WINNOW_API_KEY, "
            "WINNOW_MAX_DOCUMENTS, ...); flags win. Needs pip install 'winnow[server]'."
        ),
    )
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="[ALIAS=][KIND:]MODEL",
        help="model to serve (repeatable; the first is the default). ALIAS is the name clients "
        "use; KIND is cross-encoder, bi-encoder, ... (inferred when omitted)",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' (not on /health); surrounding whitespace is "
        "stripped, and an empty key is an error (it would turn auth off)",
    )
    p.add_argument("--device", help="cpu, cuda, mps (best available if omitted)")
    p.add_argument(
        "--device-fallback",
        action="store_const",
        const=True,
        help="when --device cuda is asked for and CUDA is absent, load on the CPU (with a warning, "
        "and flagged in /ready) instead of failing",
    )
    p.add_argument("--dtype", help="float32, bfloat16, float16, int8 (auto if omitted)")
    p.add_argument("--max-length", type=int, help="longest input in tokens (model's own limit)")
    p.add_argument("--max-documents", type=int, help="documents per request (default 1000)")
    p.add_argument("--max-document-chars", type=int, help="characters per document (100000)")
    p.add_argument("--max-query-chars", type=int, help="characters per query (10000)")
    p.add_argument("--max-body-bytes", type=int, help="request body size (16 MiB)")
    p.add_argument("--max-chunks-per-doc", type=int, help="most windows a request may ask for (64)")
    p.add_argument("--max-batch-pairs", type=int, help="pairs per model call (512)")
    p.add_argument("--max-wait-ms", type=float, help="batching wait in milliseconds (3)")
    p.add_argument("--max-queue", type=int, help="requests waiting per model before 429 (256)")
    p.add_argument(
        "--graceful-timeout",
        type=float,
        help="seconds after SIGTERM to finish in-flight requests (30); requests still waiting "
        "then get 503 shutting_down and the server exits",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        help="allow browser requests from this origin (repeatable; CORS is off by default)",
    )
    p.add_argument("--log-level", help="uvicorn log level (info)")
    p.add_argument("--load-retries", type=int, help="more tries of a model load that failed (2)")
    p.add_argument(
        "--load-backoff",
        type=float,
        help="seconds before the first retry of a failed load, doubling each time (1)",
    )
    p.add_argument(
        "--ready-when",
        choices=("all", "any"),
        help="/ready is 200 when all models are ready (default), or when any is and none loads",
    )
    p.add_argument(
        "--fallback",
        action="append",
        dest="fallbacks",
        metavar="NAME=[KIND:]MODEL",
        help="model to serve as NAME when NAME's own fails to load or runs out of device memory "
        "(repeatable; WINNOW_FALLBACKS comma-separated)",
    )
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace, environ: dict[str, str]):
    """ServerConfig from ``WINNOW_*`` variables, overridden by the flags that were given."""
    from dataclasses import fields

    from winnow.errors import ConfigError
    from winnow.server.config import ServerConfig

    # every setting of ServerConfig has a flag of the same name (None when not given)
    names = [f.name for f in fields(ServerConfig)]
    config = ServerConfig.from_env(environ, **{n: getattr(args, n, None) for n in names})
    if not config.models:
        raise ConfigError("no model to serve: give --model MODEL or set WINNOW_MODELS")
    return config


def run(args: argparse.Namespace) -> int:
    from winnow.server import require_server_extra

    require_server_extra()
    from winnow.server.app import create_app
    from winnow.server.lifecycle import GracefulServer, uvicorn_config

    config = build_config(args, dict(os.environ))
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning("serving on %s without an API key (--api-key)", config.host)
    app = create_app(config)
    server = GracefulServer(
        uvicorn_config(
            app,
            config.graceful_timeout,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
        )
    )
    nothing_loaded: list[str] = []
    threading.Thread(
        target=_stop_if_no_model_loads, args=(server, app, nothing_loaded), daemon=True
    ).start()
    server.run()
    if nothing_loaded:
        from winnow.errors import ModelLoadError

        raise ModelLoadError("no model could be loaded: " + "; ".join(nothing_loaded))
    return 0


def _stop_if_no_model_loads(server, app, reasons: list[str]) -> None:
    """Stop the server when every model failed to load: it could answer nothing but errors.

    One model that loads is enough to keep serving (the failed ones are reported on ``/ready``).
    Fills ``reasons`` with ``name: error`` for each model when it stops the server.
    """
    from winnow.server.batcher import FAILED, READY

    batchers = app.state.server.batchers
    while not server.should_exit:
        states = [b.state for b in batchers.values()]
        if any(state == READY for state in states):
            return
        if states and all(state == FAILED for state in states):
            reasons.extend(f"{name}: {b.error}" for name, b in batchers.items())
            logger.error("no model could be loaded; stopping the server")
            server.should_exit = True
            return
        time.sleep(0.1)
