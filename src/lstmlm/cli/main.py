"""`lstmlm`: the command line, the only place that prints.

Each subcommand is one module of this package with its parser and its handler together
(`add_parser(sub)` registers it, `run(args)` does the work); this module only registers
them and turns errors into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from lstmlm import __version__
from lstmlm.cli import (
    compare,
    download,
    evaluate,
    finetune,
    generate,
    plot,
    presets,
    serve,
    train,
)
from lstmlm.cli.flags import Parser
from lstmlm.config import FieldError

COMMANDS = (train, evaluate, generate, finetune, presets, download, serve, plot, compare)


def build_parser() -> argparse.ArgumentParser:
    # Every option says what it does; one whose default a user needs to know ends with
    # "(default: ...)", from %(default)s where the value itself is the answer.
    p = Parser(prog="lstmlm", description="Train, evaluate and sample LSTM/GRU language models.")
    p.add_argument("--version", action="version", version=f"lstmlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes, not the stream of the first
    call (main() may run many times in one process, under a changed or closed stderr)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _show_library_warnings() -> None:
    """The library logs (never prints); the command shows its warnings as one line each."""
    logger = logging.getLogger("lstmlm")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("lstmlm: warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_library_warnings()
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # train --nproc re-runs it
    try:
        return args.func(args)
    except FieldError as e:  # a value out of range, named by the flag that sets it
        print(f"lstmlm: error: {e.as_flag()}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"lstmlm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"lstmlm: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from lstmlm.training.interrupt import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            if e.rank != 0:  # one line from a multi-process run: rank 0's
                return e.exit_status
            how = "" if e.signum == signal.SIGINT else f" ({signal.Signals(e.signum).name})"
            print(
                f"lstmlm: interrupted{how} at step {e.step}; saved "
                f"{e.run_dir / 'last.safetensors'}; continue with: {e.resume_command}",
                file=sys.stderr,
            )
            return e.exit_status
        print("lstmlm: interrupted", file=sys.stderr)
        return 130
