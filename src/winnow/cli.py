"""The ``winnow`` command line. Each command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Modules that add commands (kept light: they import heavy things only when a command runs).
COMMAND_MODULES: tuple[str, ...] = (
    "winnow.rerankers.commands",
    "winnow.data.commands",
    "winnow.server.commands",
    "winnow.evaluation.commands",
    "winnow.training.mine_commands",
    "winnow.evaluation.tune",
    "winnow.training.train_commands",
    "winnow.distributed.commands",
    "winnow.integrations.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from winnow import __version__

    parser = argparse.ArgumentParser(
        prog="winnow",
        description="Retrieval and reranking: evaluate pipelines, rerank runs, serve rerankers.",
    )
    parser.add_argument("--version", action="version", version=f"winnow {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def quiet_hub_progress() -> None:
    """No Hugging Face progress bars ("Loading weights", downloads) in this process.

    transformers and huggingface_hub read ``HF_HUB_DISABLE_PROGRESS_BARS`` when imported, which a
    command does later; when they are imported already, their switches are turned off directly.
    winnow's own bars follow ``--no-progress`` / the terminal check in each command.
    """
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    configure = not logging.getLogger().handlers
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if configure:  # filter at the handler too: bm25s sets its own logger to DEBUG
        for handler in logging.getLogger().handlers:
            handler.setLevel(level)
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        quiet_hub_progress()
    from winnow.errors import WinnowError

    try:
        return int(args.func(args) or 0)
    except WinnowError as exc:
        print(f"winnow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `winnow score ... | head`: the reader left; say nothing, as cat does
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by the pipe
    except OSError as exc:  # a file or folder the command was given (the message names it)
        print(f"winnow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
