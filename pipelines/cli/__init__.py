"""The ``recsys`` command line. ``recsys --help`` lists the commands; ``recsys steps`` the steps of
the nightly run.

* parser.py: the commands and their options, one function per group of commands;
* commands.py: what each command does (data in, serving answers, privacy, A/B, runs);
* tools.py: the Airflow and MLflow commands and the environment Airflow runs with.

The modules behind a command are imported when it runs, so ``recsys --help`` starts quickly.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import traceback

from pipelines.cli.parser import build_parser
from pipelines.cli.tools import airflow_env
from pipelines.config import load_config
from pipelines.infra import logs

__all__ = ["airflow_env", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every error reaches the user as one line on stderr and a non-zero exit code
    (2: the input or the state of the data root is wrong; 1: an unexpected failure, which also names
    its type); ``--debug`` or RECSYS_DEBUG=1 adds the traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logs.install()  # warnings through logging, no ANSI colour codes in any line
    debug = args.debug or os.environ.get("RECSYS_DEBUG", "") not in ("", "0")
    try:
        cfg = load_config(home=args.home or os.environ.get("RECSYS_HOME") or "var")
        args.func(args, cfg)
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `recsys show | head`
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        if debug:
            traceback.print_exc()
        print(f"recsys: error: {error_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, EXPECTED) else 1
    return 0


# Failures that mean "the input or the data root's state is wrong": the message is the whole story.
EXPECTED = (ValueError, LookupError, OSError, RuntimeError)


def error_line(exc: BaseException) -> str:
    """One line for a user: the message, with what the operator can do for the usual OS errors."""
    if isinstance(exc, PermissionError):
        return (f"permission denied: {exc.filename or exc}: the data root must be writable by the user "
                "running recsys (check the owner and mode of that path)")
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename} is a directory; give a file path"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"no space left on the device writing {exc.filename or 'the data root'}; free space and rerun"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, EXPECTED):
        text = f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"
    return text if len(text) <= 2000 else text[:2000] + " ..."
