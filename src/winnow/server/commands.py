"""``winnow serve``: run the reranking server (settings from flags, then ``WINNOW_*`` variables)."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from winnow.server.config import settings

    table = settings()
    width = max(len(s.env) for s in table)
    flag_width = max(len(s.flag) for s in table)
    lines = [
        f"  {s.env:<{width}}  {s.flag:<{flag_width}}  {s.type_name:<9} {s.default_text()}"
        for s in table
    ]
    p = sub.add_parser(
        "serve",
        help="serve rerankers over HTTP (Cohere/Jina /v1/rerank and TEI /rerank APIs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve rerankers over HTTP. Every setting is a flag and a WINNOW_* environment\n"
            "variable (read once at start; flags win; lists are comma-separated in a variable,\n"
            "booleans 1/0, true/false, yes/no). Needs pip install 'winnow[server]'.\n\n"
            "A model is [ALIAS=][KIND:]MODEL[?KEY=VALUE&...], e.g.\n"
            "  --model gemma=llm-pointwise:BAAI/bge-reranker-v2-gemma?template=bge-gemma\n"
            "KEY is an option of the kind (or device, dtype, max_length, activation); values are\n"
            "percent-decoded (%20 space, %26 &, %2C comma). See docs/server.md."
        ),
        epilog="environment variables:\n"
        + f"  {'variable':<{width}}  {'flag':<{flag_width}}  {'type':<9} default\n"
        + "\n".join(lines),
    )
    for s in table:
        kwargs: dict = {"dest": s.name, "default": None}
        help_text = f"{s.help} (env {s.env}; default: {s.default_text()})"
        if s.repeatable:
            kwargs["action"] = "append"
            help_text = f"{s.help}; repeatable (env {s.env}, comma-separated; default: " + (
                f"{s.default_text()})"
            )
        elif s.item_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        if s.item_type is not bool or s.repeatable:
            kwargs["type"] = _flag_type(s)
            kwargs["metavar"] = _metavar(s)
        p.add_argument(s.flag, help=help_text.replace("%", "%%"), **kwargs)
    p.set_defaults(func=run)


def _metavar(s) -> str:
    from winnow.server.config import ModelSpec

    if s.item_type is ModelSpec:
        return "[ALIAS=][KIND:]MODEL[?KEY=VALUE&...]"
    return {int: "N", float: "X", bool: None}.get(s.item_type, s.flag[2:].upper().replace("-", "_"))


def _flag_type(s):
    """argparse type of one flag value: the setting's own conversion, errors naming the flag."""
    from winnow.errors import ConfigError

    def convert(text: str):
        try:
            return s.parse_one(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: {exc}") from None

    convert.__name__ = s.type_name
    return convert


def build_config(args: argparse.Namespace, environ: dict[str, str]):
    """ServerConfig from ``WINNOW_*`` variables, overridden by the flags that were given."""
    from winnow.errors import ConfigError
    from winnow.server.config import ServerConfig, settings

    # every setting of ServerConfig has a flag (dest = the field's name; None when not given)
    names = [s.name for s in settings()]
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
