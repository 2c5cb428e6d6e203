"""The ``recsys`` command line. ``recsys --help`` lists the commands; ``recsys steps`` the steps of
the nightly run.

* parser.py: the commands and their options, one function per group of commands;
* commands.py: what each command does (data in, serving answers, privacy, A/B, runs);
* tools.py: the Airflow and MLflow commands and the environment Airflow runs with.

The modules behind a command are imported when it runs, so ``recsys --help`` starts quickly.
"""
from __future__ import annotations

import logging
import os
import sys

from pipelines.cli.parser import build_parser
from pipelines.cli.tools import airflow_env
from pipelines.config import load_config

__all__ = ["airflow_env", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(home=args.home or os.environ.get("RECSYS_HOME") or "var")
    try:
        args.func(args, cfg)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"recsys: error: {exc}", file=sys.stderr)
        return 2
    return 0
