"""Entry point of the `vertex-patterns` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from vertex_patterns import __version__
from vertex_patterns.cli import commands, cost, emulators, pipelines
from vertex_patterns.cli import health as health_cli
from vertex_patterns.cli import monitoring as monitoring_cli
from vertex_patterns.cli.parser import OneLineParser
from vertex_patterns.errors import ConfigError, VertexPatternsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The full command tree."""
    parser = OneLineParser(
        prog="vertex-patterns",
        description="Resilient, cheap production training on Vertex AI.",
    )
    parser.add_argument("--version", action="version", version=f"vertex-patterns {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    commands.add_replicate(sub)
    emulators.add_emulators(sub)
    pipelines.add_compile(sub)
    pipelines.add_run(sub)
    pipelines.add_submit(sub)
    pipelines.add_schedule(sub)
    commands.add_demo(sub)
    commands.add_checkpoints(sub)
    commands.add_train(sub)
    commands.add_launch(sub)
    cost.add_cost(sub)
    health_cli.add_health(sub)
    monitoring_cli.add_monitoring(sub)
    return parser


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Progress lines of long jobs are wanted without -v when no bar is drawn.
    logging.getLogger("vertex_patterns").setLevel(min(level, logging.INFO))
    for noisy in ("urllib3", "google", "gcp_storage_emulator"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    # A scheduler's SIGTERM ends a command the way Ctrl-C does: its own clean-up runs (temporary
    # files removed, a job cancelled), then one line and exit 130. Commands with their own
    # answer to SIGTERM (`train`, `launch`, `emulators up`) replace this handler while they run.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 1 failed, 2 bad input, 130 interrupted)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if next((a for a in args if not a.startswith("-")), None) == "train":
        # The trainer's start-up answer (76: preempted, nothing to save yet), until it
        # installs its own handler: a launcher reads 130 as a user error and would stop.
        from vertex_patterns.train import exit_during_startup

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, exit_during_startup)
        return _run(argv)
    previous = signal.signal(signal.SIGTERM, _stop_requested)
    try:
        return _run(argv)
    finally:
        if signal.getsignal(signal.SIGTERM) is _stop_requested:  # not a command's own handler
            signal.signal(signal.SIGTERM, previous)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write("vertex-patterns: interrupted\n")
        return EXIT_INTERRUPTED
    _configure_logging(args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        sys.stderr.write(f"vertex-patterns {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except VertexPatternsError as exc:
        sys.stderr.write(f"vertex-patterns {args.command}: failed: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write(f"vertex-patterns {args.command}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, the traceback only with -vv
        if args.verbose >= 2:
            raise
        sys.stderr.write(
            f"vertex-patterns {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(re-run with -vv for the traceback, and please report it)\n"
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
